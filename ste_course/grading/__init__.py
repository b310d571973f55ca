"""Where grading happens: a class's jobs (:mod:`~ste_course.grading.jobs`), each notebook's steps
(:mod:`~ste_course.grading.steps`: preflight, conclude, the late rule, error rows), the judges that
plan and judge them (:mod:`~ste_course.grading.judges`, over :mod:`~ste_course.grading.judge`),
the streaming :mod:`~ste_course.grading.pipeline`, the executors that run notebooks in the sandbox
(:mod:`~ste_course.grading.executors`, :mod:`~ste_course.grading.distributed`) and the run that
ties them together (:mod:`~ste_course.grading.run`). :mod:`~ste_course.grading.similarity` compares
submissions with each other."""
