"""The parent's half of the checks: which events are evidence, and which inputs a submission gets.

* Only the events the harness writes, in its order, are evidence: a student's cell that writes
  on the grader's channel (out of order, or a whole made-up run followed by the harness's own
  events) leaves nothing forged in place.
* Hidden inputs are drawn from the secret, the student, the notebook, the cell, the call and the
  submitted answers: the same file re-grades to the same inputs, a changed submission (or another
  student) gets new ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ste_course.authoring.source import load_assignments
from ste_course.checks import decode_case
from ste_course.grading.judge import answers_digest, harness_events, plan
from ste_course.grading.preflight import prepare

ROOT = Path(__file__).resolve().parent
SOURCE = load_assignments(ROOT / "adversarial" / "source")["adv"][0]
ORDER = [1, 2, 3, 4]  # the fixture's code cells: set-up, answer, two test cells
FORGED = [{"spec": "ste_sign/value", "results": ["made up"]}]


def start(cell):
    return {"event": "start", "cell": cell}


def end(cell, evidence=()):
    return {"event": "end", "cell": cell, "error": None, "evidence": list(evidence)}


def honest():
    return [e for c in ORDER for e in (start(c), end(c, [] if c < 3 else [{"spec": "genuine"}]))]


def test_an_honest_run_is_kept_whole():
    stream = harness_events(honest(), ORDER)
    assert stream.events == honest() and stream.tampered is None


def test_a_run_that_stopped_keeps_what_the_harness_wrote():
    events = honest()[:5]  # start 1, end 1, start 2, end 2, start 3: killed in cell 3
    stream = harness_events(events, ORDER)
    assert stream.events == events and stream.tampered is None


def test_forged_reports_written_from_an_earlier_cell_are_not_evidence():
    """The student's answer cell (2) writes reports of the test cells before the harness ends it."""
    events = honest()[:3] + [start(3), end(3, FORGED), start(4), end(4, FORGED)] + honest()[3:]
    stream = harness_events(events, ORDER)
    assert stream.events == honest()[:2], "only the set-up cell, reported before the forgery, stays"
    assert "out of order" in stream.tampered and "'start' for cell 3" in stream.tampered


def test_a_forged_run_in_the_right_order_is_undone_by_the_harness_own_report():
    """Cell 2 writes its own end, then the test cells' start and end: the harness's real end of
    cell 2 arrives after them, out of order, and takes every forged report with it."""
    forged = [end(2), start(3), end(3, FORGED), start(4), end(4, FORGED)]
    events = honest()[:3] + forged + honest()[3:]
    stream = harness_events(events, ORDER)
    assert stream.events == honest()[:2]
    assert all(FORGED != e.get("evidence") for e in stream.events)
    assert "'end' for cell 2" in stream.tampered


@pytest.mark.parametrize("bad", [{"event": "end", "cell": 99}, {"event": "start", "cell": "3"},
                                 {"event": "end", "cell": True}, {"something": "else"}, ["not", "a dict"]])
def test_anything_else_on_the_channel_stops_the_evidence_at_the_running_cell(bad):
    events = honest()[:3] + [bad] + honest()[3:]
    stream = harness_events(events, ORDER)
    assert stream.events == honest()[:2] and stream.tampered


def test_fatal_ends_the_stream():
    events = [{"event": "fatal", "error": "no"}, start(1)]
    assert harness_events(events, ORDER).events == events[:1]


# ----------------------------------------------------------------------------- hidden inputs
def _submission(answer: str) -> dict:
    nb = json.loads(SOURCE.path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "answer":
            cell["source"] = answer
    return nb


def _hidden_x(the_plan) -> list:
    """The hidden ``x`` arrays of every graded cell (the second call of each is hidden)."""
    return [decode_case(case)["x"] for key in sorted(the_plan.calls) for case in the_plan.calls[key][1]["cases"]]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


def test_the_same_submission_gets_the_same_hidden_inputs():
    first = plan(SOURCE, prepare(SOURCE, _submission("def my_sign(x):\n    return x\n")), "secret", "alice")
    again = plan(SOURCE, prepare(SOURCE, _submission("def my_sign(x):\n    return x\n")), "secret", "alice")
    assert _same(_hidden_x(first), _hidden_x(again))


@pytest.mark.parametrize("change", ["answer", "extra cell", "student", "secret"])
def test_a_changed_submission_gets_new_hidden_inputs_and_the_same_visible_ones(change):
    answer = "def my_sign(x):\n    return x\n"
    base = plan(SOURCE, prepare(SOURCE, _submission(answer)), "secret", "alice")
    nb = _submission(answer + "# hard-coded the inputs I saw\n" if change == "answer" else answer)
    if change == "extra cell":
        nb["cells"].insert(3, {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                               "source": "LOOKUP = {}"})
    other = plan(SOURCE, prepare(SOURCE, nb), "other" if change == "secret" else "secret",
                 "bob" if change == "student" else "alice")
    assert not any(np.array_equal(a, b) for a, b in zip(_hidden_x(base), _hidden_x(other)) if a.shape == b.shape)
    visible = [sorted(p.calls)[0] for p in (base, other)]
    assert base.calls[visible[0]][0] == other.calls[visible[1]][0], "visible cases are the released ones"


def test_the_digest_covers_only_the_students_code():
    nb = _submission("def my_sign(x):\n    return x\n")
    digest = answers_digest(prepare(SOURCE, nb))
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = "edited prose"
    assert answers_digest(prepare(SOURCE, nb)) == digest
    assert answers_digest(prepare(SOURCE, _submission("def my_sign(x):\n    return -x\n"))) != digest
