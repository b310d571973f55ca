"""Mistakes in solutions/ are caught at release (and check) with one line each, and cost only that
assignment's rows when grading. The course's conventions are warnings (errors with --strict);
what nbgrader refuses, or what cannot be graded, is always an error."""

import copy
import csv
import json
import shutil
from pathlib import Path

import pytest

from ste_course.authoring.source import load_assignments
from ste_course.cli import main
from ste_course.grading.run import grade

ROOT = Path(__file__).resolve().parent
ADV = ROOT / "adversarial" / "source" / "adv" / "adv.ipynb"  # a valid one-answer, two-test assignment


def _valid() -> dict:
    return json.loads(ADV.read_text())


def _cell(nb, grade_id):
    return next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


def _no_check(nb):
    _cell(nb, "test_value")["source"] = '"""value of my_sign"""\nassert my_sign(1.0) == 1.0\n'


def _misspelt(nb):
    _cell(nb, "test_value")["source"] = ['"""value of my_sign"""\n', 'check(my_sign, "ste_sign/valeu")\n',
                                         "### BEGIN HIDDEN TESTS\n", 'check(my_sign, "ste_sign/valeu", hidden=True)\n',
                                         "### END HIDDEN TESTS"]


def _points(nb):
    _cell(nb, "test_value")["source"][0] = '"""Part 1 (3 points): value of my_sign"""\n'


def _heading(nb):
    nb["cells"].insert(2, {"cell_type": "markdown", "source": "## Part 1 (4 points)", "metadata": {
        "nbgrader": {"grade": False, "grade_id": "part1", "locked": True, "schema_version": 3,
                     "solution": False, "task": False}}})


def _no_hidden(nb):
    cell = _cell(nb, "test_gradient")
    cell["source"] = '"""gradient of my_sign"""\ncheck(my_sign, "ste_sign/gradient")\n'


def _unmatched_answer(nb):
    answer = copy.deepcopy(_cell(nb, "answer"))
    answer["metadata"]["nbgrader"]["grade_id"] = "helper"
    answer["source"] = "def unused_helper(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION"
    nb["cells"].insert(3, answer)


MISTAKES = [
    (_no_check, "[test_value]: this test cell calls no check()"),
    (_misspelt, "[test_value]: unknown check 'ste_sign/valeu' (did you mean 'ste_sign/value'?)"),
    (_points, "[test_value]: points do not add up: the test says (3 points), its metadata gives 2"),
    (_heading, "[part1]: points do not add up: the heading says (4 points), the graded cells below it give 5"),
    (_no_hidden, "[test_gradient]: no hidden block"),
    (_unmatched_answer, "[helper]: no test cell uses this answer (it defines unused_helper)"),
]


def _course(tmp_path, mistake=None) -> Path:
    nb = _valid()
    if mistake:
        mistake(nb)
    folder = tmp_path / "course" / "solutions" / "adv"
    folder.mkdir(parents=True)
    (folder / "adv.ipynb").write_text(json.dumps(nb))
    return tmp_path / "course"


@pytest.mark.parametrize("mistake, line", MISTAKES, ids=[m.__name__.strip("_") for m, _ in MISTAKES])
def test_release_refuses_a_mistake_with_one_line(tmp_path, capsys, mistake, line):
    course = _course(tmp_path, mistake)
    code = main(["release", "--strict", "--solutions", str(course / "solutions"),
                 "--exercises", str(course / "exercises")])
    err = capsys.readouterr().err
    assert code == 1 and not (course / "exercises").exists()
    errors = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: {course / 'solutions' / 'adv' / 'adv.ipynb'} ")
    assert line in errors[0]
    assert ";" in errors[0].split(line, 1)[1] or mistake is _points  # says what to do


@pytest.mark.parametrize("mistake, line", MISTAKES, ids=[m.__name__.strip("_") for m, _ in MISTAKES])
def test_without_strict_only_what_cannot_be_graded_refuses(tmp_path, capsys, mistake, line):
    """As nbgrader generate_assignment: the course's conventions are warnings, the release is
    written; a check that does not exist cannot be graded and stays an error."""
    course = _course(tmp_path, mistake)
    code = main(["release", "--solutions", str(course / "solutions"), "--exercises", str(course / "exercises")])
    err = capsys.readouterr().err
    kind = "error" if mistake is _misspelt else "warning"
    assert [l for l in err.splitlines() if line in l][0].startswith(f"{kind}: "), err
    assert code == (1 if kind == "error" else 0)
    assert (course / "exercises" / "adv" / "adv.ipynb").exists() == (kind == "warning")


def test_the_valid_fixture_has_no_problem(tmp_path):
    assert [nb.problems for nb in load_assignments(_course(tmp_path).joinpath("solutions"))["adv"]] == [[]]


def test_check_reports_the_mistake_and_fails(tmp_path, capsys):
    course = _course(tmp_path, _misspelt)
    assert main(["check", "--strict", "--solutions", str(course / "solutions"),
                 "--exercises", str(course / "exercises")]) == 1
    assert "unknown check 'ste_sign/valeu' (did you mean 'ste_sign/value'?)" in capsys.readouterr().err


def test_an_invalid_assignment_costs_only_its_rows(tmp_path):
    course = _course(tmp_path)
    bad = course / "solutions" / "bad"
    bad.mkdir()
    nb = _valid()
    _misspelt(nb)
    (bad / "bad.ipynb").write_text(json.dumps(nb))
    subs = tmp_path / "submitted" / "s1"
    shutil.copytree(course / "solutions" / "adv", subs / "adv")
    shutil.copytree(bad, subs / "bad")
    grade(tmp_path / "submitted", tmp_path / "graded", load_assignments(course / "solutions"), "secret",
          jobs_n=1, sandbox=False, progress=False)
    with (tmp_path / "graded" / "grades.csv").open(newline="") as f:
        rows = {r["assignment"]: r for r in csv.DictReader(f)}
    assert (rows["adv"]["status"], float(rows["adv"]["score"])) == ("ok", 5.0)
    assert rows["bad"]["status"] == "error" and float(rows["bad"]["score"]) == 0.0
    assert "the assignment's source is invalid" in rows["bad"]["reason"]
    assert "unknown check 'ste_sign/valeu'" in rows["bad"]["reason"]
