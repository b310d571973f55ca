"""Run notebooks on fork-server workers of this machine (:mod:`ste_course.sandbox`); a Dask cluster's
executor with the same interface is :class:`ste_course.grading.distributed.DaskExecutor`."""

from __future__ import annotations

import threading

from ste_course.sandbox import Limits, Worker


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
                        result = {"status": "error", "reason": f"the worker failed: {type(err).__name__}: {err}"[:300],
                                  "events": []}
                    on_result(index, result)
            finally:
                worker.stop()

        self.threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in self.workers]
        for t in self.threads:
            t.start()

    def join(self):
        for t in getattr(self, "threads", []):
            t.join()
