"""Grading on a real Dask cluster (``ste-course grade --cluster``).

A scheduler and two worker processes (``dask scheduler`` / ``dask worker``, loopback only) grade
a small class: the grades, results and feedback are identical to local grading. Then one worker
is killed (SIGKILL) while it runs a notebook, and every grade still arrives exactly once. A task
that keeps killing its workers ends as an ``error`` with a reason instead of being retried forever.

The class is made from ``STE_GRADING_SOURCE`` (default: the adversarial suite's fixture
assignment), so these tests work with whatever source is passed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import psutil
import pytest

from ste_course.authoring.source import load_assignments
import ste_course.cli as cli  # noqa: F401 - puts this environment's bin/ on PATH (nbgrader runs alembic)
from ste_course.grading.distributed import DaskExecutor
from ste_course.grading.run import grade
from ste_course.sandbox import Limits, bwrap_path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from classroom import make_class  # noqa: E402

SOURCE = Path(os.environ.get("STE_GRADING_SOURCE", HERE / "adversarial" / "source")).resolve()
SECRET = "distributed-test-secret"
BIN = Path(sys.executable).parent
START_TIMEOUT = 90.0
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the poison task reaches the workers


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0",
                DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="2",
                DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION="1.0",
                PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Dask scheduler and two one-thread worker processes (no nanny: a killed worker stays dead)."""
    if not bwrap_path():
        pytest.fail("bubblewrap is required for sandboxed grading (make system-deps)")
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    procs = []

    def spawn(name, *args):
        with open(folder / f"{name}.log", "wb") as log:
            procs.append(subprocess.Popen([str(BIN / "dask"), *args], stdout=log, stderr=subprocess.STDOUT,
                                          env=_env(), cwd=folder))
        return procs[-1]

    def address():
        try:
            return json.loads(scheduler_file.read_text())["address"]
        except (OSError, ValueError, KeyError):
            return None

    client = None
    try:
        quiet = ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]  # no HTTP server on a shared port
        spawn("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", *quiet,
              "--scheduler-file", str(scheduler_file))
        _wait_for(address, START_TIMEOUT, "the Dask scheduler")
        scheduler = address()
        workers = [spawn(f"worker{i}", "worker", scheduler, "--nthreads", "1", "--no-nanny", *quiet,
                         "--host", "127.0.0.1", "--name", f"w{i}") for i in range(2)]
        client = Client(scheduler, timeout=START_TIMEOUT)
        client.wait_for_workers(2, timeout=START_TIMEOUT)
        yield dict(address=scheduler, client=client, workers=workers, folder=folder)
    finally:
        if client is not None:
            client.close()
        for proc in reversed(procs):
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def sources():
    return load_assignments(SOURCE)


