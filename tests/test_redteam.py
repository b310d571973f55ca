"""Red-team findings on the parent's side of grading (no sandbox: the ``Replay`` executor of
``test_containment`` hands ``grade`` made-up worker results).

Each test is an attack that got through before its fix:

* two unusable folder names that agree on their first 100 characters were graded under one
  escaped id (one row lost), and a name whose escaped rendering is longer than a file name may
  be had no feedback page (``File name too long``) and an ``error`` row;
* a ``timestamp.txt`` whose offset moves it out of ``datetime``'s range (``0001-01-01 00:00:00
  +05:00``) raised ``OverflowError``: an ``internal grading error`` instead of "lateness not
  assessed";
* thousands of cells with made-up grade ids put one note each in the reason (200 KB in one
  CSV cell, past Python's csv field limit and a spreadsheet's cell limit);
* an event nested a few hundred levels deep, written by the student on the grader's channel,
  raised ``RecursionError`` in the parent (blamed on the grader as an internal error).
"""

from __future__ import annotations

import csv

import pytest

from ste_course.grading.late import LateError, parse_time
from ste_course.untrusted import clean
from test_containment import (ASSIGNMENT, Replay, _alembic_on_path, _ended, _grade, _notebook,  # noqa: F401
                              _policy, _submit)


def _all_rows(out) -> list:
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_unusable_folder_gets_its_own_invalid_row_and_page(tmp_path):
    names = [b"\xff" * 120 + b"A", b"\xff" * 120 + b"B", b"\x01" * 200, "\u202e" * 80, "ok-student"]
    for name in names:
        _submit(tmp_path / "subs", name)
    results = _grade(tmp_path / "subs", tmp_path / "out")
    rows = _all_rows(tmp_path / "out")
    assert len(rows) == len(names) == len({r["student_id"] for r in rows}), [r["student_id"][:30] for r in rows]
    by_id = {r["student_id"]: r for r in rows}
    assert by_id.pop("ok-student")["status"] == "ok"
    for student, row in by_id.items():
        assert row["status"] == "invalid" and "not a usable student id" in row["reason"], row
        assert len(student.encode()) <= 200 and student.isprintable() and "\\" in student
    for r in results:
        assert (tmp_path / "out" / "feedback" / r.student / ASSIGNMENT / f"{ASSIGNMENT}.html").is_file()


@pytest.mark.parametrize("text", ["0001-01-01 00:00:00 +05:00", "9999-12-31 23:59:59 -05:00",
                                  "0001-01-01 00:00:00.5 +00:01"])
def test_a_timestamp_out_of_range_is_unreadable_not_an_internal_error(tmp_path, text):
    with pytest.raises(LateError, match="not a time"):
        parse_time(text)
    (_submit(tmp_path / "subs", "ann") / "timestamp.txt").write_text(text)
    (result,) = _grade(tmp_path / "subs", tmp_path / "out", late=_policy())
    assert result.status == "ok" and result.late == "unknown", result.reason
    assert "lateness not assessed" in result.reason and "internal" not in result.reason


def test_hundreds_of_repairs_make_a_short_reason(tmp_path):
    """900 cells with unknown grade ids (under preflight's cap of 1,000 cells; more is invalid)."""
    nb = _notebook()
    nb["cells"] += [{"cell_type": "code", "execution_count": None, "outputs": [], "source": "1",
                     "metadata": {"nbgrader": {"grade_id": f"bogus{i}"}}} for i in range(900)]
    _submit(tmp_path / "subs", "ann", nb)
    (result,) = _grade(tmp_path / "subs", tmp_path / "out")
    assert result.status == "ok"
    assert "'bogus0'" in result.reason and "895 more" in result.reason
    assert len(result.reason) < 1000, len(result.reason)
    assert len(_all_rows(tmp_path / "out")[0]["reason"]) < 1000


def _deep(depth: int):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def test_clean_never_raises_on_deep_data():
    cleaned = clean({"a": _deep(100_000), "s": "\ud800"})
    assert cleaned["s"] == "\ufffd"
    depth, value = 0, cleaned["a"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0] if value else None
    assert depth < 100


@pytest.mark.parametrize("judges", [0, 1])
def test_a_deeply_nested_event_from_the_sandbox_is_the_students_doing(tmp_path, judges):
    def answer(run):
        result = _ended(run, "hello")
        result["events"].append({"event": "x", "a": _deep(5000)})
        return result

    _submit(tmp_path / "subs", "ann")
    (result,) = _grade(tmp_path / "subs", tmp_path / "out", Replay(answer), judges=judges)
    assert result.status == "error" and "something other than the grader wrote" in result.reason, result.reason
