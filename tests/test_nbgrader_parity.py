"""An nbgrader course, brought as it is: nbgrader's documented ``ps1`` (tests/fixtures/nbgrader_course,
nbgrader's own source format) released and graded by plain nbgrader and by ste-course, compared.

One class run is shared by every assertion (module fixture): ``nbgrader generate_assignment`` and
``nbgrader autograde`` in a scratch nbgrader course, ``ste-course release`` and the sandboxed
``ste-course grade`` on the same source folder and submissions. Every grade cell's score and
``needs_manual_grade`` and every notebook's total must agree, except the differences listed in
:data:`DIFFERENCES`, each with its reason (docs/nbgrader-courses.md lists the same ones).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ste_course.authoring.release import released_source
from ste_course.authoring.source import load_assignments
from ste_course.cli import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "nbgrader_course" / "source"
BIN = Path(sys.executable).parent

CHEAT = ("def squares(n):\n    return [1]\n\nimport IPython\n"
         "IPython.get_ipython().showtraceback = lambda *args, **kwargs: None  # failing tests look silent")
NOISY_SQUARES = ('def squares(n):\n    import sys\n    print("computing squares", file=sys.stderr)\n'
                 '    if n < 1:\n        raise ValueError(n)\n    return [i ** 2 for i in range(1, n + 1)]')
RIGHT = {
    "squares": "def squares(n):\n    if n < 1:\n        raise ValueError(n)\n    return [i * i for i in range(1, n + 1)]",
    "sum_of_squares": "def sum_of_squares(n):\n    return sum(squares(n))",
    "sum_of_squares_equation": "$\\sum_{i=1}^{n} i^2$",
    "sum_of_squares_application": "def pyramid(n):\n    return sum_of_squares(n)",
    "fib": "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "why_slow": "Each call makes two more calls, so the work grows exponentially.",
}


def _id(cell):
    return cell["metadata"].get("nbgrader", {}).get("grade_id")


def _at(nb, grade_id):
    return next(i for i, c in enumerate(nb["cells"]) if _id(c) == grade_id)


def _answer(nb, **answers):
    for grade_id, text in answers.items():
        nb["cells"][_at(nb, grade_id)]["source"] = text
    return nb


def _tamper_1(nb):
    """Answers right; a test commented out, a test deleted, a test turned into markdown worth 100
    points, a written answer left as released."""
    _answer(nb, squares=RIGHT["squares"], sum_of_squares=RIGHT["sum_of_squares"],
            sum_of_squares_application=RIGHT["sum_of_squares_application"])
    cell = nb["cells"][_at(nb, "correct_squares")]
    cell["source"] = "\n".join("# " + line for line in "".join(cell["source"]).split("\n"))
    del nb["cells"][_at(nb, "squares_invalid_input")]
    test = nb["cells"][_at(nb, "correct_sum_of_squares")]
    test["cell_type"], test["metadata"]["nbgrader"]["points"] = "markdown", 100
    del test["outputs"], test["execution_count"]
    return nb


def _duplicate(nb, grade_id, first, last):
    """The answer cell ``grade_id`` copied (as a student does to try a fix): ``first`` above, ``last``
    in the copy below, which is the answer nbgrader's DeduplicateIds keeps."""
    answer = nb["cells"][_at(nb, grade_id)]
    copy = json.loads(json.dumps(answer))
    copy["source"], copy["id"] = first, "copy-1"
    answer["source"] = last
    nb["cells"].insert(_at(nb, grade_id), copy)
    return nb


def _tamper_2(nb):
    """A locked set-up cell edited (LIMIT), a test replaced by ``pass``, a written answer deleted."""
    _answer(nb, fib=RIGHT["fib"], setup="import math\nLIMIT = 5", fib_small="pass")
    del nb["cells"][_at(nb, "why_slow")]
    return nb


# student -> notebook -> what the student did to the released notebook
STUDENTS = {
    "blank": {"problem1": lambda nb: nb, "problem2": lambda nb: nb},
    "right": {"problem1": lambda nb: _answer(nb, **{k: RIGHT[k] for k in ("squares", "sum_of_squares",
                                                                             "sum_of_squares_equation",
                                                                             "sum_of_squares_application")}),
              "problem2": lambda nb: _answer(nb, fib=RIGHT["fib"], why_slow=RIGHT["why_slow"])},
    "tamper": {"problem1": _tamper_1, "problem2": _tamper_2},
    "cheat": {"problem1": lambda nb: _answer(nb, squares=CHEAT),  # nbgrader 0.9.6 is not fooled either
              # visible tests pass, hidden ones fail:
              "problem2": lambda nb: _answer(nb, fib="def fib(n):\n    return {0: 0, 1: 1, 5: 5, 10: 55}[n]")},
    "noisy": {"problem1": lambda nb: _answer(nb, squares=NOISY_SQUARES, sum_of_squares=RIGHT["sum_of_squares"]),
              "problem2": lambda nb: _answer(nb, fib="def fib(n):\n    return n", why_slow="It is slow.")},
}

