"""Grading on a Dask ``distributed`` cluster: ``ste-course grade --cluster ADDRESS``.

The parent (:mod:`ste_course.grading.run`) stays the single judge and writer; this module only moves run
dicts to Dask workers and plain result dicts back:

* parent side, :class:`DaskExecutor`: one task per notebook, keyed by (student, assignment,
  notebook) and a per-run token, submitted with ``pure=False`` a few per worker thread at a
  time; results are collected as they complete, checked to be plain dicts for the run that was
  sent, and handed to ``on_result`` exactly once per run (a result that arrives twice is dropped);
* worker side, :func:`run_on_worker`: a Dask worker is a multithreaded process, so it never
  forks itself; each of its threads hands the notebook to a sandboxed fork server of its own
  (:class:`ste_course.sandbox.Worker`, kept in a module-level pool keyed by thread) and returns
  the runner's result dict untouched: evidence, outputs and reasons, never a verdict.

Two Dask worker processes on one host never share a grading uid: each fork server leases its
uid for as long as it lives, as every worker does (:func:`ste_course.sandbox.lease_uid`: an
exclusive ``flock`` per uid in a folder that is root's alone, dropped by the kernel when the
holder dies, even by SIGKILL).

Who may take part: the workers receive every student's code and the drawn inputs, and what they
return is trusted as evidence, so they must be trusted machines, and so must anyone who can
reach the scheduler (Dask's plain ``tcp://`` has no authentication: any process that connects can
join as a worker). :func:`cluster_security` therefore refuses a scheduler that is not on this
machine unless it is ``tls://`` with certificates (Dask's
:class:`~distributed.security.Security`: the scheduler, the workers and this client each prove
themselves with a certificate signed by the course's own CA, and refuse peers without one), or
the instructor says ``--insecure-cluster`` (a network that only trusted machines reach).

Failures: a worker that dies mid-task costs nothing, since the scheduler runs its tasks again
elsewhere; a task that was running on ``allowed-failures + 1`` workers that all died is given
up by Dask (``KilledWorker``) and reported as status ``error`` with a reason, as is a task that
raised on its worker.
"""

from __future__ import annotations

import atexit
import collections
import os
import secrets
import threading
from pathlib import Path

from ste_course.grading.executors import failed_run
from ste_course.sandbox import Limits, Worker, WorkerError, bwrap_path, lease_uid

ALLOWED_FAILURES = 2
WINDOW_PER_THREAD = 4  # tasks in flight per worker thread (the rest wait in this process)
MIN_WINDOW = 8
WORKER_SATURATION = 1.0
CONNECT_TIMEOUT = 120.0
REACH_TIMEOUT = 10.0  # seconds to open a TCP connection to the scheduler before Dask is asked
LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def _on_this_machine(host: str) -> bool:
    import ipaddress

    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cluster_security(address: str, tls_ca_file: str | None = None, tls_cert: str | None = None,
                     tls_key: str | None = None, insecure: bool = False):
    """Dask's :class:`~distributed.security.Security` for ``--cluster address``, or None for a
    cluster that needs none (``local``; ``tcp://`` on this machine's loopback; any ``tcp://``
    with ``insecure``).

    A ``tls://`` scheduler needs the course CA's certificate and this client's certificate and
    key (as arguments, or Dask's settings ``distributed.comm.tls.ca-file``,
    ``distributed.comm.tls.client.cert`` and ``.key``, e.g. ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``);
    encryption is then required on every connection.

    Raises:
        GradeError: a scheduler on another machine over anything but ``tls://`` (without
            ``insecure``), or ``tls://`` without its three files; the message says what to do.
    """
    from urllib.parse import urlsplit

    from ste_course.grading.jobs import GradeError

    if address == "local":
        return None
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme == "tls":
        import dask
        from distributed.security import Security

        files = {"tls_ca_file": tls_ca_file or dask.config.get("distributed.comm.tls.ca-file", None),
                 "tls_client_cert": tls_cert or dask.config.get("distributed.comm.tls.client.cert", None),
                 "tls_client_key": tls_key or dask.config.get("distributed.comm.tls.client.key", None)}
        missing = [name for name, path in files.items() if not path]
        if missing:
            raise GradeError(f"--cluster {address} is tls:// but has no {', '.join(missing)}: give --tls-ca-file, "
                             "--tls-cert and --tls-key (docs/grading.md shows how to make them with openssl)")
        for path in files.values():
            if not Path(path).is_file():
                raise GradeError(f"--cluster {address}: no certificate or key file at {path}")
        return Security(require_encryption=True, **files)
    if insecure or (parts.scheme == "tcp" and _on_this_machine(parts.hostname or "")):
        return None
    raise GradeError(
        f"--cluster {address}: refused. Over {parts.scheme}:// anyone who reaches the scheduler can read every "
        "student's code and inputs and join as a worker that returns made-up evidence. Use tls://HOST:PORT with "
        "the course's certificates (--tls-ca-file, --tls-cert, --tls-key; docs/grading.md shows how to make "
        "them with openssl), or --insecure-cluster if only trusted machines can reach that network")


