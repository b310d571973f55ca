"""The one record: the gradebook (:mod:`~ste_course.record.gradebook`), written by the
:mod:`~ste_course.record.recorder` under one writer lock (:mod:`~ste_course.record.writelock`);
feedback pages (:mod:`~ste_course.record.feedback`) and exports (:mod:`~ste_course.record.export`)
are views of it."""