# Graded by ste-course only: nbgrader 0.9.6 cannot autograde a notebook with a duplicated nbgrader
# cell at all (DeduplicateIds empties the earlier copy's nbgrader metadata, which CheckCellMetadata
# then rejects as schema version 0, and the whole autograde run stops). Its grades must be those of
# the same notebook without the earlier copy, which is what DeduplicateIds means to grade.
DUPLICATED = {"problem1": lambda nb: _duplicate(_answer(nb, squares=RIGHT["squares"]), "sum_of_squares",
                                                "def sum_of_squares(n):\n    return 0", RIGHT["sum_of_squares"]),
              "problem2": lambda nb: _duplicate(nb, "fib", RIGHT["fib"], "def fib(n):\n    return 0")}
WITHOUT_COPY = {"problem1": lambda nb: _answer(nb, squares=RIGHT["squares"], sum_of_squares=RIGHT["sum_of_squares"]),
                "problem2": lambda nb: _answer(nb, fib="def fib(n):\n    return 0")}

# (student, notebook, grade id) -> (nbgrader's (score, needs_manual_grade), ours, why they differ)
DELETED = "a deleted test cell is put back and run (nbgrader: only with OverwriteCells.add_missing_cells)"
DIFFERENCES = {
    ("tamper", "problem1", "squares_invalid_input"): ((0.0, True), (1.0, False), DELETED),
}