def _reachable(address: str, timeout: float) -> None:
    """Raise OSError at once when the scheduler at ``address`` (``tcp://host:port``, ``tls://``)
    cannot be reached: an unknown host or a refused port (Dask itself retries until its
    connection timeout, two minutes, before it says so)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls") or not parts.hostname:
        return
    with socket.create_connection((parts.hostname, parts.port or 8786), timeout=timeout):
        pass


# ====================================================================== worker side
class _Slot:
    """A sandboxed fork server owned by one Dask worker thread (it leases its uid itself)."""

    def __init__(self, thread: threading.Thread, sandbox: bool):
        self.thread, self.sandbox = thread, sandbox
        self.worker = Worker(0, sandbox, Limits())

    def close(self):
        self.worker.stop()  # releases its uid lease (after its fork server is gone)


_POOL: dict = {}  # thread ident -> _Slot
_POOL_LOCK = threading.Lock()


def _slot_for_this_thread(sandbox: bool) -> _Slot:
    """This thread's fork server; slots of threads that ended are closed on the way."""
    me = threading.current_thread()
    with _POOL_LOCK:
        for ident, slot in list(_POOL.items()):
            if not slot.thread.is_alive():
                del _POOL[ident]
                slot.close()
        slot = _POOL.get(me.ident)
        if slot is not None and (slot.thread is not me or slot.sandbox != sandbox):
            del _POOL[me.ident]
            slot.close()
            slot = None
        if slot is None:
            slot = _POOL[me.ident] = _Slot(me, sandbox)
        return slot


def _close_pool():
    with _POOL_LOCK:
        for slot in _POOL.values():
            slot.close()
        _POOL.clear()


atexit.register(_close_pool)


def run_on_worker(run: dict, sandbox: bool, limits: dict) -> dict:
    """The Dask task: run one notebook in this thread's sandboxed fork server.

    Returns the runner's plain result dict (``id``, ``status``, ``events``, ``seconds``...),
    exactly as local grading gets it; judging happens in the parent.
    """
    slot = _slot_for_this_thread(sandbox)
    slot.worker.limits = Limits(**limits)  # sent with each job, so a warm server serves any run
    return slot.worker.run(run)


def worker_problems(sandbox: bool) -> str:
    """Run on every worker before grading: what is missing there ('' when ready)."""
    if sandbox and not bwrap_path():
        return "bubblewrap (bwrap) is not installed"
    if sandbox and os.geteuid() == 0:
        try:
            os.close(lease_uid()[1])
        except (WorkerError, OSError) as err:
            return f"cannot lease a grading uid: {err}"
    return ""


# ====================================================================== parent side
def task_key(run: dict, token: str) -> str:
    """The Dask key of a run: its (student, assignment, notebook) id and this grading run's token
    (two grading runs sharing a scheduler never share a task)."""
    return f"ste-grade-{token}-{run['id']}"


def failure_result(run: dict, err: BaseException) -> dict:
    """The plain result for a task that produced no result: an ``error`` with a reason."""
    from distributed.scheduler import KilledWorker

    if isinstance(err, KilledWorker):
        reason = (f"the notebook was running on {err.allowed_failures + 1} grading workers that all "
                  "died while running it (out of memory, or killed); it was not retried again")
    else:
        reason = f"the grading task failed: {type(err).__name__}: {err}"
    return failed_run(run, reason)


