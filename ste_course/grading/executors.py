"""Run notebooks on fork-server workers of this machine (:mod:`ste_course.sandbox`); a Dask cluster's
executor with the same interface is :class:`ste_course.grading.distributed.DaskExecutor`."""

from __future__ import annotations

import threading

from ste_course.grading.jobs import GradeError
from ste_course.sandbox import Limits, Worker


class ExecutorError(GradeError):
    """The executor cannot run notebooks (a worker that cannot start, a cluster out of reach):
    handed to ``on_result`` in place of a result, it stops the run (one line, exit 2), and no
    notebook gets a row for it."""


def failed_run(run: dict, reason: str) -> dict:
    """The plain result of a notebook that no worker ran to its end for a reason on the grader's
    side (a worker or task that failed): status ``error`` with ``reason`` (at most 300 characters),
    no events; the notebook's row says it and the next run grades it again."""
    return {"id": run.get("id"), "status": "error", "reason": reason[:300], "events": [], "seconds": None}


class LocalExecutor:
    """Runs notebooks on ``n`` fork-server workers of this machine, one thread each (a worker's
    fork server starts with its first notebook)."""

    def __init__(self, n: int, sandbox: bool, limits: Limits):
        self.workers = [Worker(i, sandbox, limits) for i in range(n)]

    def capacity(self) -> int:
        """Notebooks run at once."""
        return len(self.workers)

    def start(self) -> None:
        """Launch the first worker's fork server now (from the grading thread, which outlives it):
        its TensorFlow import, the longest step of a small run, overlaps the judges' start, the
        gradebook's opening and the planning; it takes the first notebook, the others start with
        their first one. :meth:`stop` ends it if no notebook needs running."""
        self.workers[0].launch()

    def run_all(self, runs, on_result) -> None:
        """Call ``on_result(index, result)`` (from worker threads) for each run dict of ``runs``
        (any iterable, possibly blocking until its next run is ready: :mod:`ste_course.grading.pipeline`).
        A worker whose fork server cannot start hands on an :class:`ExecutorError` instead and
        the others stop: the environment is broken for every notebook alike."""
        source, lock = enumerate(runs), threading.Lock()
        self.stopping = False
        first = threading.Event()  # the first worker (launched by start) took the first run

        def work(worker):
            try:
                if worker is not self.workers[0]:
                    first.wait()
                while not self.stopping:
                    with lock:
                        index, run = next(source, (None, None))
                    first.set()
                    if run is None or self.stopping:
                        return
                    if worker.proc is None or worker.proc.poll() is not None or worker.booting is not None:
                        try:
                            worker.start()
                        except Exception as err:  # noqa: BLE001 - the sandbox or the environment
                            self.stopping = True
                            on_result(index, ExecutorError(
                                f"grading worker {worker.index} could not start on this machine: "
                                f"{type(err).__name__}: {err}"[:600]))
                            return
                    try:
                        result = worker.run(run)
                    except Exception as err:  # noqa: BLE001 - one notebook never stops the class
                        result = failed_run(run, f"the worker failed: {type(err).__name__}: {err}")
                    on_result(index, result)
            finally:
                first.set()
                worker.stop()

        self.threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in self.workers]
        for t in self.threads:
            t.start()

    def stop(self):
        """Stop at once (the run is stopping): no new notebook starts, running ones are killed."""
        self.stopping = True
        for worker in self.workers:
            worker.stop()

    def join(self):
        for t in getattr(self, "threads", []):
            t.join()