def _run(args, cwd):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _grades(db: Path, students) -> dict:
    """``{(student, notebook, grade id): (score, needs_manual_grade)}`` and the notebooks' totals."""
    from nbgrader.api import Gradebook

    cells, totals = {}, {}
    with Gradebook(f"sqlite:///{db}") as gb:
        for student in students:
            for notebook in ("problem1", "problem2"):
                nb = gb.find_submission_notebook(notebook, "ps1", student)
                totals[student, notebook] = float(nb.score)
                for grade in nb.grades:
                    cells[student, notebook, grade.name] = (float(grade.score), bool(grade.needs_manual_grade))
    return {"cells": cells, "totals": totals}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Both releases, both gradings of one class (the expensive part, shared)."""
    root = tmp_path_factory.mktemp("nbgrader_course")
    shutil.copytree(FIXTURE, root / "source")
    _run(["nbgrader", "generate_assignment", "ps1", "--force"], root)
    ours = root / "ste" / "exercises"
    assert main(["release", "--solutions", str(root / "source"), "--exercises", str(ours)]) == 0
    for folder, students in (("submitted", STUDENTS), ("only_ours", {"dup": DUPLICATED, "nodup": WITHOUT_COPY})):
        for student, edits in students.items():
            (root / folder / student / "ps1").mkdir(parents=True)
            for notebook, edit in edits.items():
                nb = edit(json.loads((root / "release" / "ps1" / f"{notebook}.ipynb").read_text()))
                (root / folder / student / "ps1" / f"{notebook}.ipynb").write_text(json.dumps(nb))
    _run(["nbgrader", "autograde", "ps1"], root)
    shutil.copytree(root / "submitted", root / "only_ours", dirs_exist_ok=True)
    secret = root / "secret"
    secret.write_text("parity\n")
    assert main(["grade", str(root / "only_ours"), "--solutions", str(root / "source"),
                 "--out", str(root / "graded"), "--secret-file", str(secret), "--jobs", "2", "--judges", "0"]) == 0
    return {"root": root, "nbgrader": _grades(root / "gradebook.db", STUDENTS),
            "ours": _grades(root / "graded" / "gradebook.db", [*STUDENTS, "dup", "nodup"])}


def test_the_release_is_nbgraders_cell_by_cell(course):
    """ste-course release writes what nbgrader generate_assignment writes (cells, stubs, metadata),
    and what the grader takes as the released text of each answer is that text."""
    sources = {nb.name: nb for nb in load_assignments(course["root"] / "source")["ps1"]}
    for name in ("problem1", "problem2"):
        theirs = json.loads((course["root"] / "release" / "ps1" / f"{name}.ipynb").read_text())
        ours = json.loads((course["root"] / "ste" / "exercises" / "ps1" / f"{name}.ipynb").read_text())
        assert len(ours["cells"]) == len(theirs["cells"])
        for mine, nbg, source in zip(ours["cells"], theirs["cells"], sources[name].cells):
            assert mine == nbg
            assert released_source(source) == "".join(nbg["source"]), source.grade_id


def test_every_cell_is_graded_as_nbgrader_grades_it(course):
    theirs, ours = course["nbgrader"]["cells"], course["ours"]["cells"]
    assert len(theirs) == len(STUDENTS) * 9 and theirs.keys() <= ours.keys()
    differ = {key: (theirs[key], ours[key]) for key in theirs if theirs[key] != ours[key]}
    assert differ == {key: (nbg, mine) for key, (nbg, mine, _) in DIFFERENCES.items()}


def test_every_notebook_total_is_nbgraders_but_for_the_listed_cells(course):
    theirs, ours = course["nbgrader"]["totals"], course["ours"]["totals"]
    expected = dict(theirs)
    for (student, notebook, _), ((nbg, _), (mine, _), _) in DIFFERENCES.items():
        expected[student, notebook] += mine - nbg
    assert {key: ours[key] for key in theirs} == pytest.approx(expected)


def test_a_duplicated_answer_is_graded_by_its_last_copy(course):
    """nbgrader's DeduplicateIds keeps the last copy; nbgrader 0.9.6 itself then refuses the notebook
    (measured here on its own preprocessors), ste-course grades it as the copy-free notebook."""
    import nbformat
    from nbgrader.nbgraderformat import SchemaTooOldError
    from nbgrader.preprocessors import CheckCellMetadata, DeduplicateIds

    nb = nbformat.read(course["root"] / "only_ours" / "dup" / "ps1" / "problem1.ipynb", as_version=4)
    nb, resources = DeduplicateIds().preprocess(nb, {})
    with pytest.raises(SchemaTooOldError):
        CheckCellMetadata().preprocess(nb, resources)
    ours = course["ours"]
    for notebook in ("problem1", "problem2"):
        assert ours["totals"]["dup", notebook] == ours["totals"]["nodup", notebook]
        assert {k[2]: v for k, v in ours["cells"].items() if k[:2] == ("dup", notebook)} == \
            {k[2]: v for k, v in ours["cells"].items() if k[:2] == ("nodup", notebook)}
    assert ours["totals"]["dup", "problem1"] == 3.0 and ours["totals"]["dup", "problem2"] == 0.0


def test_the_cases_that_matter_are_in_the_class(course):
    """The class exercises what the parity claim is about (so the comparison is not vacuous)."""
    ours = course["ours"]["cells"]
    assert ours["blank", "problem1", "sum_of_squares_equation"] == (0.0, False)  # "No response."
    assert ours["right", "problem1", "sum_of_squares_equation"] == (0.0, True)  # waits for a hand grade
    assert ours["right", "problem1", "sum_of_squares_application"] == (0.0, True)  # a code answer, by hand
    assert ours["tamper", "problem1", "correct_squares"] == (1.0, False)  # commented out: restored
    assert ours["tamper", "problem1", "correct_sum_of_squares"] == (0.5, False)  # markdown, 100 points: restored
    assert ours["tamper", "problem2", "fib_large"] == (1.0, False)  # LIMIT restored for the hidden test
    assert ours["tamper", "problem2", "fib_small"] == (1.0, False)  # `pass` restored to the test
    assert ours["tamper", "problem2", "why_slow"] == (0.0, True)  # deleted written answer
    assert ours["cheat", "problem1", "correct_squares"] == (0.0, False)  # a silenced traceback still fails
    assert ours["cheat", "problem2", "fib_small"] == (1.0, False)  # the visible tests pass
    assert ours["cheat", "problem2", "fib_large"] == (0.0, False)  # the hidden ones do not
    assert ours["noisy", "problem1", "correct_squares"] == (0.0, False)  # stderr in a test: failed
    assert ours["noisy", "problem1", "sum_of_squares_uses_squares"] == (0.5, False)
    assert course["ours"]["totals"]["right", "problem1"] == 3.0


def test_validate_gives_our_verdict(course):
    """The student's Validate button (nbgrader validate) passes a notebook exactly when every test
    cell earns its points in our grading (on notebooks whose instructor cells are untouched and
    whose hidden tests agree with the visible ones: Validate never sees the hidden tests)."""
    from nbgrader.validator import Validator

    cases = [("blank", "problem1"), ("right", "problem2"), ("noisy", "problem1"), ("cheat", "problem1")]
    sources = {nb.name: nb for nb in load_assignments(course["root"] / "source")["ps1"]}
    for student, notebook in cases:
        path = course["root"] / "submitted" / student / "ps1" / f"{notebook}.ipynb"
        result = Validator().validate(str(path))
        passed = not ({"failed", "changed", "type_changed"} & result.keys())
        auto = [c.grade_id for c in sources[notebook].auto_cells]
        ours = all(course["ours"]["cells"][student, notebook, gid][0] == sources[notebook].by_id()[gid].points
                   for gid in auto)
        assert passed == ours, (student, notebook, result)
