"""The parent side of grading holds against hostile names, bytes and files (issue 11, classes 1,
2 and 7): one notebook's trouble is that notebook's row, never the run's; only a student's own
files are graded as theirs; every folder gets rows; nothing reaches a terminal or a spreadsheet
raw.

No sandbox and no TensorFlow here: a ``Replay`` executor hands ``grade`` made-up worker results,
so these tests run the parent's stages (collect, preflight, judge, late rules, record) only.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest

import ste_course.grade as grading
from ste_course.grade import grade
from ste_course.late import LatePolicy
from ste_course.source import load_assignments

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "adversarial" / "source"
ASSIGNMENT = "adv"
NB = f"{ASSIGNMENT}.ipynb"


@pytest.fixture(autouse=True)
def _alembic_on_path(monkeypatch):
    """nbgrader's gradebook runs ``alembic`` by name (the CLI puts this venv's bin/ first)."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


class Replay:
    """An executor that runs nothing: each run's result is ``answer(run)`` (default: every cell
    starts and ends in order, the student's cells print ``"hello"``, the tests record no
    evidence, so the notebook is ``ok`` with 0 points)."""

    def __init__(self, answer=None):
        self.answer = answer or (lambda run: _ended(run, "hello"))
        self.runs = []

    def run_all(self, runs, on_result):
        for i, run in enumerate(runs):
            self.runs.append(run)
            on_result(i, self.answer(run))

    def join(self):
        pass


def _ended(run, stdout):
    events = []
    for c in run["cells"]:
        events += [{"event": "start", "cell": c["index"]},
                   {"event": "end", "cell": c["index"], "stdout": "" if c["locked"] else stdout}]
    return {"status": "ok", "events": events, "seconds": 0.1}


