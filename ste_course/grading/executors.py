"""Run notebooks on fork-server workers of this machine (:mod:`ste_course.sandbox`); a Dask cluster's
executor with the same interface is :class:`ste_course.grading.distributed.DaskExecutor`."""

from __future__ import annotations

import threading

from ste_course.sandbox import Limits, Worker


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

    def run_all(self, runs, on_result) -> None:
        """Call ``on_result(index, result)`` (from worker threads) for each run dict of ``runs``
        (any iterable, possibly blocking until its next run is ready: :mod:`ste_course.grading.pipeline`)."""
        source, lock = enumerate(runs), threading.Lock()

        def work(worker):
            try:
                while True:
                    with lock:
                        index, run = next(source, (None, None))
                    if run is None:
                        return
                    try:
                        result = worker.run(run)
                    except Exception as err:  # noqa: BLE001 - one notebook never stops the class
                        result = failed_run(run, f"the worker failed: {type(err).__name__}: {err}")
                    on_result(index, result)
            finally:
                worker.stop()

        self.threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in self.workers]
        for t in self.threads:
            t.start()

    def join(self):
        for t in getattr(self, "threads", []):
            t.join()
