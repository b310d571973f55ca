"""The bounded streaming window of ``ste-course grade``: plan ahead, run, judge, record.

A class flows through the parent one notebook at a time, never as a whole::

    jobs (lazy) ─▶ plan ─▶ Feed ─▶ executor (sandboxes) ─▶ judge ─▶ record
                  (judges)         (workers)              (judges)  (this thread)

* **Collect lazily**: jobs are taken from an iterator only when the window has room.
* **A bounded window**: at most :meth:`Pipeline.limit` notebooks are alive at once, from the
  moment their planning starts to the moment they are recorded (or found already graded). The
  limit is a few times what the executor runs at once (``executor.capacity()``), so the parent's
  memory depends on the number of workers, not on the class size, and the first grade is
  recorded as soon as the first notebook has run.
* **Judging off the critical path**: planning (preflight, drawing the cases) and judging
  (references, comparing evidence, the late rule) are trusted work on plain data done by
  ``judges`` (:mod:`ste_course.grading.judges`: a pool of processes, or this process for small runs);
  this thread only decides what to skip and records, so its own cost per notebook is the
  gradebook write and the files derived from it.
* **One thread touches the gradebook**: every decision that reads it (already graded?) and
  every write happen in the thread that calls :meth:`Pipeline.run`; the others only post
  messages to its inbox.
* **Records in batches when results queue up**: ``record`` may buffer; ``flush`` is called
  whenever the inbox is empty (nothing else to do: a lone result is written at once) and when
  the run ends, so the recorder can write what piled up in one transaction.

The executor contract (local fork servers, Dask, test doubles): ``executor.run_all(runs,
on_result)`` with ``runs`` an iterable of run dicts that may block until the next run is planned
and ends when the class is done; ``on_result(index, result)`` is called once per run, ``index``
being the run's position in ``runs``; ``executor.join()`` returns when every result was handed
on. ``run_all`` is called in a thread of its own, so an executor may also run synchronously.
An executor that cannot run notebooks says so by raising from ``run_all`` or by handing an
exception to ``on_result`` in place of a result: :meth:`Pipeline.run` then raises it at once
(the notebooks not recorded yet are graded by the next run), calling ``executor.stop()`` if
it has one, as on any other way out of the loop before the class is done.
"""

from __future__ import annotations

import collections
import queue
import threading

MIN_WINDOW = 16
WINDOW_PER_SLOT = 3  # notebooks alive per notebook the executor runs at once


class Feed:
    """The runs an executor consumes: a thread-safe, blocking iterable, closed at the end."""

    _END = object()

    def __init__(self):
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.handed = 0  # runs taken so far (the next one's index)

    def put(self, run: dict) -> None:
        with self._cond:
            self._items.append(run)
            self._cond.notify()

    def close(self, drop: bool = False) -> None:
        """No run follows; ``drop`` also forgets the runs not taken yet (the run is stopping)."""
        with self._cond:
            self._closed = True
            if drop:
                self._items.clear()
            self._cond.notify_all()

    def get(self, block: bool = True):
        """The next run, ``None`` if ``block`` is false and none is ready, or :attr:`_END`."""
        with self._cond:
            while not self._items:
                if self._closed:
                    return self._END
                if not block:
                    return None
                self._cond.wait()
            self.handed += 1
            return self._items.popleft()

    def __iter__(self):
        while True:
            run = self.get()
            if run is self._END:
                return
            yield run


