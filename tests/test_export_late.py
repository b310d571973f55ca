"""LMS export layouts and the late-submission rule, on a small grades.csv."""

import csv
import io
from datetime import datetime

import pytest

from ste_course.export import export
from ste_course.late import LatePolicy

GRADES = """student_id,assignment,notebook,score,max_score,status,reason,late,penalty
ann,01_backprop,01_backprop,10,10,ok,,False,0
ann,03_ste,03_ste,4,10,ok,,True,2
bo,01_backprop,01_backprop,0,10,missing,not submitted,False,0
"""


@pytest.fixture
def graded(tmp_path):
    (tmp_path / "grades.csv").write_text(GRADES)
    return tmp_path


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
    (folder / "timestamp.txt").write_text("2026-12-20 00:00:00 UTC")  # the penalty never exceeds the score
    assert policy.assess("03_ste", folder, 3.0, 10.0)[2] == 3.0
    assert policy.assess("01_backprop", folder, 3.0, 10.0) == (False, 0.0, 0.0)  # no due date


def test_late_config_rejects_a_penalty_outside_0_1(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[grading]\nlate_penalty_per_day = 2\n")
    with pytest.raises(ValueError, match="Received: 2"):
        LatePolicy.load(config)
