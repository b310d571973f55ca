"""What the classroom adds: JupyterHub with a user per student (:mod:`~ste_course.classroom.hub`)
and nbgrader's exchange with private submissions (:mod:`~ste_course.classroom.exchange`)."""
