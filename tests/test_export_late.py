"""LMS export layouts and the late-submission rule, on a small gradebook (no grading run).

The gradebook is written the way ``ste-course grade`` writes it (:class:`ste_course.record.recorder.Recorder`)
for a scratch course of two one-cell assignments; a hand edit goes in through nbgrader's API, as
formgrader makes it, and must reach ``grades.csv`` and every export.
"""

import csv
import io
import json
import os
import re
import shutil
import sys
from datetime import datetime
from pathlib import Path

import pytest

from ste_course.authoring.source import load_assignments
from ste_course.grading.late import LateConfigError, LatePolicy
from ste_course.record.export import export
from ste_course.record.recorder import NotebookResult, Recorder

# ann: 10/10 on 01, 6/10 on 03 late by a day (2 points off: 4); bo: 01 missing
RESULTS = [("ann", "01_backprop", 10.0, "ok", "", "no", 0.0), ("ann", "03_ste", 6.0, "ok", "", "yes", 2.0),
           ("bo", "01_backprop", 0.0, "missing", "not submitted", "no", 0.0)]


def _course(root: Path) -> dict:
    """``root/solutions/<a>/<a>.ipynb`` with one graded cell of 10 points each."""
    for name in ("01_backprop", "03_ste"):
        test = 'check(f, "ste_sign/value")\n### BEGIN HIDDEN TESTS\ncheck(f, "ste_sign/value", hidden=True)\n### END HIDDEN TESTS'
        cells = [{"cell_type": "code", "source": test, "outputs": [], "execution_count": None,
                  "metadata": {"nbgrader": {"grade": True, "grade_id": "test", "points": 10, "locked": True,
                                            "solution": False, "schema_version": 3}}}]
        folder = root / "solutions" / name
        folder.mkdir(parents=True)
        (folder / f"{name}.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                                          "nbformat_minor": 5}))
    return load_assignments(root / "solutions")


@pytest.fixture(scope="module")
def _graded(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # nbgrader runs alembic by name
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        yield _write_gradebook(tmp_path_factory.mktemp("gradebook"))


@pytest.fixture
def graded(_graded, tmp_path):
    """A copy of the module's gradebook folder (each test may edit its own)."""
    shutil.copytree(_graded, tmp_path / "graded")
    return tmp_path / "graded"


def _write_gradebook(root: Path) -> Path:
    sources = _course(root)
    out = root / "graded"
    recorder = Recorder(out, None, sources)
    for student, assignment, raw, status, reason, late, penalty in RESULTS:
        recorder.record(NotebookResult(student, assignment, assignment, raw - penalty, 10.0, status, reason,
                                       cells=[{"grade_id": "test", "points": raw, "max_points": 10.0, "messages": []}],
                                       late=late, penalty=penalty, hours_late=20.0 if late == "yes" else None),
                        sources[assignment][0])
    recorder.write_csv()
    recorder.close()
    return out


def _gradebook_score(out, student, assignment):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        submission = gb.find_submission(assignment, student)
        return max(0.0, submission.score - submission.late_submission_penalty)


def _rows(text):
    return list(csv.reader(io.StringIO(text)))


def test_wide_csv_has_one_row_per_student_and_a_column_per_assignment(graded):
    text, warnings = export(graded, "csv")
    assert _rows(text) == [["student_id", "01_backprop", "03_ste", "total", "late"],
                           ["ann", "10", "4", "14", "03_ste"], ["bo", "0", "", "0", ""]]
    assert warnings == []


def test_canvas_layout_with_points_possible_and_roster_ids(graded, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id,name,lms_id,sis_user_id,sis_login_id,section\nann,Ann Lee,1234,S1,ann@uni,A\n")
    text, warnings = export(graded, "canvas", roster)
    rows = _rows(text)
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "01_backprop", "03_ste"]
    assert rows[1] == ["Points Possible", "", "", "", "", "10", "10"]
    assert rows[2] == ["Ann Lee", "1234", "S1", "ann@uni", "A", "10", "4"]
    assert rows[3][0] == "bo"  # not in the roster: reported, not dropped
    assert warnings == ["bo is graded but not in the roster; exported without LMS ids"]


def test_moodle_layout_identifies_users_by_id_number_and_email(graded, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id,email,id_number\nann,ann@uni.example,A-17\nbo,bo@uni.example,B-2\n")
    rows = _rows(export(graded, "moodle", roster)[0])
    assert rows[0] == ["ID number", "Email address", "01_backprop", "03_ste"]
    assert rows[1:] == [["A-17", "ann@uni.example", "10", "4"], ["B-2", "bo@uni.example", "0", ""]]


def test_bad_format_and_roster_are_reported(graded, tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export(graded, "xlsx")
    bad = tmp_path / "bad.csv"
    bad.write_text("who,email\nann,a@b\n")
    with pytest.raises(ValueError, match="student_id column"):
        export(graded, "canvas", bad)
    with pytest.raises(FileNotFoundError, match="run `ste-course grade` first"):
        export(tmp_path / "nowhere", "csv")


def test_late_penalty_per_started_day(tmp_path):
    config = tmp_path / "ste_course.toml"
    config.write_text('[grading]\nlate_penalty_per_day = 0.1\n[due]\n03_ste = "2026-12-01 23:59:00"\n')
    policy = LatePolicy.load(config)
    assert policy.due["03_ste"] == datetime(2026, 12, 1, 23, 59)
    folder = tmp_path / "ann" / "03_ste"
    folder.mkdir(parents=True)
    (folder / "timestamp.txt").write_text("2026-12-02 00:00:01.5 UTC")  # 61.5 s late: one started day
    late, seconds, penalty = policy.assess("03_ste", folder, score=8.0, max_score=10.0)
    assert late and seconds == pytest.approx(61.5) and penalty == pytest.approx(1.0)
    (folder / "timestamp.txt").write_text("2026-12-01 23:58:00 UTC")
    assert policy.assess("03_ste", folder, 8.0, 10.0) == (False, 0.0, 0.0)
    (folder / "timestamp.txt").write_text("2026-12-20 00:00:00 UTC")  # never more than the max score
    assert policy.assess("03_ste", folder, 3.0, 10.0)[2] == 10.0
    assert policy.assess("01_backprop", folder, 3.0, 10.0) == (False, 0.0, 0.0)  # no due date


BAD_CONFIGS = {
    "misspelt assignment": ('[due]\n03_st = "2026-12-01 23:59:00"\n', "03_st, which is not an assignment"),
    "unparsable date": ('[due]\n03_ste = "1st of December"\n', "due date of 03_ste"),
    "impossible date": ('[due]\n03_ste = "2026-02-30 10:00:00"\n', "due date of 03_ste"),
    "penalty 10": ("[grading]\nlate_penalty_per_day = 10\n", "per started day). Received: 10"),
    "negative penalty": ("[grading]\nlate_penalty_per_day = -0.1\n", "Received: -0.1"),
    "penalty as text": ('[grading]\nlate_penalty_per_day = "10%"\n', "Received: '10%'"),
    "misspelt setting": ("[grading]\nlate_penalty_perday = 0.1\n", "unknown setting grading.late_penalty_perday"),
    "not a method": ("[grading]\nlate_penalty = 0.1\n", 'late_penalty must be "none" or "zero"'),
    "not TOML": ("[due\n", "not readable as TOML"),
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_each_bad_config_is_one_line_and_nothing_is_graded(tmp_path, name, capsys):
    from ste_course.cli import main

    text, message = BAD_CONFIGS[name]
    _course(tmp_path)
    config = tmp_path / "ste_course.toml"
    config.write_text(text)
    with pytest.raises(LateConfigError, match=re.escape(message)):
        LatePolicy.load(config, ["01_backprop", "03_ste"])
    (tmp_path / "subs" / "ann" / "03_ste").mkdir(parents=True)
    code = main(["--solutions", str(tmp_path / "solutions"), "grade", str(tmp_path / "subs"), "--no-sandbox",
                 "--out", str(tmp_path / "out"), "--config", str(config),
                 "--secret-file", str(tmp_path / "secret")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # checked before anything is graded


def test_a_hand_edit_in_the_gradebook_reaches_grades_csv_and_every_export(graded, tmp_path):
    from nbgrader.api import Gradebook

    before = {fmt: export(graded, fmt)[0] for fmt in ("csv", "canvas", "moodle")}
    with Gradebook(f"sqlite:///{graded / 'gradebook.db'}") as gb:  # what formgrader does
        gb.find_grade("test", "03_ste", "03_ste", "ann").manual_score = 9.0
        gb.find_grade("test", "01_backprop", "01_backprop", "bo").manual_score = 3.5
        gb.db.commit()
    assert _gradebook_score(graded, "ann", "03_ste") == 7.0  # 9 - 2 (late)
    texts = {fmt: export(graded, fmt)[0] for fmt in ("csv", "canvas", "moodle")}
    assert _rows(texts["csv"])[1:] == [["ann", "10", "7", "17", "03_ste"], ["bo", "3.5", "", "3.5", ""]]
    assert _rows(texts["canvas"])[2][5:] == ["10", "7"] and _rows(texts["canvas"])[3][5:] == ["3.5", ""]
    assert _rows(texts["moodle"])[1:] == [["ann", "", "10", "7"], ["bo", "", "3.5", ""]]
    assert all(texts[f] != before[f] for f in texts)
    assert {fmt: export(graded, fmt)[0] for fmt in texts} == texts  # exporting twice: the same
    sources = _course(tmp_path / "again")
    recorder = Recorder(graded, None, sources)
    recorder.write_csv()
    recorder.close()
    with open(graded / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}
    ann = rows["ann", "03_ste"]
    assert [float(ann[k]) for k in ("score", "raw_score", "penalty", "hours_late")] == [7.0, 9.0, 2.0, 20.0]
    assert ann["manual"] == "True" and ann["late"] == "True"
    assert float(rows["bo", "01_backprop"]["score"]) == 3.5 and rows["ann", "01_backprop"]["manual"] == "False"