class Pipeline:
    """Grades ``jobs`` through ``judges`` and ``executor``, recording in the calling thread.

    Args:
        jobs: an iterator of jobs (consumed lazily).
        judges: ``plan(job, reply)`` and ``judge(job, ticket, payload, reply)``, each calling
            ``reply(value)`` once, from any thread (:mod:`ste_course.grading.judges`).
        executor: runs the notebooks (see the module's contract); started on the first run.
        wanted: ``wanted(job, planned) -> bool`` in this thread: False skips a planned notebook
            (already graded from the same inputs).
        record: ``record(job, result) -> None`` in this thread, once per notebook.
        failed: ``failed(job, stage, error) -> result``: the row of a notebook whose planning
            or judging raised in the judges (never expected; one notebook never stops a class).
        flush: ``flush()`` in this thread, when the inbox is empty and once at the end (also
            when the run stops on an error): write what ``record`` buffered.
    """

    def __init__(self, jobs, judges, executor, wanted, record, failed, limit=None, flush=None):
        self.jobs, self.judges, self.executor = iter(jobs), judges, executor
        self.wanted, self.record, self.failed = wanted, record, failed
        self.flush = flush or (lambda: None)
        self._limit = limit
        self.inbox: queue.Queue = queue.Queue()
        self.feed = Feed()
        self.alive = 0  # notebooks between "planning started" and "recorded or skipped"
        self.planning = 0  # of which still being planned
        self.peak = 0
        self.recorded = 0
        self._running: dict = {}  # run index -> (job, ticket)
        self._put_runs = 0
        self._runner = None

    def limit(self) -> int:
        if self._limit is not None:
            return self._limit
        capacity = getattr(self.executor, "capacity", None)
        slots = capacity() if callable(capacity) else 4
        return max(MIN_WINDOW, WINDOW_PER_SLOT * int(slots))

    # ---------------------------------------------------------------- the loop
    def run(self) -> int:
        """Grade every job; returns the number of notebooks recorded."""
        exhausted = finished = False
        try:
            while True:
                while not exhausted and self.alive < self.limit():
                    job = next(self.jobs, None)
                    exhausted = job is None
                    if not exhausted:
                        self._start(job)
                if exhausted and self.planning == 0:
                    self.feed.close()  # no run will follow
                if exhausted and self.alive == 0:
                    finished = True
                    break
                if self.inbox.empty():
                    self.flush()
                self._handle(*self.inbox.get())
        finally:
            self.feed.close(drop=not finished)
            stop = getattr(self.executor, "stop", None)
            if not finished and self._runner is not None and callable(stop):
                stop()
            try:
                if self._runner is not None:
                    self._runner.join()
                    self.executor.join()
            finally:
                self.flush()
        return self.recorded

    def _start(self, job) -> None:
        self.alive += 1
        self.planning += 1
        self.peak = max(self.peak, self.alive)
        self.judges.plan(job, lambda planned: self.inbox.put(("planned", job, planned)))

    def _done(self) -> None:
        self.alive -= 1

    def _handle(self, kind, job, value) -> None:
        if kind == "planned":
            self.planning -= 1
            self._planned(job, value)
        elif kind == "stopped":  # the executor cannot run notebooks
            raise value
        elif kind == "ran":
            ticket, payload = value
            self.judges.judge(job, ticket, payload, lambda result: self.inbox.put(("judged", job, result)))
        else:  # judged
            self._record(job, value)

    def _planned(self, job, planned) -> None:
        """``planned``: ``("result", NotebookResult)``, ``("run", run, ticket)`` or an exception."""
        if isinstance(planned, BaseException):
            return self._record(job, self.failed(job, "reading the submission", planned))
        if planned[0] == "result":
            return self._record(job, planned[1])
        _, run, ticket = planned
        if not self.wanted(job, ticket):
            return self._done()
        self._running[self._put_runs] = (job, ticket)
        self._put_runs += 1
        if self._runner is None:
            self._runner = threading.Thread(target=self._run_executor, name="ste-executor", daemon=True)
            self._runner.start()
        self.feed.put(run)

    def _run_executor(self) -> None:
        try:
            self.executor.run_all(self.feed, self._ran)
        except BaseException as err:  # noqa: BLE001 - raised in the loop's thread
            self.inbox.put(("stopped", None, err))

    def _ran(self, index: int, payload) -> None:
        """From the executor's threads: post the result to this thread's inbox (an exception in
        place of a result stops the run)."""
        if isinstance(payload, BaseException):
            self.inbox.put(("stopped", None, payload))
            return
        job, ticket = self._running.pop(index)
        self.inbox.put(("ran", job, (ticket, payload)))

    def _record(self, job, result) -> None:
        if isinstance(result, BaseException):
            result = self.failed(job, "judging", result)
        try:
            self.record(job, result)
        finally:
            self.recorded += 1
            self._done()
