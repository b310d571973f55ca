"""The instructor's course: read and validate ``solutions/`` (:mod:`~ste_course.authoring.source`),
release it as ``exercises/`` (:mod:`~ste_course.authoring.release`) and check that everything
fits together (:mod:`~ste_course.authoring.selfcheck`, ``ste-course check``)."""