def checked_result(run: dict, result) -> dict:
    """The worker's answer if it is a plain result for this run, else an ``error`` result."""
    if isinstance(result, dict) and result.get("id") == run["id"]:
        return result
    return failed_run(run, "the grading worker answered for another notebook")


class DaskExecutor:
    """Runs notebooks on a Dask cluster: ``address`` (``tls://host:8786`` with ``security``
    from :func:`cluster_security`, ``tcp://127.0.0.1:8786``) or ``"local"``.

    ``"local"`` starts a ``LocalCluster`` of ``n_workers`` processes with one thread each on
    this machine. ``task`` is the function a worker runs per notebook (default
    :func:`run_on_worker`); it must be importable or picklable on the workers.
    """

    def __init__(self, address: str = "local", n_workers: int = 2, sandbox: bool = True,
                 limits: Limits | None = None, allowed_failures: int = ALLOWED_FAILURES,
                 task=None, connect_timeout: float = CONNECT_TIMEOUT, security=None):
        self.address, self.n_workers, self.sandbox = address, max(1, int(n_workers)), sandbox
        self.security = security  # distributed.security.Security (cluster_security) or None
        self.limits = limits or Limits()
        self.allowed_failures, self.connect_timeout = allowed_failures, connect_timeout
        self.task = task or run_on_worker
        self.client = self.cluster = self.thread = self.feeder = None
        self._capacity = max(MIN_WINDOW, WINDOW_PER_THREAD * self.n_workers)
        self.delivered = 0  # results handed on
        self.duplicates = 0  # results dropped because their run was already handed on

    # ------------------------------------------------------------ connection
    def start(self):
        """Connect before the run records anything (:func:`ste_course.grading.run.grade`)."""
        if self.client is None:
            self.connect()

    def connect(self):
        """Connect (or start the local cluster) and check that the workers can grade."""
        import dask
        from distributed import Client, LocalCluster

        from ste_course.grading.jobs import GradeError

        # The scheduler reads these: in this process for "local", from its own config for a
        # remote one (DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=2,
        # DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=1.0). A saturation of 1.0 gives a worker
        # only the notebooks it can start at once, so when it dies no notebook merely queued
        # there counts against allowed-failures (an innocent one could end as KilledWorker).
        with dask.config.set({"distributed.scheduler.allowed-failures": self.allowed_failures,
                              "distributed.scheduler.worker-saturation": WORKER_SATURATION}):
            try:
                if self.address != "local":
                    _reachable(self.address, min(REACH_TIMEOUT, self.connect_timeout))
                if self.address == "local":
                    self.cluster = LocalCluster(n_workers=self.n_workers, threads_per_worker=1,
                                                processes=True, host="127.0.0.1",
                                                dashboard_address="127.0.0.1:0")
                    self.client = Client(self.cluster, timeout=self.connect_timeout)
                else:
                    self.client = Client(self.address, timeout=self.connect_timeout, security=self.security)
                self.client.wait_for_workers(self.n_workers if self.cluster else 1, timeout=self.connect_timeout)
            except (OSError, TimeoutError) as err:
                self.close()
                raise GradeError(f"cannot reach a Dask cluster with workers at {self.address!r}: "
                                 f"{type(err).__name__}: {err}") from err
        try:
            problems = self.client.run(worker_problems, self.sandbox)
        except Exception as err:  # noqa: BLE001 - e.g. ste_course not installed on a worker
            self.close()
            raise GradeError(f"the Dask workers cannot grade (is the course environment installed "
                             f"there?): {type(err).__name__}: {err}") from err
        bad = {worker: problem for worker, problem in problems.items() if problem}
        if bad:
            self.close()
            raise GradeError("Dask workers not ready to grade: " +
                             "; ".join(f"{w}: {p}" for w, p in sorted(bad.items())))

    # ------------------------------------------------------------ executor interface
    def capacity(self) -> int:
        """Notebooks kept in flight (:meth:`_window`, as last measured)."""
        return self._capacity

    def run_all(self, runs, on_result) -> None:
        """Submit one task per run of ``runs`` (any iterable, possibly lazy and blocking:
        :mod:`ste_course.grading.pipeline`); ``on_result(index, result)`` is called from a collector
        thread, exactly once per run.

        A feeder thread takes the runs as they come; at most ``WINDOW_PER_THREAD`` tasks per
        worker thread are in the scheduler at a time (refilled as results arrive), the rest wait
        here, so a large class's notebooks are never all held by the scheduler.
        """
        from distributed import as_completed

        if self.client is None:
            self.connect()
        self._on_result, self._count = on_result, 0
        self._token, self._limits = secrets.token_hex(4), self.limits.as_dict()
        self._runs: dict = {}  # index -> run, from arrival until its result is handed on
        self._waiting: collections.deque = collections.deque()  # indexes not yet submitted
        self._futures: dict = {}  # in-flight future -> run index
        self._fed = False  # every run of ``runs`` arrived
        self._failure = None  # set when the cluster cannot take more: every later run fails
        self._lock = threading.Condition()
        self._completed = as_completed()
        self.feeder = threading.Thread(target=self._feed, args=(runs,), name="ste-dask-feeder", daemon=True)
        self.thread = threading.Thread(target=self._collect, name="ste-dask-collector", daemon=True)
        self.feeder.start()
        self.thread.start()

    def _window(self) -> int:
        """Tasks to keep in flight: a few per worker thread now connected (workers may come and go)."""
        threads = sum(self.client.nthreads().values())
        self._capacity = max(MIN_WINDOW, WINDOW_PER_THREAD * threads)
        return self._capacity

    def _feed(self, runs):
        for run in runs:
            with self._lock:
                index, self._count = self._count, self._count + 1
                self._runs[index] = run
                self._waiting.append(index)
                self._deliver(self._submit_more())
                self._lock.notify_all()
        with self._lock:
            self._fed = True
            self._lock.notify_all()

    def _submit_more(self):
        """Submit waiting runs while the window has room (holding ``_lock``)."""
        try:
            room = self._window() - len(self._futures) if self._failure is None else 0
            while room > 0 and self._waiting:
                index = self._waiting[0]
                run = self._runs[index]
                future = self.client.submit(self.task, run, self.sandbox, self._limits,
                                            key=task_key(run, self._token), pure=False, retries=0)
                self._waiting.popleft()
                self._futures[future] = index
                self._completed.add(future)
                room -= 1
        except Exception as err:  # noqa: BLE001 - the cluster is gone: the rest cannot run
            self._failure = err
        failed = []
        while self._failure is not None and self._waiting:
            index = self._waiting.popleft()
            failed.append((index, failure_result(self._runs[index], self._failure)))
        return failed

    def _next_completed(self):
        """The next finished future, or None once every run was fed and handed on."""
        with self._lock:
            while not self._futures:
                if self._fed and not self._waiting:
                    return None
                self._lock.wait(0.5)
                self._deliver(self._submit_more())
        return next(self._completed)

    def _collect(self):
        while True:
            try:
                future = self._next_completed()
            except StopIteration:
                continue
            if future is None:
                return
            with self._lock:
                index = self._futures.pop(future, None)
                run = self._runs.pop(index, None) if index is not None else None
                if run is None:  # a result that arrives twice is not graded twice
                    self.duplicates += 1
            if run is None:
                continue
            try:
                result = checked_result(run, future.result())
            except BaseException as err:  # noqa: BLE001 - KilledWorker, CancelledError, the task's error
                result = failure_result(run, err)
            future.release()
            self._deliver([(index, result)])
            with self._lock:
                self._deliver(self._submit_more())

    def _deliver(self, results):
        """Hand results on; a run is forgotten once its result is (``_runs`` holds only the runs
        in flight or waiting: what this process keeps does not grow with the class)."""
        for index, result in results:
            self.delivered += 1
            self._runs.pop(index, None)
            self._on_result(index, result)

    def join(self):
        for thread in (self.feeder, self.thread):
            if thread is not None:
                thread.join()
        self.close()

    def close(self):
        for thing in (self.client, self.cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001
                    pass
        self.client = self.cluster = None
