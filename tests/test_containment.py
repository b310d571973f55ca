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

from ste_course.authoring.source import load_assignments
from ste_course.grading.late import LatePolicy
from ste_course.grading.run import grade
import ste_course.grading.steps as steps

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "adversarial" / "source"
ASSIGNMENT = "adv"
NB = f"{ASSIGNMENT}.ipynb"


@pytest.fixture(scope="module", autouse=True)
def _alembic_on_path():
    """nbgrader's gradebook runs ``alembic`` by name (the CLI puts this venv's bin/ first)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        yield


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


# ------------------------------------------------------------------ one hostile class
GOOD_IDS = ["ann", "ünïcödé", "with space", "李雷", "=HYPERLINK(\"x\")", "-minus", "o'neil", "+cmd",
            "@SUM(A1)", "'quoted"]
BAD_IDS = [b"\xffnot-utf8", "esc\x1b[2Jape", "tab\there", "back\\slash", "new\nline", "bidi\u202eevil"]
LINKED = ["linked-student", "linked-assignment", "linked-elsewhere", "linked-notebook"]


def _hostile_class(subs: Path, elsewhere: Path) -> None:
    """One folder per attack of classes 1, 2 and 7 beside the students in ``GOOD_IDS``."""
    for student in GOOD_IDS + BAD_IDS:
        _submit(subs, student)
    _submit(subs, "surrogate-source", _notebook("# \ud800 lone\n"))
    with open(_submit(subs, "huge") / NB, "r+b") as f:
        f.truncate(2**40)  # 1 TiB, sparse
    for name, make in (("fifo", os.mkfifo), ("dir", os.mkdir)):
        folder = _submit(subs, name)
        (folder / NB).unlink()
        make(folder / NB)
    (_submit(subs, "bad-timestamp") / "timestamp.txt").write_text("2026-12-02 00:00:01 /dev/zero")
    (_submit(subs, "late") / "timestamp.txt").write_text("2026-12-02 00:00:01.000000 UTC")
    _submit(subs, "renamed", name=b"\xff\x1b[31mred.ipynb")
    (subs / ".ipynb_checkpoints").mkdir()  # hidden folders are not students
    (elsewhere / ASSIGNMENT).mkdir(parents=True)
    (elsewhere / ASSIGNMENT / "SECRET-NAME.ipynb").write_text("{}")
    (subs / "linked-student").symlink_to(subs / "ann")
    (subs / "linked-assignment").mkdir()
    (subs / "linked-assignment" / ASSIGNMENT).symlink_to(subs / "ann" / ASSIGNMENT)
    (subs / "linked-elsewhere").mkdir()
    (subs / "linked-elsewhere" / ASSIGNMENT).symlink_to(elsewhere / ASSIGNMENT)
    folder = _submit(subs, "linked-notebook")
    (folder / NB).unlink()
    (folder / NB).symlink_to(subs / "ann" / ASSIGNMENT / NB)


@pytest.fixture(scope="module")
def klass(tmp_path_factory, _alembic_on_path):
    root = tmp_path_factory.mktemp("hostile-class")
    subs, out = root / "subs", root / "out"
    _hostile_class(subs, root / "elsewhere")
    replay = Replay(lambda run: _ended(run, "printed \ud800 and \udcff"))
    results = _grade(subs, out, replay, late=_policy())
    rerun = Replay()
    _grade(subs, out, rerun, late=_policy())  # nothing changed: nothing runs again
    return dict(out=out, results={r.student: r for r in results}, rows=_rows(out), rerun=rerun)


def _policy():
    return LatePolicy(due={ASSIGNMENT: LatePolicy.parse_time("2026-12-01 23:59:00")}, penalty_per_day=0.1)


def _feedback(out, student):
    return (out / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text(encoding="utf-8")


def test_lone_surrogates_in_output_and_source_are_data(klass):
    assert klass["rows"]["surrogate-source"]["status"] == klass["rows"]["ann"]["status"] == "ok"
    assert "printed \ufffd and \ufffd" in _feedback(klass["out"], "ann")
    assert "# \ufffd lone" in _feedback(klass["out"], "surrogate-source")
    assert klass["rerun"].runs == []  # re-run: already graded from the same files


def test_a_huge_sparse_notebook_is_not_read(klass):
    row = klass["rows"]["huge"]
    assert row["status"] == "invalid" and "limit" in row["reason"]


def test_a_notebook_that_is_a_fifo_or_a_folder_is_invalid_and_never_blocks(klass):
    rows = klass["rows"]
    assert rows["fifo"]["status"] == rows["dir"]["status"] == "invalid"
    assert "not a regular file" in rows["fifo"]["reason"]


def test_an_unreadable_timestamp_is_in_the_rows_reason(klass):
    row, late = klass["rows"]["bad-timestamp"], klass["rows"]["late"]
    assert "timestamp.txt" in row["reason"] and "/dev/zero" in row["reason"] and row["late"] == "False"
    assert late["late"] == "True" and late["reason"] == ""


def test_links_at_every_level_are_not_the_students_work(klass):
    rows = klass["rows"]
    for student in LINKED:
        assert rows[student]["status"] == "invalid", student
        assert "link" in rows[student]["reason"], rows[student]
        assert "SECRET-NAME" not in rows[student]["reason"]


def test_the_missing_reason_shows_file_names_escaped(klass):
    row = klass["rows"]["renamed"]
    assert row["status"] == "missing"
    assert "\x1b" not in row["reason"] and "\\xff\\x1b[31mred.ipynb" in row["reason"]


def test_every_folder_gets_rows_valid_text_under_its_own_name(klass):
    from ste_course.untrusted import cell, shown

    rows = klass["rows"]
    others = ["surrogate-source", "huge", "fifo", "dir", "bad-timestamp", "late", "renamed"]
    assert len(rows) == len(GOOD_IDS) + len(BAD_IDS) + len(LINKED) + len(others)
    for student in GOOD_IDS:
        assert rows[cell(student)]["status"] == "ok", student  # graded (the replay has no evidence)
        assert klass["results"][student].status == "ok"
        assert "printed" in _feedback(klass["out"], student)
    for student in BAD_IDS:
        name = shown(student)
        row = rows[name]
        assert row["status"] == "invalid" and "student id" in row["reason"], (student, row)
        assert all(ch.isprintable() for ch in name) and "/" not in name
    assert shown(b"\xffnot-utf8") == "\\xffnot-utf8"


def test_grades_csv_neutralises_formulas_and_keeps_scores_numeric(klass):
    with open(klass["out"] / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    ids = {r[0] for r in rows[1:]}
    assert {"'=HYPERLINK(\"x\")", "'+cmd", "'@SUM(A1)", "'-minus", "''quoted", "o'neil"} <= ids
    assert not any(i.startswith(("=", "+", "-", "@", "\t", "\r")) for i in ids)
    assert all(r[3] == "0" and r[4] == "5" for r in rows[1:])
    from ste_course.record.export import export

    text, _ = export(klass["out"], "csv")
    exported = {r[0] for r in csv.reader(text.splitlines())}
    assert exported == ids | {"student_id"}


def test_the_summary_on_the_terminal_is_escaped(klass, capsys):
    from ste_course.cli.commands import _summary

    _summary(klass["out"] / "grades.csv", 0)
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\u202e" not in shown and "\\x1b[2Jape" in shown


# ------------------------------------------------------------------ failures in the parent
def test_a_failure_in_the_parent_is_that_notebooks_error_row_and_a_rerun_grades_it_again(tmp_path, monkeypatch):
    subs, out = tmp_path / "subs", tmp_path / "out"
    for student in ("ann", "bob", "cat"):
        _submit(subs, student)
    real_judge = steps.judge

    def judge(source, plan, events, reason):
        if any("bob" in str(e.get("stdout")) for e in events):
            raise RuntimeError("the judge broke on bob")
        return real_judge(source, plan, events, reason)

    monkeypatch.setattr(steps, "judge", judge)
    replay = Replay(lambda run: _ended(run, run["id"]))
    _grade(subs, out, replay)
    rows = _rows(out)
    assert set(rows) == {"ann", "bob", "cat"}
    assert rows["bob"]["status"] == "error" and "the judge broke on bob" in rows["bob"]["reason"]
    assert rows["ann"]["status"] == rows["cat"]["status"] == "ok"
    monkeypatch.setattr(steps, "judge", real_judge)
    replay = Replay()
    _grade(subs, out, replay)  # no --force: only the error row is graded again
    assert [run["id"].split("/")[0] for run in replay.runs] == ["bob"]
    assert _rows(out)["bob"]["status"] == "ok"


def test_a_failed_file_write_never_turns_a_committed_grade_into_an_error_row(tmp_path, monkeypatch, capsys):
    """Issue 22, item 2: the grade is committed before its files; a page that cannot be written is
    said on stderr as such (never "could not record"), and the next plain run writes it."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    for student in ("ann", "bob"):
        _submit(subs, student)
    from ste_course.record import recorder as record

    real = record.atomic_write
    failed = []

    def atomic_write(path, text, *args, **kwargs):
        if "feedback" in Path(path).parts and "ann" in Path(path).parts:
            failed.append(path)
            raise OSError("disk full while writing ann's feedback")
        return real(path, text, *args, **kwargs)

    monkeypatch.setattr(record, "atomic_write", atomic_write)
    _grade(subs, out)
    rows = _rows(out)
    assert failed and rows["ann"]["status"] == rows["bob"]["status"] == "ok"
    err = capsys.readouterr().err
    assert "ann/adv/adv is recorded in the gradebook, but its files could not be written" in err
    assert "could not record" not in err
    page = out / "feedback" / "ann" / ASSIGNMENT / f"{ASSIGNMENT}.html"
    assert not page.exists() and not list(out.rglob(".*.html.*"))  # no temporary file left either
    monkeypatch.setattr(record, "atomic_write", real)
    replay = Replay()
    _grade(subs, out, replay)
    assert replay.runs == [] and page.is_file() and not list((out / ".journal").iterdir())


# ------------------------------------------------------------------ late work
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
    # zone names are read as nbgrader reads them (issue 23); not every word is a zone, nor a path
    (lambda p: p.write_text("2026-12-02 00:00:01 Mars/Olympus"), "not a zone"),
    (lambda p: p.write_text("2026-12-02 00:00:01 ../../../proc/kmsg"), "not a"),
    (lambda p: p.write_text("2026-12-02 00:00:01 PST"), "abbreviation"),
    (lambda p: p.write_text("tomorrow"), "not a time"),
    (lambda p: p.write_bytes(b"\xff\xfe 2026"), "not a time"),
    (lambda p: p.symlink_to("/proc/kmsg"), "is a link"),
    (lambda p: p.symlink_to("/dev/zero"), "is a link"),
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: p.mkdir(), "not a regular file"),
    (lambda p: open(p, "wb").truncate(2**40), "bytes"),
])
def test_unreadable_timestamps_never_block_and_are_reported(tmp_path, make, problem):
    from ste_course.grading.late import LateError

    make(tmp_path / "timestamp.txt")
    with pytest.raises(LateError, match=problem):
        _policy().assess(ASSIGNMENT, tmp_path, 5.0, 5.0)


