"""The name test cells import: ``from ste_course.checks import check``.

A test cell calls :func:`check` with the student's object and the name of a *spec*::

    check(my_ste_sign, "ste_sign/gradient")               # visible: fixed cases
    ### BEGIN HIDDEN TESTS
    check(my_ste_sign, "ste_sign/gradient", hidden=True)  # hidden: unseen cases
    ### END HIDDEN TESTS

The code lives on the side of the sandbox that runs it:

* :mod:`ste_course.inside.kernel`: ``check`` itself, running the student's code and collecting
  evidence (and, in the student's own kernel, asserting with a message);
  :mod:`ste_course.inside.forbid`: the "own implementation" rule;
* :mod:`ste_course.specs.base` (shared data and maths): specs, drawing cases, comparing with the
  references;
* :mod:`ste_course.grading.judge` (parent only): the per-student cases and the verdicts.

This module only re-exports, so it is safe to import inside the sandbox.
"""

from ste_course.inside.forbid import reference_codes
from ste_course.inside.kernel import CheckFailed, GradingSession, _install_session, check, collect
from ste_course.specs.base import (SPECS, Spec, compare, decode_case, draw_cases, encode_case, get_spec,
                                   register, stable_seed, student_case, tolerance)

__all__ = ["check", "CheckFailed", "Spec", "SPECS", "register", "get_spec", "compare", "collect",
           "GradingSession", "stable_seed", "draw_cases", "encode_case", "decode_case", "student_case",
           "tolerance", "reference_codes", "_install_session"]
