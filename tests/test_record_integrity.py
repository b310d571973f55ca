"""Issue 22, item by item (the crash tests are tests/test_crash_consistency.py): an error never
replaces a grade; hand edits go only with --drop-manual or new bytes, and are then listed; the
evidence is that of the gradebook's submission; an executor that cannot start ends the run at
once; the re-grade fingerprint covers every input of a grade; backups of the database in use,
pruned; grades.csv never hides the error that stopped a run; the Dask executor forgets what it
handed on. A replay executor answers for the workers (no sandbox, no TensorFlow in this process)
except where a real worker or the command line is the point.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from ste_course.authoring.source import load_assignments
import ste_course.grading.fingerprint as fingerprint
import ste_course.grading.run as run
import ste_course.grading.steps as steps
from ste_course.grading.executors import LocalExecutor
from ste_course.grading.jobs import GradeError
from ste_course.sandbox import Limits

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from classroom import make_class  # noqa: E402
from test_crash_consistency import Answers, _grade, _hand_edits, _page  # noqa: E402


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    import ste_course.record.feedback as feedback
    import ste_course.record.recorder as recorder

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    frozen = fingerprint.code_fingerprint()
    monkeypatch.setattr(run, "code_fingerprint", lambda root=None: frozen)
    monkeypatch.setattr(feedback, "render_feedback", _page)  # pages are not what is tested here
    monkeypatch.setattr(recorder, "render_feedback", _page)


def _class(tmp_path: Path, plan=None) -> tuple:
    solutions = tmp_path / "solutions"
    shutil.copytree(HERE / "fixtures" / "byo", solutions)
    subs, out = tmp_path / "subs", tmp_path / "out"
    make_class(solutions, subs, plan or {"ann": "complete", "bob": "blank", "cat": "complete"})
    return solutions, subs, out


def broken_source(solutions: Path) -> str:
    """Make a mistake in the fixture's ``solutions/`` (a check that does not exist); returns the
    notebook's text before it, to put back."""
    path = solutions / "ps1" / "ps1.ipynb"
    good = path.read_text()
    nb = json.loads(good)
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "correct_squares":
            cell["source"] = "check(squares, 'no/such-check')\n"
    path.write_text(json.dumps(nb))
    return good


def _csv(out: Path) -> dict:
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


def _hand(out: Path, student: str) -> tuple:
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        nb = gb.find_submission_notebook("ps1", "ps1", student)
        return (sorted((g.name, g.auto_score, g.manual_score, g.extra_credit) for g in nb.grades),
                sorted((c.name, c.manual_comment) for c in nb.comments), nb.score)


# ------------------------------------------------------------------ 1. an error never replaces a grade
def test_an_error_row_keeps_the_grade_and_the_hand_edits_and_the_next_run_grades_it(tmp_path, monkeypatch):
    solutions, subs, out = _class(tmp_path)
    _grade(subs, out, solutions)
    _hand_edits(out)
    before = {s: _hand(out, s) for s in ("ann", "bob", "cat")}

    real = steps.judge

    def broken(*args):
        raise RuntimeError("the judge broke")

    monkeypatch.setattr(steps, "judge", broken)  # every notebook in flight gets an error
    _grade(subs, out, solutions, force=True)
    rows = _csv(out)
    assert {s: r["status"] for s, r in rows.items()} == {"ann": "error", "bob": "error", "cat": "error"}
    assert "the judge broke" in rows["ann"]["reason"] and "the grade recorded before stands" in rows["ann"]["reason"]
    assert {s: _hand(out, s) for s in before} == before  # points, manual scores, extra credit, comments
    assert float(rows["ann"]["score"]) == before["ann"][2] > 0

    # a mistake in solutions/: the whole class's rows are errors, no grade is lost
    monkeypatch.setattr(steps, "judge", real)
    path, good = solutions / "ps1" / "ps1.ipynb", broken_source(solutions)
    assert load_assignments(solutions)["ps1"][0].problems
    _grade(subs, out, solutions)
    assert {s: r["status"] for s, r in _csv(out).items()} == {"ann": "error", "bob": "error", "cat": "error"}
    assert "the assignment's source is invalid" in _csv(out)["cat"]["reason"]
    assert {s: _hand(out, s) for s in before} == before
    path.write_text(good)
    _grade(subs, out, solutions)  # the plain next run grades the errors again
    assert {s: r["status"] for s, r in _csv(out).items()} == {"ann": "ok", "bob": "ok", "cat": "ok"}
    assert {s: _hand(out, s) for s in before} == before


