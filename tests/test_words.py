"""The words an instructor reads (issue 27): lateness below an hour in minutes (not "0.0 hours"),
in the feedback page and the grade summary; the example roster parses as ``ste-course hub`` and
``ste-course export`` read a roster."""

from __future__ import annotations

from pathlib import Path

import pytest

import ste_course.record.export as export
from ste_course.cli.commands import _summary
from ste_course.record.feedback import late_by, render_feedback
from ste_course.record.recorder import NotebookResult

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hours,long,short", [
    (1 / 3600, "1 second", "1s"),
    (30 / 3600, "30 seconds", "30s"),
    (1.5 / 60, "1.5 minutes", "1.5min"),
    (1 / 60, "1 minute", "1min"),
    (59.5 / 60, "59.5 minutes", "59.5min"),
    (1.0, "1 hour", "1h"),
    (25.25, "25.2 hours", "25.2h"),
    (72.0, "3 days", "3d"),
    (None, "0 seconds", "0s"),
])
def test_lateness_reads_in_the_unit_that_shows_it(hours, long, short):
    assert late_by(hours) == long
    assert late_by(hours, short=True) == short


def _late_result(hours: float, penalty: float) -> NotebookResult:
    return NotebookResult("ann", "03_ste", "03_ste", 9.0, 10.0, "ok", "", late="yes", penalty=penalty,
                          hours_late=hours)


def test_the_feedback_page_says_minutes_and_point_in_the_singular():
    page = render_feedback(_late_result(1.5 / 60, 1.0))
    assert "by 1.5 minutes: 1 point deducted." in page, page[page.find("Late"):][:200]
    page = render_feedback(_late_result(30.0, 2.0))
    assert "by 30 hours: 2 points deducted." in page


def test_the_summary_says_minutes(monkeypatch, tmp_path, capsys):
    row = dict(student_id="ann", assignment="03_ste", notebook="03_ste", score=9.0, max_score=10.0, status="ok",
               reason="", late="yes", penalty=1.0, hours_late=1.5 / 60, raw_score=10.0, manual=False,
               needs_manual=[])
    monkeypatch.setattr(export, "gradebook_rows", lambda graded, db_url=None: [row])
    _summary(tmp_path / "grades.csv", 1)
    line = capsys.readouterr().out.splitlines()[1]
    assert "1.5min -1" in line and "0.0h" not in line, line


def _written_answers() -> list:
    """The assignments of solutions/ with a written answer (a graded markdown cell), by number."""
    import json

    found = []
    for path in sorted((ROOT / "solutions").glob("*/*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        if any(c["cell_type"] == "markdown" and c.get("metadata", {}).get("nbgrader", {}).get("grade") for c in cells):
            found.append(path.parent.name[:2])
    return sorted(set(found))


def test_every_list_of_written_answers_in_the_docs_is_the_one_in_solutions():
    import re

    lists = re.compile(r"written answers[^.]{0,80}?\bin ((?:\d\d(?:,? and |, )?)+)", re.I)
    expected, seen = _written_answers(), 0
    assert len(expected) >= 6, expected
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in lists.finditer(doc.read_text(encoding="utf-8")):
            seen += 1
            assert re.findall(r"\d\d", match.group(1)) == expected, f"{doc.name}: {match.group(0)!r}"
    assert seen, "no list of the assignments with written answers in README.md or docs/"


def test_the_example_roster_parses_for_the_hub_and_the_export():
    from ste_course.classroom.hub import read_roster as hub_roster
    from ste_course.record.export import read_roster as export_roster

    roster = ROOT / "hub" / "roster.example.csv"
    students = hub_roster(roster)
    assert len(students) >= 2 and set(export_roster(roster)) == set(students)
    for doc in ("classroom.md",):
        assert "hub/roster.example.csv" in (ROOT / "docs" / doc).read_text(encoding="utf-8"), doc
