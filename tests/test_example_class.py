"""The example class (examples/submissions/) and reference use, graded in one sandboxed run.

Expected: a complete student scores full marks, a blank one zero, a half-done one in between;
plain tf.round passes the forward checks and fails the gradient checks; a broken notebook costs
that notebook only; a part implemented by calling the reference ste_utils scores 0 however the
student reaches it, while the rest of the notebook keeps its marks; feedback shows no hidden test.
"""

from __future__ import annotations

import csv
import filecmp
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from ste_course.grade import grade
from ste_course.sandbox import Limits, bwrap_path
from ste_course.source import hidden_lines, load_assignments

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import make_submissions  # noqa: E402

# Ways of reaching ste_utils.ste_sign inside ste_sign_stop_gradient (assignment 03 forbids it).
REFERENCE_USES = {
    "ref_import": "from ste_utils import ste_sign\n{body}return ste_sign(x, clip_value)",
    "ref_importlib": "import importlib\n{body}return importlib.import_module('ste_utils').ste_sign(x, clip_value)",
    "ref_getattr": "import ste_utils\n{body}return getattr(ste_utils, 'ste_' + 'sign')(x, clip_value)",
    "ref_sys_modules": "import sys\n{body}return sys.modules['ste_utils.quantizers'].ste_sign(x, clip_value)",
    "ref_reexport": "from ste_utils.layers import ste_sign as my_sign\n{body}return my_sign(x, clip_value)",
    "ref_layer": "import ste_utils\n{body}return ste_utils.SteSign(clip_value=clip_value)(x)",
    "ref_runtime_module": ("import pathlib, sys\npathlib.Path('helper_mod.py').write_text("
                           "'from ste_utils.quantizers import ste_sign as f\\n')\nsys.path.insert(0, '.')\n"
                           "import helper_mod\n{body}return helper_mod.f(x, clip_value)"),
}
SIGNATURE = "def ste_sign_stop_gradient(x, clip_value=1.0):\n"


def _reference_user(complete_nb: dict, template: str) -> dict:
    nb = json.loads(json.dumps(complete_nb))
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "ste_sign_stop_gradient":
            prelude, _, ret = template.partition("{body}")
            cell["source"] = prelude + "\n" + SIGNATURE + "    " + ret + "\n"
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    assert bwrap_path(), "bubblewrap is required (make test installs it)"
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    tmp = tmp_path_factory.mktemp("example-class")
    submissions = tmp / "submissions"
    shutil.copytree(ROOT / "examples" / "submissions", submissions)
    complete = json.loads((submissions / "complete" / "03_ste" / "03_ste.ipynb").read_text())
    for student, template in REFERENCE_USES.items():
        target = submissions / student / "03_ste" / "03_ste.ipynb"
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(_reference_user(complete, template)))
    secret = tmp / "secret"
    secret.write_text("example-class-secret\n")
    out = tmp / "graded"
    grade(submissions, out, load_assignments(ROOT / "solutions"), secret.read_text().strip(),
          jobs_n=2, sandbox=True, limits=Limits(cell_seconds=60, notebook_seconds=240), progress=False)
    with (out / "grades.csv").open() as f:
        rows = {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}
    return out, rows


def _results(out, student, assignment):
    return json.loads((out / "results" / student / assignment / f"{assignment}.json").read_text())


ASSIGNMENTS = [p.name for p in sorted((ROOT / "solutions").iterdir()) if p.is_dir()]


def test_examples_are_generated_from_the_current_solutions(tmp_path):
    make_submissions.main(tmp_path / "submissions")
    diff = filecmp.dircmp(tmp_path / "submissions", ROOT / "examples" / "submissions")
    stale = []

    def walk(d, prefix=""):
        stale.extend(prefix + n for n in d.left_only + d.right_only + d.diff_files)
        for name, sub in d.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(diff)
    assert not stale, f"examples/submissions is stale; run python examples/make_submissions.py: {stale}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_complete_scores_full_blank_zero_half_between(graded, assignment):
    _, rows = graded
    full = float(rows[("complete", assignment)]["max_score"])
    assert float(rows[("complete", assignment)]["score"]) == full, rows[("complete", assignment)]
    assert float(rows[("blank", assignment)]["score"]) == 0
    assert 0 < float(rows[("half_done", assignment)]["score"]) < full
    assert all(rows[(s, assignment)]["status"] == "ok" for s in ("complete", "blank", "half_done"))


def test_plain_round_passes_forward_checks_and_fails_gradient_checks(graded):
    out, rows = graded
    cells = {c["grade_id"]: c for c in _results(out, "plain_round", "04_stop_gradient")["cells"]}
    assert cells["test_quantize_value"]["points"] == cells["test_quantize_value"]["max_points"]
    assert cells["test_quantize_gradient"]["points"] == 0
    assert any("gradient" in m for m in cells["test_quantize_gradient"]["messages"])
    for assignment in ASSIGNMENTS:
        if assignment != "04_stop_gradient":
            assert rows[("plain_round", assignment)]["score"] == rows[("plain_round", assignment)]["max_score"]


def test_broken_notebook_costs_only_itself(graded):
    _, rows = graded
    assert rows[("broken", "03_ste")]["status"] == "invalid"
    assert float(rows[("broken", "03_ste")]["score"]) == 0
    assert "not valid notebook JSON" in rows[("broken", "03_ste")]["reason"]
    for assignment in ASSIGNMENTS:
        if assignment != "03_ste":
            assert rows[("broken", assignment)]["score"] == rows[("broken", assignment)]["max_score"]


@pytest.mark.parametrize("student", sorted(REFERENCE_USES))
def test_reference_use_scores_zero_for_that_part_only(graded, student):
    out, rows = graded
    cells = {c["grade_id"]: c for c in _results(out, student, "03_ste")["cells"]}
    for part in ("test_stop_gradient_value", "test_stop_gradient_gradient"):
        assert cells[part]["points"] == 0, (student, cells[part])
        assert any("must be your own implementation" in m and "ste_utils." in m
                   for m in cells[part]["messages"]), cells[part]["messages"]
    for part in ("test_custom_gradient_value", "test_custom_gradient_gradient"):
        assert cells[part]["points"] == cells[part]["max_points"], (student, cells[part])


def test_feedback_never_shows_hidden_tests(graded):
    out, _ = graded
    sources = load_assignments(ROOT / "solutions")
    hidden = {line for nbs in sources.values() for nb in nbs for c in nb.cells for line in hidden_lines(c.source)}
    assert hidden
    pages = list((out / "feedback").glob("*/*/*.html"))
    assert len(pages) >= 30
    for page in pages:
        text = page.read_text()
        leaked = [line for line in hidden if line in text or line.replace('"', "&quot;") in text]
        assert not leaked, f"{page} shows hidden test lines: {leaked[:2]}"