def _results(out: Path) -> dict:
    """Every recorded result, without the run time."""
    found = {}
    for path in sorted((out / "results").rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("seconds", None)
        found[str(path.relative_to(out))] = data
    return found


def _feedback(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_text(encoding="utf-8") for p in sorted((out / "feedback").rglob("*.html"))}


def test_dask_grades_equal_local_grades(cluster, sources, tmp_path):
    subs = tmp_path / "submissions"
    count = make_class(SOURCE, subs, {"ada": "complete", "bo": "blank", "cy": "complete"})
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")

    local_out, dask_out = tmp_path / "local", tmp_path / "dask"
    local = grade(subs, local_out, sources, SECRET, jobs_n=1, sandbox=True, limits=Limits(), progress=False)
    code = cli.main(["--solutions", str(SOURCE), "grade", str(subs), "--out", str(dask_out),
                     "--secret-file", str(secret_file), "--jobs", "2", "--cluster", cluster["address"]])
    assert code == 0

    assert len(local) == count
    full = {r.student: r for r in local}
    assert full["ada"].score == full["ada"].max_score > 0 and full["ada"].status == "ok", full["ada"]
    assert full["bo"].score == 0 and full["bo"].status == "ok", full["bo"]
    assert (dask_out / "grades.csv").read_text() == (local_out / "grades.csv").read_text()
    assert _results(dask_out) == _results(local_out)
    assert _feedback(dask_out) == _feedback(local_out)


class KillOnFirstResult:
    """Wraps an executor: on the first result, SIGKILLs a Dask worker that is running a notebook;
    counts how often each run's result is handed on."""

    def __init__(self, inner, client, workers):
        self.inner, self.client, self.workers = inner, client, workers
        self.arrivals: dict = {}
        self.victim = None
        self.lock = threading.Lock()

    def run_all(self, runs, on_result):
        def counted(index, result):
            with self.lock:
                self.arrivals[index] = self.arrivals.get(index, 0) + 1
                if self.victim is None:
                    self.victim = self._kill_a_busy_worker()
            on_result(index, result)

        self.inner.run_all(runs, counted)

    def _kill_a_busy_worker(self):
        ours = {proc.pid for proc in self.workers}
        pids = self.client.run(os.getpid)  # worker address -> pid
        for address, keys in self.client.processing().items():
            pid = pids.get(address)
            if keys and pid in ours:
                sandbox = psutil.Process(pid).children(recursive=True)  # its bwrap and fork server
                os.kill(pid, signal.SIGKILL)
                return {"address": address, "pid": pid, "keys": list(keys), "sandbox": sandbox}
        return {"address": None, "pid": None, "keys": [], "sandbox": []}

    def join(self):
        self.inner.join()


def test_a_killed_worker_costs_nothing(cluster, sources, tmp_path):
    subs = tmp_path / "submissions"
    plan = {f"s{i}": "slow" for i in range(6)}
    count = make_class(SOURCE, subs, plan)
    executor = KillOnFirstResult(DaskExecutor(cluster["address"], sandbox=True, limits=Limits()),
                                 cluster["client"], cluster["workers"])
    results = grade(subs, tmp_path / "out", sources, SECRET, sandbox=True, progress=False, executor=executor)

    victim = executor.victim
    assert victim and victim["pid"], "no worker was running a notebook after the first result"
    assert victim["keys"], "the killed worker was running nothing"
    killed = next(p for p in cluster["workers"] if p.pid == victim["pid"])
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert sorted(executor.arrivals) == list(range(count)), "every notebook's result arrived"
    assert set(executor.arrivals.values()) == {1}, f"a result arrived twice: {executor.arrivals}"
    assert executor.inner.duplicates == 0
    assert sorted((r.student, r.assignment, r.notebook) for r in results) == \
        sorted({(r.student, r.assignment, r.notebook) for r in results}), "a grade was recorded twice"
    assert len(results) == count
    wrong = [(r.student, r.notebook, r.score, r.status, r.reason) for r in results
             if r.status != "ok" or r.score != r.max_score]
    assert not wrong, wrong
    # the killed worker's sandboxed fork server died with it (bubblewrap --die-with-parent)
    assert victim["sandbox"], "the killed worker had no fork server"
    _wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in victim["sandbox"]),
              15, "the killed worker's sandbox to go away")


def poison_task(run, sandbox, limits):
    """Kills the worker process that runs the notebook 'poison/...', answers the others."""
    if run["id"].startswith("poison/"):
        os._exit(13)
    return {"id": run["id"], "status": "", "events": [], "seconds": 0.0}


def test_a_task_that_keeps_killing_workers_is_an_error():
    # more runs than the executor keeps in flight (8 for two one-thread workers): refills are exercised too
    runs = [{"id": f"{student}/a/a"} for student in ["ann", "poison", "ben"] + [f"x{i}" for i in range(17)]]
    arrivals = []
    executor = DaskExecutor("local", n_workers=2, sandbox=False, allowed_failures=1, task=poison_task)
    started = time.monotonic()
    try:
        executor.run_all(runs, lambda index, result: arrivals.append((index, result)))
        executor.join()
    finally:
        executor.close()
    assert sorted(index for index, _ in arrivals) == list(range(len(runs))), arrivals
    by_index = dict(arrivals)
    assert by_index[0] == {"id": "ann/a/a", "status": "", "events": [], "seconds": 0.0}
    for index, run in enumerate(runs):
        if index != 1:
            assert by_index[index] == {"id": run["id"], "status": "", "events": [], "seconds": 0.0}
    poisoned = by_index[1]
    assert poisoned["id"] == "poison/a/a" and poisoned["status"] == "error"
    assert "2 grading workers" in poisoned["reason"] and "died" in poisoned["reason"], poisoned
    print(f"KilledWorker after {time.monotonic() - started:.1f} s: {poisoned['reason']}")