def test_an_error_after_new_bytes_says_the_grade_is_of_an_earlier_version(tmp_path, monkeypatch):
    solutions, subs, out = _class(tmp_path, {"ann": "blank"})
    _grade(subs, out, solutions)
    _hand_edits_ann = _hand(out, "ann")
    make_class(solutions, subs, {"ann": "complete"})
    monkeypatch.setattr(steps, "judge", lambda *a: (_ for _ in ()).throw(RuntimeError("the judge broke")))
    _grade(subs, out, solutions)
    row = _csv(out)["ann"]
    assert row["status"] == "error" and "of an earlier version of the submission" in row["reason"]
    assert _hand(out, "ann") == _hand_edits_ann


def test_hand_edits_go_only_with_drop_manual_or_new_bytes_and_are_listed(tmp_path, capsys):
    from ste_course.cli.commands import _dropped_summary

    solutions, subs, out = _class(tmp_path)
    _grade(subs, out, solutions)
    _hand_edits(out)
    kept = _grade(subs, out, solutions, force=True)  # the same bytes: kept
    assert kept.dropped == [] and _hand(out, "ann")[0][-1][2] == 0.5
    make_class(solutions, subs, {"bob": "complete"})  # bob's bytes changed
    changed = _grade(subs, out, solutions)
    assert [(d.student, d.why) for d in changed.dropped] == [("bob", "submission changed")]
    assert "hand edits dropped, the submission changed" in _csv(out)["bob"]["reason"]
    dropped = _grade(subs, out, solutions, force=True, drop_manual=True)
    assert sorted((d.student, d.why) for d in dropped.dropped) == [("ann", "asked with --drop-manual"), ("cat", "asked with --drop-manual")]
    _dropped_summary(out, dropped.dropped)
    said = capsys.readouterr().out
    assert "hand edits dropped in 2 notebook(s)" in said and "ann/ps1/ps1" in said and "hand_edits_dropped.csv" in said
    with open(out / "hand_edits_dropped.csv", newline="", encoding="utf-8") as f:
        report = list(csv.DictReader(f))
    assert [(r["student_id"], r["why"]) for r in report] == [
        ("bob", "submission changed"), ("ann", "asked with --drop-manual"), ("cat", "asked with --drop-manual")]
    assert "comment 'Half: the cost is right, say why.'" in report[1]["dropped"]  # the values, kept here only


# ------------------------------------------------------------------ 2./3. files of the gradebook's grade
def test_missing_evidence_grades_again_and_a_missing_page_is_rendered_again(tmp_path):
    solutions, subs, out = _class(tmp_path)
    _grade(subs, out, solutions)
    (out / "results" / "ann" / "ps1" / "ps1.json").unlink()
    (out / "feedback" / "bob" / "ps1" / "ps1.html").unlink()
    (out / "autograded" / "cat" / "ps1" / "ps1.ipynb").unlink()
    replay = Answers()
    _grade(subs, out, solutions, executor=replay)
    assert [r.split("/")[0] for r in replay.runs] == ["ann"]  # only the evidence needs the notebook run
    for path in ("results/ann/ps1/ps1.json", "feedback/bob/ps1/ps1.html", "autograded/cat/ps1/ps1.ipynb"):
        assert (out / path).is_file(), path


