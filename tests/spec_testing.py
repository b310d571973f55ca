"""Helpers shared by the spec tests (tests/test_specs.py, tests/test_specs_qat_discrete.py)."""

from __future__ import annotations

import json

from ste_course import checks
from ste_course.checks import GradingSession, check, compare, draw_cases, encode_case, get_spec, student_case


def grade_as_sandbox(name, obj, seed=20260607):
    """Run ``check`` as the sandbox does (cases in and evidence out as JSON), judge outside;
    returns the messages (empty when every hidden case passes)."""
    spec = get_spec(name)
    cases = draw_cases(spec, True, seed)
    calls = {"0": [{"spec": name, "cases": [encode_case(student_case(spec, c)) for c in cases]}]}
    session = GradingSession(calls=json.loads(json.dumps(calls)), cell=0)
    checks._install_session(session)
    try:
        check(obj, name, hidden=True)
    finally:
        checks._install_session(None)
    recorded = json.loads(json.dumps(session.evidence, allow_nan=False))["0"][0]
    assert recorded["spec"] == name and len(recorded["results"]) == len(cases)
    return [m for case, evidence in zip(cases, recorded["results"])
            for m in compare(spec, case, spec.reference(case), evidence)]


def assert_fails_with(name, wrong, phrase):
    """``check(wrong, name, hidden=True)`` fails in the student's kernel, its message holding ``phrase``."""
    import pytest

    with pytest.raises(AssertionError) as err:
        check(wrong, name, hidden=True)
    text = " ".join(str(err.value).split())  # messages are wrapped for the Validate dialog
    assert phrase in text, str(err.value)
