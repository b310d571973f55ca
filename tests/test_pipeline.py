"""The streaming window (``ste_course.grading.pipeline``), with made-up judges and executors: bounded,
lazy, every notebook recorded exactly once, failures are rows, threaded and synchronous
executors alike, results that queue up are flushed in batches; and the recording path: the page
a judge renders is byte for byte the recorder's, a batch is one transaction."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from ste_course.authoring.source import load_assignments
from ste_course.grading.judges import with_page
from ste_course.grading.pipeline import MIN_WINDOW, Pipeline
from ste_course.record import gradebook
from ste_course.record.recorder import NotebookResult, Recorder, feedback_file


class Judges:
    """Plans every job as a run (or a result for jobs named ``missing*``); judges by echoing."""

    def __init__(self, fail=()):
        self.fail = set(fail)

    def plan(self, job, reply):
        if job.startswith("missing"):
            return reply(("result", f"{job}: missing"))
        reply(("run", {"id": job}, f"ticket-{job}"))

    def judge(self, job, ticket, payload, reply):
        threading.Thread(target=lambda: reply(RuntimeError("boom") if job in self.fail else
                                              f"{job}: {ticket} {payload['answer']}")).start()


class Threaded:
    """Two worker threads pulling from the lazy feed (as ``LocalExecutor``)."""

    def capacity(self):
        return 2

    def run_all(self, runs, on_result):
        source, lock = enumerate(runs), threading.Lock()

        def work():
            while True:
                with lock:
                    index, run = next(source, (None, None))
                if run is None:
                    return
                on_result(index, {"answer": run["id"].upper()})

        self.threads = [threading.Thread(target=work) for _ in range(2)]
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join()


class Synchronous:
    """Answers in ``run_all`` itself (as the test doubles of other suites)."""

    def run_all(self, runs, on_result):
        for index, run in enumerate(runs):
            on_result(index, {"answer": run["id"].upper()})

    def join(self):
        pass


def _lazy(names, taken):
    for name in names:
        taken.append(name)
        yield name


@pytest.mark.parametrize("executor", [Threaded, Synchronous])
def test_every_notebook_recorded_once_within_a_bounded_window(executor):
    names = [f"s{i}" for i in range(500)] + ["missing1", "skip1", "skip2"]
    taken, recorded, alive_at_record = [], [], []
    pipeline = Pipeline(_lazy(names, taken), Judges(), executor(), wanted=lambda job, t: not job.startswith("skip"),
                        record=lambda job, result: (recorded.append((job, result)),
                                                    alive_at_record.append(len(taken) - len(recorded))),
                        failed=lambda job, stage, err: f"{job}: error {err}")
    assert pipeline.run() == 501
    assert sorted(job for job, _ in recorded) == sorted(n for n in names if not n.startswith("skip"))
    assert dict(recorded)["s7"] == "s7: ticket-s7 S7" and dict(recorded)["missing1"] == "missing1: missing"
    assert pipeline.peak <= pipeline.limit() == MIN_WINDOW
    # lazy: the first grade was recorded when only a window's worth of jobs had been taken
    assert alive_at_record[0] <= MIN_WINDOW and len(taken) == len(names)


def test_a_failing_judge_is_that_notebooks_row_and_the_run_goes_on():
    recorded = {}
    Pipeline(iter(["a", "b", "c"]), Judges(fail={"b"}), Threaded(), wanted=lambda job, t: True,
             record=recorded.__setitem__, failed=lambda job, stage, err: f"error while {stage}: {err}").run()
    assert recorded == {"a": "a: ticket-a A", "b": "error while judging: boom", "c": "c: ticket-c C"}


def test_nothing_to_run_never_starts_the_executor():
    class Refuses:
        def run_all(self, runs, on_result):
            raise AssertionError("started")

    recorded = []
    Pipeline(iter(["x", "y"]), Judges(), Refuses(), wanted=lambda job, t: False,
             record=lambda job, result: recorded.append(job), failed=None).run()
    assert recorded == []


def test_the_window_follows_the_executors_capacity():
    class Big(Threaded):
        def capacity(self):
            return 40

    assert Pipeline(iter([]), Judges(), Big(), None, None, None).limit() == 120


# ---------------------------------------------------------------- recording: pages and batches
# A real gradebook (SQLite) and the bring-your-own fixture (asserts, a hidden block, a written
# answer); results made by hand, so no sandbox and no TensorFlow: about two seconds.
FIXTURE = Path(__file__).parent / "fixtures" / "byo"


@pytest.fixture()
def recorder(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    sources = load_assignments(FIXTURE)
    rec = Recorder(tmp_path / "out", None, sources)
    yield rec, sources["ps1"][0]
    rec.close()


def _result(student, points=(1.0, 0.0, 2.0)):
    cells = [{"grade_id": gid, "points": p, "max_points": m, "messages": [f"{gid}: {p:g} <b>x</b>"]}
             for gid, p, m in zip(("correct_squares", "squares_invalid_input", "correct_sum_of_squares"),
                                  points, (1.0, 1.0, 2.0))]
    cells.append({"grade_id": "why", "points": 0.0, "max_points": 1.0, "messages": [], "manual": True})
    feedback = [{"kind": "markdown", "text": "Squares: $x^2$ and $$\\sum_i x_i^2$$", "grade_id": "intro"},
                {"kind": "code", "text": "def squares(n):\n    return [i * i for i in range(n)]", "grade_id": "squares"},
                {"kind": "output", "text": "[0, 1, 4]\n", "grade_id": None},
                {"kind": "test", "text": "assert squares(3) == [0, 1, 4]", "grade_id": "correct_squares"},
                {"kind": "markdown", "text": "Because \ud800 <script>alert(1)</script>", "grade_id": "why"}]
    return NotebookResult(student, "ps1", "ps1", sum(points), 5.0, "ok", cells=cells, feedback_cells=feedback,
                          submission_sha256=f"sha-{student}", submitted_at="2026-01-02T03:04:05")


def _page(rec, student):
    return feedback_file(rec.out / "feedback", _result(student)).read_bytes()


def test_the_judges_page_is_the_page_the_recorder_renders(recorder):
    rec, source = recorder
    judged = with_page(_result("ada"), source)
    rec.record(judged.result, source, judged.page)  # the judge's page, written as it is
    from_judge = _page(rec, "ada")
    rec.record(_result("ada"), source)  # rendered here from the gradebook, as before
    assert from_judge == _page(rec, "ada")
    assert from_judge.decode().count("waiting for a hand grade") >= 2 and b"<script" not in from_judge
    # a hand edit the re-grade keeps: the judge's page is not used, the gradebook's is written
    grade = next(g for g in rec.gb.find_submission_notebook("ps1", "ps1", "ada").grades
                 if g.name == "correct_sum_of_squares")
    grade.manual_score = 1.5
    rec.gb.db.commit()
    stale = with_page(_result("ada"), source)
    rec.record(stale.result, source, stale.page)
    page = _page(rec, "ada").decode()
    assert "1.5 / 2 (by hand)" in page and page.encode() != stale.page.encode()
    assert gradebook.part_scores(rec.gb, "ada", "ps1", "ps1")["scores"]["correct_sum_of_squares"] == (1.5, 2.0, True)


def test_fresh_parts_are_the_gradebooks_after_a_write(recorder):
    rec, source = recorder
    for student, points in (("bo", (0.0, 0.0, 0.0)), ("cy", (1.0, 1.0, 2.0)), ("di", (0.5, 0.0, 1.25))):
        rec.record(_result(student, points), source)
        assert gradebook.part_scores(rec.gb, student, "ps1", "ps1") == \
            gradebook.fresh_parts(_result(student, points), source)


def test_a_batch_is_one_transaction_and_a_failing_one_is_recorded_one_by_one(recorder):
    from ste_course.grading.jobs import Job
    from ste_course.grading.run import _record_batch

    rec, source = recorder
    bad = _result("eve")
    bad.assignment = "no_such_assignment"  # the gradebook has no such assignment: this write raises
    with pytest.raises(Exception):
        rec.record_batch([(_result("fay"), source, None), (bad, source, None)])
    assert rec.previous("fay", "ps1", "ps1") is None  # nothing of the batch was committed
    jobs = [Job(s, source, rec.out, rec.out, None) for s in ("fay", "eve", "gus")]
    recorded = _record_batch(rec, [(jobs[0], _result("fay")), (jobs[1], bad), (jobs[2], _result("gus"))])
    assert [r.student for r in recorded] == ["fay", "eve", "gus"]
    assert [r.status for r in recorded] == ["ok", "error", "ok"]  # eve's row: the job's, saying why
    assert "recording" in recorded[1].reason and "no_such_assignment" in recorded[1].reason
    assert {(r["student_id"], r["status"]) for r in gradebook.rows(rec.gb)} == {("fay", "ok"), ("eve", "error"),
                                                                              ("gus", "ok")}


def test_results_that_queue_up_are_flushed_in_batches_and_all_at_the_end():
    pending, batches = [], []

    def flush():
        if pending:
            batches.append(pending[:])
            pending.clear()

    names = [f"s{i}" for i in range(200)]
    Pipeline(iter(names), Judges(), Synchronous(), wanted=lambda job, t: True,
             record=lambda job, result: pending.append(job), failed=None, flush=flush).run()
    assert pending == [] and sorted(job for batch in batches for job in batch) == sorted(names)
    assert max(len(batch) for batch in batches) > 1  # judged results waited together for one write