def _notebook(extra_source: str = "") -> dict:
    nb = json.loads((SOURCE / ASSIGNMENT / NB).read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "answer":
            cell["source"] = "def my_sign(x, clip_value=1.0):\n    return x\n" + extra_source
    return nb


def _submit(subs: Path, student, nb=None, name=NB) -> Path:
    """Write ``nb`` (dict, bytes or None for the default) as ``subs/student/adv/name``;
    ``student`` and ``name`` may be bytes (names that are not UTF-8)."""
    folder = os.path.join(os.fsencode(subs), os.fsencode(student), os.fsencode(ASSIGNMENT))
    os.makedirs(folder, exist_ok=True)
    data = nb if isinstance(nb, bytes) else json.dumps(nb if nb is not None else _notebook()).encode()
    with open(os.path.join(folder, os.fsencode(name)), "wb") as f:
        f.write(data)
    return Path(os.fsdecode(folder))


def _grade(subs, out, executor=None, **kwargs):
    return grade(subs, out, load_assignments(SOURCE), "secret", sandbox=False, progress=False,
                 executor=executor or Replay(), **kwargs)


def _rows(out) -> dict:
    with open(Path(out) / "grades.csv", newline="", encoding="utf-8") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


# ------------------------------------------------------------------ class 1: containment
def test_lone_surrogates_in_output_and_source_are_data(tmp_path):
    subs = tmp_path / "subs"
    _submit(subs, "ann")
    _submit(subs, "surrogate-source", _notebook("# \ud800 lone\n"))
    out = tmp_path / "out"
    results = _grade(subs, out, Replay(lambda run: _ended(run, "printed \ud800 and \udcff")))
    rows = _rows(out)
    assert set(rows) == {"ann", "surrogate-source"}
    by = {r.student: r for r in results}
    page = (out / "feedback" / "ann" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text(encoding="utf-8")
    assert "printed \ufffd and \ufffd" in page
    assert "# \ufffd lone" in (out / "feedback" / "surrogate-source" / ASSIGNMENT / f"{ASSIGNMENT}.html"
                               ).read_text(encoding="utf-8")
    assert by["ann"].status == by["surrogate-source"].status == "ok"  # the tests recorded no evidence: 0 points


def test_a_failure_in_the_parent_is_that_notebooks_error_row_and_a_rerun_grades_it_again(tmp_path, monkeypatch):
    subs, out = tmp_path / "subs", tmp_path / "out"
    for student in ("ann", "bob", "cat"):
        _submit(subs, student)
    real_judge = grading.judge

    def judge(source, plan, events, reason):
        if any("bob" in str(e.get("stdout")) for e in events):
            raise RuntimeError("the judge broke on bob")
        return real_judge(source, plan, events, reason)

    monkeypatch.setattr(grading, "judge", judge)
    replay = Replay(lambda run: _ended(run, run["id"]))
    _grade(subs, out, replay)
    rows = _rows(out)
    assert set(rows) == {"ann", "bob", "cat"}
    assert rows["bob"]["status"] == "error" and "the judge broke on bob" in rows["bob"]["reason"]
    assert rows["ann"]["status"] == rows["cat"]["status"] == "ok"
    monkeypatch.setattr(grading, "judge", real_judge)
    replay = Replay()
    _grade(subs, out, replay)  # no --force: only the error row is graded again
    assert [run["id"].split("/")[0] for run in replay.runs] == ["bob"]
    assert _rows(out)["bob"]["status"] == "ok"


def test_a_failure_while_recording_is_that_notebooks_error_row(tmp_path, monkeypatch):
    subs, out = tmp_path / "subs", tmp_path / "out"
    for student in ("ann", "bob"):
        _submit(subs, student)
    from ste_course.record import Recorder

    real = Recorder._feedback

    def feedback(self, result, source):
        if result.student == "ann" and result.status != "error":
            raise OSError("disk full while writing ann's feedback")
        return real(self, result, source)

    monkeypatch.setattr(Recorder, "_feedback", feedback)
    _grade(subs, out)
    rows = _rows(out)
    assert rows["ann"]["status"] == "error" and "disk full" in rows["ann"]["reason"]
    assert rows["bob"]["status"] == "ok"


def test_a_huge_sparse_notebook_is_not_read(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    folder = _submit(subs, "huge")
    with open(folder / NB, "r+b") as f:
        f.truncate(2**40)  # 1 TiB, sparse
    _submit(subs, "ann")
    _grade(subs, out)
    rows = _rows(out)
    assert rows["huge"]["status"] == "invalid" and "limit" in rows["huge"]["reason"]
    assert rows["ann"]["status"] == "ok"
    _grade(subs, out)  # the re-run's "already graded?" check does not read it either


def test_a_notebook_that_is_a_fifo_or_a_folder_is_invalid_and_never_blocks(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    folder = _submit(subs, "fifo")
    (folder / NB).unlink()
    os.mkfifo(folder / NB)
    folder = _submit(subs, "dir")
    (folder / NB).unlink()
    (folder / NB).mkdir()
    _grade(subs, out)
    rows = _rows(out)
    assert rows["fifo"]["status"] == rows["dir"]["status"] == "invalid"
    assert "not a regular file" in rows["fifo"]["reason"]


# ------------------------------------------------------------------ late work
def _policy():
    return LatePolicy(due={ASSIGNMENT: LatePolicy.parse_time("2026-12-01 23:59:00")}, penalty_per_day=0.1)


@pytest.mark.parametrize("text", [
    "2026-12-02 00:00:01.5 UTC", "2026-12-02 00:00:01.500000 UTC", "2026-12-02 00:00:01",
    "2026-12-02T00:00:01Z", "2026-12-02 01:00:01 +0100", "2026-12-02 01:00:01.25 +01:00",
    "2026-12-02 00:00:01.000000 GMT",
])
def test_nbgrader_timestamps_are_read(tmp_path, text):
    (tmp_path / "timestamp.txt").write_text(text + "\n")
    late, seconds, _ = _policy().assess(ASSIGNMENT, tmp_path, 5.0, 5.0)
    assert late and 61 <= seconds < 62


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.write_text("2026-12-02 00:00:01 /dev/zero"), "not a time"),
    (lambda p: p.write_text("2026-12-02 00:00:01 /proc/kmsg"), "not a time"),
    (lambda p: p.write_text("2026-12-02 00:00:01 America/New_York"), "not a time"),
    (lambda p: p.write_text("tomorrow"), "not a time"),
    (lambda p: p.write_bytes(b"\xff\xfe 2026"), "not a time"),
    (lambda p: p.symlink_to("/proc/kmsg"), "is a link"),
    (lambda p: p.symlink_to("/dev/zero"), "is a link"),
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: p.mkdir(), "not a regular file"),
    (lambda p: open(p, "wb").truncate(2**40), "bytes"),
])
def test_unreadable_timestamps_never_block_and_are_reported(tmp_path, make, problem):
    from ste_course.late import LateError

    make(tmp_path / "timestamp.txt")
    with pytest.raises(LateError, match=problem):
        _policy().assess(ASSIGNMENT, tmp_path, 5.0, 5.0)


