"""docs/authoring.md's worked example, run: a scratch copy of the course gains the question
(cells and check read from the guide), releases, checks and grades it."""

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ste_course.cli import main
from ste_course.specs import base
from ste_course.specs.declarative import ChecksError, declare

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "authoring.md"
EXAMPLE = re.compile(r"<!-- example: (.+?) -->\n```\w*\n(.*?)\n```", re.S)


@pytest.fixture(autouse=True)
def registry():
    """Each test declares the course's checks afresh; the registry is put back after it."""
    from ste_course.specs import declarative

    saved = dict(base.SPECS), dict(declarative.DECLARED), dict(declarative._LOADED)
    yield
    for target, copy in zip((base.SPECS, declarative.DECLARED, declarative._LOADED), saved):
        target.clear()
        target.update(copy)


def _examples() -> list:
    return [(tag.split(), body) for tag, body in EXAMPLE.findall(GUIDE.read_text(encoding="utf-8"))]


def _cell(cell_type, source, grade_id, *, grade=False, solution=False, locked=False, points=None):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    cell = {"cell_type": cell_type, "id": grade_id, "metadata": {"nbgrader": meta}, "source": source}
    if cell_type == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _course_with_the_example(tmp_path) -> Path:
    """solutions/03_ste and the guide's cells and checks, in a scratch course."""
    course = tmp_path / "course"
    shutil.copytree(ROOT / "solutions" / "03_ste", course / "solutions" / "03_ste")
    path = course / "solutions" / "03_ste" / "03_ste.ipynb"
    nb = json.loads(path.read_text())
    cells = []
    for tag, body in _examples():
        if tag[0] == "markdown":
            cells.append(_cell("markdown", body, tag[1], locked=True))
        elif tag[0] == "answer":
            cells.append(_cell("code", body, tag[1], solution=True))
        elif tag[0] == "test":
            cells.append(_cell("code", body, tag[1], grade=True, locked=True, points=int(tag[2])))
        else:
            (course / tag[0]).parent.mkdir(parents=True, exist_ok=True)
            (course / tag[0]).write_text(body + "\n")
    assert [c["metadata"]["nbgrader"]["grade_id"] for c in cells] == \
        ["part5", "my_heaviside", "test_heaviside_value", "test_heaviside_gradient"]
    nb["cells"][-1:-1] = cells  # before the summary
    path.write_text(json.dumps(nb, indent=1))
    return course


