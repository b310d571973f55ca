"""The streaming window (``ste_course.pipeline``), with made-up judges and executors: bounded,
lazy, every notebook recorded exactly once, failures are rows, threaded and synchronous
executors alike. No sandbox, no TensorFlow, no database: well under a second."""

from __future__ import annotations

import threading

import pytest

from ste_course.pipeline import MIN_WINDOW, Pipeline


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