def test_evidence_of_another_version_is_not_shown_beside_the_gradebooks_scores(tmp_path):
    from ste_course.record.recorder import refresh_feedback

    solutions, subs, out = _class(tmp_path, {"ann": "complete"})
    _grade(subs, out, solutions)
    evidence = out / "results" / "ann" / "ps1" / "ps1.json"
    data = json.loads(evidence.read_text())
    data["submission_sha256"] = "0" * 64  # evidence left by a run of an earlier submission
    evidence.write_text(json.dumps(data))
    done = refresh_feedback(out)
    assert len(done.problems) == 1 and "another version of the submission" in done.problems[0]


# ------------------------------------------------------------------ 4. fail fast
def test_a_cluster_out_of_reach_ends_the_run_in_seconds_with_one_line_and_exit_2(tmp_path):
    solutions, subs, out = _class(tmp_path, {"ann": "complete"})
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ste_course.cli", "--solutions", str(solutions), "grade", str(subs),
                           "--out", str(out), "--cluster", "tcp://typo:8786", "--insecure-cluster", "--no-sandbox", "--judges", "0",
                           "--secret-file", str(tmp_path / "secret"), "--config", str(tmp_path / "none.toml")],
                          capture_output=True, text=True, timeout=100, cwd=tmp_path,
                          env=dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"))
    seconds = time.monotonic() - started
    lines = [line for line in done.stderr.splitlines() if line.startswith("ste-course grade:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and "typo:8786" in lines[0] and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert seconds < 60, seconds  # Python, TensorFlow's import for the checks, then a refused name
    assert not (out / "gradebook.db").exists()  # nothing recorded


def test_a_refused_scheduler_is_said_at_once(tmp_path):
    from ste_course.grading.distributed import DaskExecutor

    solutions, subs, out = _class(tmp_path, {"ann": "complete"})
    started = time.monotonic()
    with pytest.raises(GradeError, match="127.0.0.1:9.*refused"):
        _grade(subs, out, solutions, executor=DaskExecutor("tcp://127.0.0.1:9", 1, sandbox=False))
    assert time.monotonic() - started < 15 and not out.exists()


def test_workers_that_cannot_start_end_the_run_without_a_grade(tmp_path, monkeypatch):
    from ste_course.sandbox import Worker, WorkerError

    solutions, subs, out = _class(tmp_path)

    def start(self, probe=False):
        raise WorkerError("bubblewrap could not start the sandbox: bwrap: No permissions to create new namespace")

    monkeypatch.setattr(Worker, "start", start)
    started = time.monotonic()
    with pytest.raises(GradeError, match="grading worker 0 could not start on this machine: WorkerError: bubblewrap"):
        _grade(subs, out, solutions, executor=LocalExecutor(2, True, Limits()))
    assert time.monotonic() - started < 20
    assert {r["status"] for r in _csv(out).values()} <= {"missing", "invalid"}  # no notebook that ran: no row


# ------------------------------------------------------------------ 5. the fingerprint covers every input
def test_raised_limits_grade_again(tmp_path):
    solutions, subs, out = _class(tmp_path, {"ann": "complete"})
    for limits, expected in ((Limits(), ["ann"]), (Limits(), []), (Limits(cell_seconds=120.0), ["ann"])):
        replay = Answers()
        _grade(subs, out, solutions, executor=replay, limits=limits)
        assert [r.split("/")[0] for r in replay.runs] == expected


def test_the_assignment_is_fingerprinted_as_the_run_read_it(tmp_path):
    """solutions/ edited while a run grades: the run's grades are of what it read, and the next
    run sees they are stale."""
    solutions, subs, out = _class(tmp_path, {"ann": "complete"})
    sources = load_assignments(solutions)  # the run's snapshot
    path = solutions / "ps1" / "ps1.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"][0]["source"] = "# Problem set 1, edited during the run\n"
    path.write_text(json.dumps(nb))  # after the snapshot, before the notebooks are planned
    run.grade(subs, out, sources, "secret", sandbox=False, progress=False, executor=Answers())
    replay = Answers()
    _grade(subs, out, solutions, executor=replay)
    assert [r.split("/")[0] for r in replay.runs] == ["ann"]


def test_the_code_fingerprint_covers_how_a_grade_is_concluded_and_not_the_command_line(tmp_path, monkeypatch):
    monkeypatch.undo()
    for package in fingerprint.GRADING_PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    first = fingerprint.code_fingerprint(tmp_path)
    for unrelated in ("cli/commands.py", "classroom/hub.py", "record/export.py"):
        with open(tmp_path / "ste_course" / unrelated, "a") as f:
            f.write("\n# words\n")
    assert fingerprint.code_fingerprint(tmp_path) == first
    seen = {first}
    for graded in ("grading/steps.py", "grading/late.py", "grading/judges.py", "untrusted.py", "sandbox.py"):
        with open(tmp_path / "ste_course" / graded, "a") as f:
            f.write("\n# a changed rule\n")
        seen.add(fingerprint.code_fingerprint(tmp_path))
    assert len(seen) == 6


def test_a_declared_reference_outside_the_checks_folder_is_fingerprinted(tmp_path):
    (tmp_path / "checks").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "checks" / "levels.toml").write_text('[levels]\nkind = "scalar"\nreference = "../lib/refs.py:levels"\n')
    (tmp_path / "lib" / "refs.py").write_text("def levels():\n    return 4\n")
    first = fingerprint.checks_fingerprint(tmp_path / "checks")
    (tmp_path / "lib" / "refs.py").write_text("def levels():\n    return 8\n")
    assert fingerprint.checks_fingerprint(tmp_path / "checks") != first


