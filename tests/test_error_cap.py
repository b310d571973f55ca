"""A notebook that keeps ending in ``error`` (e.g. a student who tampers with the event channel)
is not paid for by every plain run: after :data:`~ste_course.record.gradebook.ERROR_CAP` errors
in a row with the same submission and grading inputs, a plain run leaves it as it is (the
earlier grade stands) until ``--retry-errors``, ``--force`` or a change of its inputs. The count
lives in the gradebook's status row, so it survives a crash like the rest of the record. A
replay executor answers for the workers (no sandbox, no TensorFlow).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import sys
from pathlib import Path

from ste_course.record import gradebook
from ste_course.sandbox import Limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from classroom import make_class  # noqa: E402
from test_crash_consistency import Answers, _grade  # noqa: E402
from test_record_integrity import _class, _csv, _environment, broken_source  # noqa: E402, F401 - _environment: autouse fixture

CAPPED = ("ended in an error 3 times with the same submission and grader; "
          "`ste-course grade --retry-errors` grades it again")


class Tampered(Answers):
    """The workers, replayed; ``student``'s notebook ends as one that wrote on the grader's event
    channel does: an infrastructure ``error``."""

    def __init__(self, student: str = "ann"):
        super().__init__()
        self.student = student

    def run_all(self, runs, on_result):
        def answer(index, result):
            if result["id"].split("/")[0] == self.student:
                result = {"id": result["id"], "status": "error", "events": [], "seconds": 0.1,
                          "reason": "the notebook wrote on the grader's event channel"}
            on_result(index, result)

        super().run_all(runs, answer)


def _runs(subs, out, solutions, **kwargs) -> list:
    """One run with ann's notebook erroring: the students whose notebooks were run."""
    executor = Tampered()
    _grade(subs, out, solutions, executor=executor, **kwargs)
    return [r.split("/")[0] for r in executor.runs]


def test_an_erroring_notebook_is_run_3_times_over_5_plain_runs_then_retry_errors_runs_it(tmp_path, capsys):
    from ste_course.cli.commands import _summary

    solutions, subs, out = _class(tmp_path, {"ann": "complete", "bob": "complete"})
    _grade(subs, out, solutions, limits=Limits())  # ann's earlier grade, with other limits than the runs below
    earlier = _csv(out)["ann"]
    assert earlier["status"] == "ok" and float(earlier["score"]) > 0
    runs = [_runs(subs, out, solutions) for _ in range(5)]
    assert runs == [["ann", "bob"], ["ann"], ["ann"], [], []]  # bob grades; ann errors 3 times, then is left
    row = _csv(out)["ann"]
    assert row["status"] == "error" and CAPPED in row["reason"], row
    assert "the grade recorded before stands" in row["reason"]
    assert (row["score"], row["raw_score"]) == (earlier["score"], earlier["raw_score"])  # the earlier grade stands
    assert sum(CAPPED in r["reason"] for r in _csv(out).values()) == 1  # grades.csv says which, so how many
    _summary(out / "grades.csv", 0)
    said = capsys.readouterr().out
    assert "1 notebook left at the error cap" in said and "--retry-errors" in said, said

    assert _runs(subs, out, solutions, retry_errors=True) == ["ann"]
    assert _runs(subs, out, solutions, force=True) == ["ann", "bob"]  # --force grades everything
    assert _runs(subs, out, solutions) == []  # still the same inputs, still erroring: left again
    assert _csv(out)["ann"]["score"] == earlier["score"]


def test_a_changed_submission_or_limits_reset_the_count(tmp_path):
    solutions, subs, out = _class(tmp_path, {"ann": "complete"})
    assert [_runs(subs, out, solutions) for _ in range(4)] == [["ann"]] * 3 + [[]]
    make_class(solutions, subs, {"ann": "blank"})  # new bytes
    assert [_runs(subs, out, solutions) for _ in range(4)] == [["ann"]] * 3 + [[]]
    assert CAPPED in _csv(out)["ann"]["reason"]
    raised = Limits(cell_seconds=120.0)  # a change of the grading inputs
    assert _runs(subs, out, solutions, limits=raised) == ["ann"]
    assert CAPPED not in _csv(out)["ann"]["reason"]  # one error with these inputs
    _grade(subs, out, solutions, limits=raised)  # the notebook grades: the count is gone
    assert _csv(out)["ann"]["status"] == "ok"
    assert [_runs(subs, out, solutions, limits=raised) for _ in range(2)] == [[], []]  # graded: not run
    make_class(solutions, subs, {"ann": "complete"})
    assert [_runs(subs, out, solutions, limits=raised) for _ in range(4)] == [["ann"]] * 3 + [[]]