def test_the_guides_example_releases_checks_and_grades(tmp_path, capsys):
    course = _course_with_the_example(tmp_path)
    where = ["--solutions", str(course / "solutions"), "--exercises", str(course / "exercises")]
    assert main(["release", *where]) == 0
    released = json.loads((course / "exercises" / "03_ste" / "03_ste.ipynb").read_text())
    text = json.dumps(released)
    assert "my_heaviside" in text and "hidden=True" not in text and "tf.custom_gradient\\n    def step" not in text
    assert main(["check", *where]) == 0, capsys.readouterr().err

    subs = tmp_path / "submitted"
    for student, source in (("good", course / "solutions"), ("blank", course / "exercises")):
        (subs / student / "03_ste").mkdir(parents=True)
        shutil.copy(source / "03_ste" / "03_ste.ipynb", subs / student / "03_ste" / "03_ste.ipynb")
    (tmp_path / "secret").write_text("s3cret\n")
    assert main(["grade", str(subs), *where, "--out", str(tmp_path / "graded"), "--jobs", "1",
                 "--secret-file", str(tmp_path / "secret")]) == 0
    with (tmp_path / "graded" / "grades.csv").open(newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert (rows["good"]["status"], float(rows["good"]["score"]), float(rows["good"]["max_score"])) == ("ok", 14.0, 14.0)
    assert float(rows["blank"]["score"]) == 0.0
    results = json.loads((tmp_path / "graded" / "results" / "blank" / "03_ste" / "03_ste.json").read_text())
    messages = {c["grade_id"]: c["messages"] for c in results["cells"]}
    assert any("NotImplementedError" in m for m in messages["test_heaviside_gradient"])


def test_a_wrong_gradient_is_explained_at_the_boundary(tmp_path):
    course = _course_with_the_example(tmp_path)
    from ste_course.specs.declarative import load_folder

    load_folder(course / "checks")
    spec = base.get_spec("heaviside/gradient")
    case = spec.cases(np.random.default_rng(0), False)[0]

    def open_window(x, clip_value=1.0):  # the window |x| < c: the boundary itself is wrong
        import tensorflow as tf

        c = tf.constant(clip_value, x.dtype)
        inside = tf.cast(tf.abs(x) < c, x.dtype)
        return inside * x + tf.stop_gradient(tf.cast(x > 0, x.dtype) - inside * x)

    from ste_course.inside.kernel import collect

    messages = base.compare(spec, case, spec.reference(case), collect(spec, open_window, case))
    assert messages and messages[0].endswith("at x = -1 (float32) (clip_value=1.0) should be 1; yours is 0. (2 of 5 elements differ)")


def test_scalar_checks_judge_without_revealing_the_answer():
    (spec, runner), = declare("levels_of_3_bits", {"kind": "scalar", "answer": 8}, "t.toml [x]", Path("."))
    from ste_course.inside.kernel import collect

    case = spec.cases(np.random.default_rng(0), True)[0]
    assert base.compare(spec, case, spec.reference(case), collect(spec, 8.0, case)) == []
    wrong = base.compare(spec, case, spec.reference(case), collect(spec, np.float32(7), case))
    assert wrong and "7" in wrong[0] and "8" not in wrong[0]
    assert runner == "scalar"


@pytest.mark.parametrize("table, message", [
    ({"kind": "functoin"}, "kind 'functoin' is not one of function, scalar (did you mean 'function'?)"),
    ({"kind": "scalar", "answr": 1}, "unknown key 'answr' (did you mean 'answer'?)"),
    ({"kind": "function", "reference": "ste_utils.no_such", "boundary": [0.0]}, "cannot be imported"),
    ({"kind": "function", "reference": "ste_utils.ste_sign", "boundary": ["c"], "params": [{"clip_value": 1}]},
     "names 'c', which params"),
    ({"kind": "scalar", "answer": 1, "reference": "x.y"}, "exactly one of answer"),
    ({"kind": "function", "reference": "ste_utils.ste_sign", "boundary": [0.0]}, "ste_sign/value' already exists"),
])
def test_a_bad_declaration_is_one_line_naming_it(table, message):
    name = "ste_sign" if "already" in message else "mine"
    with pytest.raises(ChecksError) as err:
        declare(name, table, "checks/x.toml [mine]", Path("."))
    assert message in str(err.value) and str(err.value).startswith("checks/x.toml [mine]: ")
    assert "\n" not in str(err.value)


def test_a_written_answer_waits_for_a_hand_grade_that_reaches_grades_csv(tmp_path):
    from nbgrader.api import Gradebook

    from ste_course.authoring.source import load_assignments
    from ste_course.grading.run import grade

    nb = json.loads((ROOT / "tests" / "adversarial" / "source" / "adv" / "adv.ipynb").read_text())
    answer = ("### BEGIN SOLUTION\n**Model answer.** The window.\n\n**Rubric (2 points).** 2: says why.\n"
              "### END SOLUTION")
    nb["cells"][-1:-1] = [_cell("markdown", "Why is the gradient clipped? (2 points)", "why_prompt", locked=True),
                          _cell("markdown", answer, "why", grade=True, solution=True, points=2)]
    (tmp_path / "solutions" / "adv").mkdir(parents=True)
    (tmp_path / "solutions" / "adv" / "adv.ipynb").write_text(json.dumps(nb))
    sources = load_assignments(tmp_path / "solutions")
    assert sources["adv"][0].problems == [] and sources["adv"][0].manual_score == 2
    nb["cells"][-2]["source"] = "Outside the window the sign is flat, so no gradient should pass."
    (tmp_path / "submitted" / "s1" / "adv").mkdir(parents=True)
    (tmp_path / "submitted" / "s1" / "adv" / "adv.ipynb").write_text(json.dumps(nb))
    out = tmp_path / "graded"

    def run():
        grade(tmp_path / "submitted", out, sources, "secret", jobs_n=1, sandbox=False, progress=False)
        with (out / "grades.csv").open(newline="") as f:
            return next(csv.DictReader(f))

    row = run()
    assert (float(row["score"]), float(row["max_score"]), row["status"]) == (5.0, 7.0, "ok")
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        written = gb.find_grade("why", "adv", "adv", "s1")
        assert written.needs_manual_grade and written.auto_score is None
        assert not gb.find_grade("test_value", "adv", "adv", "s1").needs_manual_grade
        written.manual_score = 1.5  # what formgrader does
        written.needs_manual_grade = False
        gb.find_comment("why", "adv", "adv", "s1").manual_comment = "Right idea; say which window."
        gb.db.commit()
    row = run()  # nothing to re-grade; grades.csv is written again from the gradebook
    assert float(row["score"]) == 6.5 and row["manual"] == "True", row
    autograded = json.loads((out / "autograded" / "s1" / "adv" / "adv.ipynb").read_text())  # formgrader's view
    shown = {c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"]) for c in autograded["cells"]
             if c["metadata"].get("nbgrader", {}).get("grade_id")}
    assert "Outside the window the sign is flat" in shown["why"]  # inert HTML, framed (record.sanitize)
    assert shown["why"].startswith("<div ") and "\n" not in shown["why"]


BYO = ROOT / "tests" / "fixtures" / "byo"  # nbgrader's documentation style: assert cells, no check
BYO_ANSWERS = {
    "right": None,  # the solution
    "no_value_error": {"squares": "def squares(n):\n    return [i ** 2 for i in range(1, n + 1)]"},
    "visible_only": {"squares": "def squares(n):\n    return {1: [1], 2: [1, 4]}[n]"},
}


def test_an_nbgrader_assignment_with_assert_cells_is_graded_in_the_sandbox(tmp_path):
    from ste_course.authoring.source import load_assignments, strip_hidden
    from ste_course.grading.run import grade

    source = json.loads((BYO / "ps1" / "ps1.ipynb").read_text())
    for student, answers in BYO_ANSWERS.items():
        nb = json.loads(json.dumps(source))
        for cell in nb["cells"]:
            if cell["metadata"]["nbgrader"]["grade_id"] in (answers or {}):
                cell["source"] = answers[cell["metadata"]["nbgrader"]["grade_id"]]
        (tmp_path / "submitted" / student / "ps1").mkdir(parents=True)
        (tmp_path / "submitted" / student / "ps1" / "ps1.ipynb").write_text(json.dumps(nb))
    sources = load_assignments(BYO)
    assert sources["ps1"][0].problems == []
    out = tmp_path / "graded"
    grade(tmp_path / "submitted", out, sources, "secret", jobs_n=1, sandbox=True, progress=False)
    with (out / "grades.csv").open(newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert {s: (float(r["score"]), float(r["max_score"]), r["status"]) for s, r in rows.items()} == {
        "right": (4.0, 5.0, "ok"), "no_value_error": (3.0, 5.0, "ok"), "visible_only": (0.0, 5.0, "ok")}
    cells = {c["grade_id"]: c for c in json.loads((out / "results" / "visible_only" / "ps1" / "ps1.json")
                                                   .read_text())["cells"]}
    # a hidden assert runs in the sandbox, so the page says only which built-in error (issue 21):
    # "KeyError: 10" would name the hidden input
    assert cells["correct_squares"]["messages"] == ["This test failed (KeyError)."]
    assert cells["why"]["manual"] and cells["why"]["points"] == 0
    hidden = [line for c in source["cells"] for line in "".join(c["source"]).splitlines()
              if line not in strip_hidden("".join(c["source"])).splitlines() and line.startswith("assert")]
    feedback = (out / "feedback" / "visible_only" / "ps1" / "ps1.html").read_text()
    assert hidden and not any(line in feedback for line in hidden)