def test_an_unreadable_timestamp_is_in_the_rows_reason(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    folder = _submit(subs, "ann")
    (folder / "timestamp.txt").write_text("2026-12-02 00:00:01 /dev/zero")
    _grade(subs, out, late=_policy())
    row = _rows(out)["ann"]
    assert "timestamp.txt" in row["reason"] and row["late"] == "False"


# ------------------------------------------------------------------ class 2: only their own files
def test_links_at_every_level_are_not_the_students_work(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    _submit(subs, "ann")
    elsewhere = tmp_path / "elsewhere" / ASSIGNMENT
    elsewhere.mkdir(parents=True)
    (elsewhere / "SECRET-NAME.ipynb").write_text("{}")
    (subs / "linked-student").symlink_to(subs / "ann")
    (subs / "linked-assignment").mkdir()
    (subs / "linked-assignment" / ASSIGNMENT).symlink_to(subs / "ann" / ASSIGNMENT)
    (subs / "linked-elsewhere").mkdir()
    (subs / "linked-elsewhere" / ASSIGNMENT).symlink_to(elsewhere)
    folder = _submit(subs, "linked-notebook")
    (folder / NB).unlink()
    (folder / NB).symlink_to(subs / "ann" / ASSIGNMENT / NB)
    _grade(subs, out)
    rows = _rows(out)
    assert rows["ann"]["status"] == "ok"
    for student in ("linked-student", "linked-assignment", "linked-elsewhere", "linked-notebook"):
        assert rows[student]["status"] == "invalid", student
        assert "link" in rows[student]["reason"], rows[student]
        assert "SECRET-NAME" not in rows[student]["reason"]


def test_the_missing_reason_shows_file_names_escaped(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    _submit(subs, "ann", name=b"\xff\x1b[31mred.ipynb")
    _grade(subs, out)
    row = _rows(out)["ann"]
    assert row["status"] == "missing"
    assert "\x1b" not in row["reason"] and "\\xff\\x1b[31mred.ipynb" in row["reason"]


def test_every_folder_gets_rows_valid_text_under_its_own_name(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    good = ["ünïcödé", "with space", "李雷", "=HYPERLINK(\"x\")", "-minus", "o'neil"]
    bad = [b"\xffnot-utf8", "esc\x1b[2Jape", "tab\there", "back\\slash", "new\nline", "bidi\u202eevil"]
    for student in good + bad:
        _submit(subs, student)
    (subs / ".ipynb_checkpoints").mkdir()  # hidden folders are not students
    _grade(subs, out)
    from ste_course.untrusted import shown

    rows = _rows(out)
    assert len(rows) == len(good) + len(bad)
    for student in good:
        key = "'" + student if student[0] in "=-'" else student
        assert rows[key]["status"] == "ok", student  # graded (the replay has no evidence)
        assert (out / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").is_file()
    for student in bad:
        name = shown(os.fsdecode(student) if isinstance(student, bytes) else student)
        row = rows[name]
        assert row["status"] == "invalid" and "student id" in row["reason"], (student, row)
        assert all(ch.isprintable() for ch in name) and "/" not in name
    assert shown(os.fsdecode(b"\xffnot-utf8")) == "\\xffnot-utf8"


def test_grades_csv_neutralises_formulas_and_keeps_scores_numeric(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    for student in ("=1+1", "+cmd", "@SUM(A1)", "-2", "'quoted", "ann"):
        _submit(subs, student)
    _grade(subs, out)
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    ids = sorted(r[0] for r in rows[1:])
    assert ids == sorted(["'=1+1", "'+cmd", "'@SUM(A1)", "'-2", "''quoted", "ann"])
    assert all(r[3] == "0" and r[4] == "5" for r in rows[1:])
    from ste_course.export import export

    text, _ = export(out, "csv")
    exported = {r[0]: r for r in csv.reader(text.splitlines())}
    assert set(exported) == {"student_id", "'=1+1", "'+cmd", "'@SUM(A1)", "'-2", "''quoted", "ann"}
