"""Submissions are read defensively and locked cells restored from the instructor's source."""

import json

import pytest

from ste_course.authoring.release import blank_solution
from ste_course.authoring.source import SourceError, load_notebook, parse_checks, strip_hidden
from ste_course.grading.preflight import PreflightError, prepare, read_submission


def _cell(cell_type, source, **nbgrader):
    meta = {"nbgrader": {"schema_version": 3, "grade": False, "solution": False, "locked": False,
                         "task": False, **nbgrader}} if nbgrader else {}
    cell = {"cell_type": cell_type, "metadata": meta, "source": source}
    if cell_type == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


TEST_SRC = ('"""checks"""\ncheck(f, "ste_sign/value")\n### BEGIN HIDDEN TESTS\n'
            'check(f, "ste_sign/value", hidden=True)\n### END HIDDEN TESTS')


def _source_nb(tmp_path):
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3"}}, "cells": [
        _cell("markdown", "# Title", grade_id="intro", locked=True),
        _cell("code", "from ste_course.checks import check", grade_id="setup", locked=True),
        _cell("code", "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION",
              grade_id="answer", solution=True),
        _cell("code", TEST_SRC, grade_id="test_f", grade=True, locked=True, points=2),
    ]}
    path = tmp_path / "a.ipynb"
    path.write_text(json.dumps(nb))
    return load_notebook(path, "a"), nb


def test_source_reads_points_and_checks(tmp_path):
    source, _ = _source_nb(tmp_path)
    test = source.by_id()["test_f"]
    assert test.points == 2 and source.max_score == 2
    assert [(c.spec, c.hidden) for c in test.checks] == [("ste_sign/value", False), ("ste_sign/value", True)]
    assert "hidden=True" not in test.visible_source


def test_check_names_must_be_literals():
    with pytest.raises(SourceError, match="string literal"):
        parse_checks("name = 'x'\ncheck(f, name)", "cell")
    with pytest.raises(SourceError, match="True or False"):
        parse_checks("check(f, 'x', hidden=flag)", "cell")


def test_strip_hidden_removes_only_the_block():
    assert strip_hidden("a\n### BEGIN HIDDEN TESTS\nb\n### END HIDDEN TESTS\nc") == "a\nc"


def test_blank_solution_matches_the_release_stub():
    assert blank_solution("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION") == \
        "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"


def test_edited_deleted_and_duplicated_locked_cells_are_restored(tmp_path):
    source, nb = _source_nb(tmp_path)
    student = json.loads(json.dumps(nb))
    student["cells"][2]["source"] = "def f(x):\n    return 2 * x"
    student["cells"][3]["source"] = "pass  # the student emptied the test"
    student["cells"].append(json.loads(json.dumps(student["cells"][2])))  # duplicated answer
    student["cells"][2]["metadata"]["nbgrader"]["points"] = 100
    del student["cells"][1]  # deleted set-up cell
    student["cells"][-1]["source"] = "def f(x):\n    return 3 * x"  # the last copy is the answer
    prepared = prepare(source, student)
    # the earlier copy runs as the student's own cell (nbgrader's DeduplicateIds keeps the last)
    assert [(c.source, c.locked) for c in prepared.cells] == [
        ("# Title", True), ("def f(x):\n    return 2 * x", False), ("from ste_course.checks import check", True),
        ("def f(x):\n    return 3 * x", False), (TEST_SRC, True)]
    assert any("earlier copy of cell answer" in n for n in prepared.notes)


def test_cells_the_student_added_are_kept_in_place(tmp_path):
    source, nb = _source_nb(tmp_path)
    student = json.loads(json.dumps(nb))
    student["cells"].insert(3, _cell("code", "helper = 1"))
    prepared = prepare(source, student)
    assert [c.source for c in prepared.code_cells][1:3] == [nb["cells"][2]["source"], "helper = 1"]
    assert not prepared.code_cells[2].locked and prepared.code_cells[3].locked


def test_a_missing_answer_stays_missing(tmp_path):
    """As in nbgrader: an answer the student moved into a cell of their own still counts."""
    source, nb = _source_nb(tmp_path)
    student = json.loads(json.dumps(nb))
    student["cells"][2] = _cell("code", "def f(x):\n    return x")  # its nbgrader metadata removed
    prepared = prepare(source, student)
    assert [c.source for c in prepared.code_cells] == [nb["cells"][1]["source"], "def f(x):\n    return x", TEST_SRC]
    assert any("missing answer cells: answer" in n for n in prepared.notes)


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not valid notebook JSON"),
    (b"\xff\xfe", "not valid notebook JSON"),
    (json.dumps({"nbformat": 3, "cells": []}).encode(), "nbformat 3"),
    (json.dumps({"nbformat": 4}).encode(), "no list of cells"),
    (json.dumps([1, 2]).encode(), "no list of cells"),
])
def test_unreadable_submissions_get_a_reason(tmp_path, content, message):
    path = tmp_path / "s.ipynb"
    path.write_bytes(content)
    with pytest.raises(PreflightError, match=message) as err:
        read_submission(path)
    assert err.value.status == "invalid"


def test_a_submission_of_tens_of_thousands_of_cells_is_refused_before_it_runs(tmp_path):
    """Red team: 59,000 one-character cells (4.97 MB, within the size cap) ran, and their
    15.8 MB feedback page cost the grader's recording thread about a minute."""
    from ste_course.grading.preflight import MAX_CELLS

    cell = {"cell_type": "code", "metadata": {}, "source": "1", "outputs": [], "execution_count": None}
    path = tmp_path / "s.ipynb"
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell] * 40_000}))
    with pytest.raises(PreflightError, match=f"40000 cells; at most {MAX_CELLS}") as err:
        read_submission(path)
    assert err.value.status == "invalid"
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell] * MAX_CELLS}))
    assert len(read_submission(path)["cells"]) == MAX_CELLS


def test_huge_and_linked_files_are_refused(tmp_path):
    big = tmp_path / "big.ipynb"
    big.write_bytes(b" " * (6 * 2**20))
    with pytest.raises(PreflightError, match="limit"):
        read_submission(big)
    link = tmp_path / "link.ipynb"
    link.symlink_to(big)
    with pytest.raises(PreflightError, match="is a link"):
        read_submission(link)


def test_an_ordinary_cell_runs_once_and_the_students_edit_before_it(tmp_path):
    """A metadata-free code cell of the source runs as the instructor wrote it; the released copy
    left unchanged is not run a second time, an edited copy runs as the student's cell before it."""
    _, nb = _source_nb(tmp_path)
    nb["cells"].insert(3, _cell("code", "f(2)"))
    path = tmp_path / "plain.ipynb"
    path.write_text(json.dumps(nb))
    source = load_notebook(path, "a")
    same = prepare(source, json.loads(json.dumps(nb)))
    assert [c.source for c in same.code_cells].count("f(2)") == 1
    edited = json.loads(json.dumps(nb))
    edited["cells"][3]["source"] = "f(3)"
    assert [(c.source, c.locked) for c in prepare(source, edited).code_cells][2:4] == [("f(3)", False), ("f(2)", True)]
