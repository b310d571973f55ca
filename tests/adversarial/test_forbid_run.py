"""The "own implementation" rule over a whole grading run (``cases.FORBID_CASES``).

Assignment 03 forbids ``ste_utils.ste_sign`` (and the functions built on it) in every part.
Graded in one sandboxed run beside the honest complete and blank students: a made-up run written
in the harness's order before ``os._exit``, and lookup tables filled by calling the reference on
the session's hidden inputs outside any part (in the answer cell, or from a thread), score 0,
with a reason naming the function and the cell that called it.

In the same run, two answers through siblings that the derivation (``ste_course.authoring.derive``)
once missed (red team RT1, both scored in full before): 07's ``lsq_quantize`` as
``lsq_plus_quantize(x, step, 0.0, bits, ...)`` (LSQ+ with offset 0 is LSQ; the probe never filled
a sibling's extra parameter) and 04's ``straight_through`` as the private
``ste_utils.discrete._pass_through(x, result)`` (only ``ste_utils.__all__`` was probed).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from ste_course.authoring.source import load_assignments
from ste_course.grading.run import grade
from ste_course.sandbox import Limits

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if "adversarial_cases" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("adversarial_cases", HERE / "cases.py")
    sys.modules["adversarial_cases"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["adversarial_cases"])
cases = sys.modules["adversarial_cases"]

NAME = cases.FORBID_ASSIGNMENT
EXAMPLES = ROOT / "examples" / "submissions"
# student: (assignment, answer cell, its whole source, the parts it must not score)
SIBLINGS = {
    "sibling-lsq-plus": ("07_lsq", "lsq_quantize",
                         "def lsq_quantize(x, step, bits, signed=True, grad_scale=1.0):\n    import ste_utils\n"
                         "    return ste_utils.lsq_plus_quantize(x, step, 0.0, bits, signed, grad_scale)\n",
                         {"test_lsq_value", "test_lsq_x_gradient", "test_lsq_step_gradient"}),
    "sibling-private-helper": ("04_stop_gradient", "straight_through",
                               "def straight_through(x, result):\n    import ste_utils.discrete\n"
                               "    return ste_utils.discrete._pass_through(x, result)\n", {"test_straight_through"}),
}


def _with_attack(answer_id: str, attack: str) -> dict:
    nb = json.loads((EXAMPLES / "blank" / NAME / f"{NAME}.ipynb").read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == answer_id)
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    cell["source"] = source + "\n" + attack
    return nb


def _answer_index(answer_id: str) -> int:
    nb = json.loads((EXAMPLES / "blank" / NAME / f"{NAME}.ipynb").read_text(encoding="utf-8"))
    return next(i for i, c in enumerate(nb["cells"]) if c["metadata"].get("nbgrader", {}).get("grade_id") == answer_id)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    cases.ready_to_grade()
    root = tmp_path_factory.mktemp("forbid")
    source = root / "source"
    shutil.copytree(ROOT / "solutions" / NAME, source / NAME)
    subs, out = root / "submissions", root / "out"
    for honest in ("complete", "blank"):
        shutil.copytree(EXAMPLES / honest / NAME, subs / honest / NAME)
    for student, (answer_id, attack, _) in cases.FORBID_CASES.items():
        folder = subs / student / NAME
        folder.mkdir(parents=True)
        (folder / f"{NAME}.ipynb").write_text(json.dumps(_with_attack(answer_id, attack)), encoding="utf-8")
    for student, (assignment, answer_id, answer, _) in SIBLINGS.items():
        shutil.copytree(ROOT / "solutions" / assignment, source / assignment, dirs_exist_ok=True)
        nb = json.loads((EXAMPLES / "blank" / assignment / f"{assignment}.ipynb").read_text(encoding="utf-8"))
        cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == answer_id)
        cell["source"] = answer
        (subs / student / assignment).mkdir(parents=True)
        (subs / student / assignment / f"{assignment}.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    results = grade(subs, out, load_assignments(source), "forbid-run-secret", jobs_n=1, sandbox=True,
                    limits=Limits(cell_seconds=20.0, notebook_seconds=60.0), progress=False)
    return {r.student: r for r in results}


def test_honest_students_are_exact(graded):
    assert graded["complete"].score == graded["complete"].max_score == 10.0, graded["complete"].reason
    assert graded["complete"].status == "ok"
    assert graded["blank"].score == 0.0 and graded["blank"].status == "ok"


@pytest.mark.parametrize("student", sorted(cases.FORBID_CASES))
def test_forging_or_looking_up_with_the_reference_scores_nothing(graded, student):
    result = graded[student]
    report = [(c["grade_id"], c["points"], c["messages"][:1]) for c in result.cells]
    assert result.score == cases.FORBID_CASES[student][2], (result.status, result.reason, report)


@pytest.mark.parametrize("student", ["lookup-table", "lookup-table-thread"])
def test_the_reason_names_the_function_and_the_cell(graded, student):
    index = _answer_index(cases.FORBID_CASES[student][0])
    expected = f"your notebook called ste_utils.ste_sign in cell {index}"
    for cell in graded[student].cells:
        assert any(expected in m for m in cell["messages"]), (cell["grade_id"], cell["messages"])


@pytest.mark.parametrize("student", sorted(SIBLINGS))
def test_a_sibling_that_gives_the_answer_scores_nothing(graded, student):
    result = graded[student]
    points = {c["grade_id"]: c["points"] for c in result.cells}
    assert result.status == "ok", (result.status, result.reason)
    assert set(SIBLINGS[student][3]) <= set(points), points
    assert not {g for g in SIBLINGS[student][3] if points[g]}, points