def _killed_after_commit(subs, out, solutions) -> None:
    """A run whose process is SIGKILLed right after its gradebook commit."""
    real = gradebook.write_batch

    def write_batch(*args, **kwargs):
        written = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return written

    gradebook.write_batch = write_batch
    _grade(subs, out, solutions, executor=Tampered())


def test_the_count_survives_a_crash(tmp_path):
    solutions, subs, out = _class(tmp_path, {"ann": "complete"})
    assert _runs(subs, out, solutions) == ["ann"]
    child = multiprocessing.get_context("fork").Process(target=_killed_after_commit, args=(subs, out, solutions))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert [_runs(subs, out, solutions) for _ in range(3)] == [["ann"], [], []]  # the killed run counted
    assert CAPPED in _csv(out)["ann"]["reason"]


def test_an_old_gradebook_without_the_count_is_migrated(tmp_path):
    solutions, subs, out = _class(tmp_path, {"ann": "complete", "bob": "complete"})
    _grade(subs, out, solutions, limits=Limits())
    db = out / "gradebook.db"
    with sqlite3.connect(db) as con:  # the table as the grader before the cap made it
        con.execute("CREATE TABLE old AS SELECT student, assignment, notebook, status, reason, late, hours_late, "
                    "inputs, submission_sha256 FROM ste_course_result")
        con.execute("DROP TABLE ste_course_result")
        con.execute("CREATE TABLE ste_course_result (student VARCHAR(128) NOT NULL, assignment VARCHAR(128) NOT NULL, "
                    "notebook VARCHAR(128) NOT NULL, status VARCHAR(16) NOT NULL, reason TEXT NOT NULL, "
                    "late VARCHAR(8) NOT NULL, hours_late FLOAT, inputs VARCHAR(64) NOT NULL, "
                    "submission_sha256 VARCHAR(64) NOT NULL, PRIMARY KEY (student, assignment, notebook))")
        con.execute("INSERT INTO ste_course_result SELECT * FROM old")
        con.execute("DROP TABLE old")
    before = _csv(out)
    assert [_runs(subs, out, solutions) for _ in range(4)] == [["ann", "bob"], ["ann"], ["ann"], []]
    after = _csv(out)
    assert after["bob"]["score"] == before["bob"]["score"] and after["ann"]["score"] == before["ann"]["score"]
    with sqlite3.connect(db) as con:
        columns = [r[1] for r in con.execute("PRAGMA table_info(ste_course_result)")]
        assert columns[-2:] == ["errors", "error_inputs"]
        assert dict(con.execute("SELECT student, errors FROM ste_course_result")) == {"ann": 3, "bob": 0}


def test_an_error_planned_without_a_run_is_left_at_the_cap_too(tmp_path):
    """An error found before any run (here: a mistake in solutions/) is not written again once at
    the cap: its row and count stay as they are; fixing the source grades it."""
    solutions, subs, out = _class(tmp_path, {"ann": "complete"})
    path, good = solutions / "ps1" / "ps1.ipynb", broken_source(solutions)
    db = out / "gradebook.db"
    counts = []
    for _ in range(4):
        _grade(subs, out, solutions)
        with sqlite3.connect(db) as con:
            counts.append(con.execute("SELECT status, errors, reason FROM ste_course_result").fetchone())
    assert [c[:2] for c in counts] == [("error", 1), ("error", 2), ("error", 3), ("error", 3)]
    assert CAPPED in counts[3][2] and counts[3] == counts[2]
    path.write_text(good)
    _grade(subs, out, solutions)
    assert _csv(out)["ann"]["status"] == "ok"


def test_an_old_postgresql_gradebook_is_migrated():
    from sqlalchemy import create_engine

    from test_postgres import Server

    from ste_course.record.recorder import gradebook_url

    server = Server()
    try:
        server.start()
        url = gradebook_url(server.create_database("old"))
        gradebook.open_gradebook(url).close()
        server.execute("ALTER TABLE ste_course_result DROP COLUMN errors, DROP COLUMN error_inputs", "old")
        server.execute("INSERT INTO ste_course_result VALUES ('ann', 'ps1', 'ps1', 'ok', '', 'no', NULL, 'f', 's')", "old")
        engine = create_engine(url)
        try:
            gradebook._migrate(engine)
            gradebook._migrate(engine)  # a second opener finds them there
        finally:
            engine.dispose()
        gb = gradebook.open_gradebook(url)
        try:
            row = gradebook.previous(gb, "ann", "ps1", "ps1")
            assert (row["status"], row["errors"], row["error_inputs"]) == ("ok", 0, "")
        finally:
            gb.close()
    finally:
        server.stop()