# ------------------------------------------------------------------ 6. files, backups, the csv, Dask
def test_the_backup_is_of_the_database_in_use_and_the_last_few_are_kept(tmp_path, monkeypatch):
    import ste_course.record.recorder as recorder

    KEEP_BACKUPS = 2
    monkeypatch.setattr(recorder, "KEEP_BACKUPS", KEEP_BACKUPS)
    solutions, subs, out = _class(tmp_path, {"ann": "complete"})
    db = tmp_path / "other.db"
    for _ in range(KEEP_BACKUPS + 2):
        _grade(subs, out, solutions, db_url=f"sqlite:///{db}", force=True)
    backups = sorted((out / "backups").iterdir())
    assert [p.name.split("-")[0] for p in backups] == ["other"] * KEEP_BACKUPS
    with sqlite3.connect(backups[-1]) as copy:
        assert copy.execute("select status from ste_course_result").fetchall() == [("ok",)]
    assert not (out / "gradebook.db").exists()


def test_a_failing_grades_csv_never_hides_what_stopped_the_run(tmp_path, monkeypatch):
    import ste_course.record.recorder as recorder

    solutions, subs, out = _class(tmp_path, {"ann": "complete"})

    def interrupted(self, items):
        raise KeyboardInterrupt  # the instructor's Ctrl-C while recording

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder.Recorder, "record_batch", interrupted)
    monkeypatch.setattr(recorder, "write_grades_csv", full)
    with pytest.raises(KeyboardInterrupt):
        _grade(subs, out, solutions)


def test_the_dask_executor_keeps_nothing_per_delivered_result():
    from ste_course.grading.distributed import DaskExecutor

    executor = DaskExecutor("local", 1, sandbox=False)
    handed = []
    executor._on_result = lambda index, result: handed.append(index)
    executor._runs = {}
    for index in range(5000):
        executor._runs[index] = {"id": f"s{index}/a/n"}
        executor._deliver([(index, {"id": f"s{index}/a/n", "status": "ok"})])
    assert len(handed) == 5000 and executor.delivered == 5000
    sizes = {name: len(value) for name, value in vars(executor).items() if isinstance(value, (set, dict, list))}
    assert max(sizes.values(), default=0) < 100, sizes
