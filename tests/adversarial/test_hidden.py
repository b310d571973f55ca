"""Hidden means hidden (issue 21, attack 5), in one sandboxed grading run.

The attack: the answer cell walks ``gc.get_objects()``, finds the harness's list of cells and
prints every hidden block it can see, reversed (the scrubber removed exact lines only). Before,
all of 03_ste's hidden blocks and the hidden asserts of an nbgrader-style assignment were
readable on the page.

* A check cell's hidden block reaches the sandbox as its ``check(...)`` calls only
  (:func:`ste_course.grading.judge.sandbox_source`): 03_ste's source here carries a secret
  comment and a secret assignment in each hidden block, which must not reach the page in any
  form, while the hidden checks still grade (the honest answers keep 10/10).
* An assert cell's hidden block must run in the sandbox, so the student's code can read it from
  the first cell on: such a notebook is quiet (:func:`ste_course.grading.judge.quiet`), no
  output, error text or stderr of the run reaches the page, only pass or fail and the
  instructor's own messages.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from ste_course.authoring.source import load_assignments, strip_hidden
from ste_course.grading.run import grade
from ste_course.sandbox import Limits

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
if "adversarial_cases" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("adversarial_cases", HERE / "cases.py")
    sys.modules["adversarial_cases"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["adversarial_cases"])
cases = sys.modules["adversarial_cases"]
SECRET = "SECRET-inputs-7f3a9"
READ_BACK = r'''
import gc as _gc
def _strings(o, depth=0):
    if isinstance(o, str):
        yield o
    elif depth < 2 and isinstance(o, (list, tuple, dict)):
        for v in (o.values() if isinstance(o, dict) else o):
            yield from _strings(v, depth + 1)
_seen = set()
for _o in _gc.get_objects():  # the harness's list of cells (its dicts of strings are not tracked)
    if not isinstance(_o, (list, dict)):
        continue
    try:
        for _t in _strings(_o):
            if ("BEGIN HIDDEN" in _t or "hidden=True" in _t or "SECRET" in _t) and _t not in _seen:
                _seen.add(_t)
                print(_t[::-1][:600])
    except Exception:
        pass
'''


def _with_secrets(solutions: Path) -> None:
    """03_ste's hidden blocks, each with a secret comment and a secret statement besides its call."""
    path = solutions / "03_ste" / "03_ste.ipynb"
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if "### BEGIN HIDDEN TESTS" in text:
            cell["source"] = text.replace("### BEGIN HIDDEN TESTS\n", f"### BEGIN HIDDEN TESTS\n# {SECRET}\n"
                                          f"_expected_sign = '{SECRET}-value'\n")
    path.write_text(json.dumps(nb))


def _attacked(nb: dict, answer_id: str) -> dict:
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("grade_id") == answer_id:
            cell["source"] = "".join(cell["source"]) + "\n" + READ_BACK
        elif meta.get("grade") and not meta.get("solution"):
            cell["source"] = strip_hidden("".join(cell["source"]))  # the released test cells
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    cases.ready_to_grade()
    root = tmp_path_factory.mktemp("hidden")
    solutions, subs, out = root / "solutions", root / "submissions", root / "out"
    shutil.copytree(ROOT / "solutions" / "03_ste", solutions / "03_ste")
    shutil.copytree(ROOT / "tests" / "fixtures" / "byo" / "ps1", solutions / "ps1")
    _with_secrets(solutions)
    sources = load_assignments(solutions)
    complete = json.loads((ROOT / "examples" / "submissions" / "complete" / "03_ste" / "03_ste.ipynb").read_text())
    byo = json.loads((solutions / "ps1" / "ps1.ipynb").read_text())
    for assignment, nb, answer in (("03_ste", complete, "ste_sign_stop_gradient"), ("ps1", byo, "squares")):
        folder = subs / "reader" / assignment
        folder.mkdir(parents=True)
        (folder / f"{assignment}.ipynb").write_text(json.dumps(_attacked(nb, answer)))
    results = grade(subs, out, sources, "hidden-secret", jobs_n=1, sandbox=True,
                    limits=Limits(cell_seconds=30.0, notebook_seconds=90.0), progress=False)
    hidden = {a: [line.strip() for c in nbs[0].cells for line in c.source.split("\n")[1:]
                  if line.strip() and line.strip() not in strip_hidden(c.source)]
              for a, nbs in sources.items()}
    return {r.assignment: r for r in results}, hidden, out


def _shown(result, out: Path) -> str:
    """Everything of the run a student reads: the page and the result's texts."""
    page = (out / "feedback" / result.student / result.assignment / f"{result.notebook}.html").read_text()
    texts = [result.reason] + [str(c.get("text")) for c in result.feedback_cells] + \
            [m for c in result.cells for m in c["messages"]]
    return page + "\n".join(texts)


@pytest.mark.parametrize("assignment, score", [("03_ste", 10.0), ("ps1", 4.0)])
def test_no_hidden_block_reaches_the_page_in_any_form(graded, assignment, score):
    results, hidden, out = graded
    result = results[assignment]
    shown = _shown(result, out)
    assert result.status == "ok" and result.score == score, (result.status, result.reason, result.cells)
    # the calls are what the sandbox runs (and say nothing the visible call does not): the rest
    lines = [line for line in hidden[assignment] if "HIDDEN TESTS" not in line and len(line) > 12
             and not line.startswith("check(")]
    assert lines, "the source has hidden blocks"
    leaked = [line for line in lines if line[::-1] in shown or line in shown]
    assert not leaked, leaked
    assert SECRET not in shown and SECRET[::-1] not in shown
