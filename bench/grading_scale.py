"""Grading at scale: serial local grading vs a Dask ``LocalCluster``, stage by stage.

Builds a synthetic class from ``--solutions`` (students alternate between the model answer and
the blank release, every assignment; ``tests/classroom.py``), then grades it, sandboxed, in
this process with ``ste_course.grading.run.grade``:

* ``serial``: the local executor with one worker (``--jobs 1``);
* ``cluster``: ``--cluster local`` with ``--workers`` worker processes (one thread each).

The library is not instrumented: timers wrap its stage functions from outside (preflight,
judging = ``conclude``, feedback = ``Recorder._feedback``, database = ``Recorder._gradebook``,
opening the gradebook = ``Recorder.__init__``, the result file = the rest of ``record``), and
the Dask task is wrapped to time the sandbox start (fork server boot, TensorFlow import) on the
worker. Execution is the runner's own ``seconds`` per notebook. Finally the same run dicts go
through the cluster with a task that does nothing, which measures what Dask itself costs per
notebook (scheduling and moving the run dict and the result).

    python bench/grading_scale.py [--students 60] [--workers 2] [--solutions solutions]
                                  [--modes serial,cluster] [--db URL]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ste_course import sandbox  # noqa: E402
from ste_course.authoring.source import load_assignments  # noqa: E402
import ste_course.cli  # noqa: E402,F401 - puts this environment's bin/ on PATH (nbgrader runs alembic)
from ste_course.grading import distributed, executors, jobs, judges, steps  # noqa: E402
import ste_course.grading.run as grading  # noqa: E402
from ste_course.record import recorder as record  # noqa: E402

_spec = importlib.util.spec_from_file_location("classroom", ROOT / "tests" / "classroom.py")
classroom = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(classroom)

SECRET = "grading-scale-benchmark"


# ---------------------------------------------------------------- timers around the stages
class Timers:
    """Seconds spent per stage, summed over calls (thread-safe)."""

    def __init__(self):
        self.total, self.calls = defaultdict(float), defaultdict(int)
        self.lock = threading.Lock()

        self.samples = defaultdict(list)  # stage -> [(first argument, seconds)]

    def add(self, stage, seconds, arg=None):
        with self.lock:
            self.total[stage] += seconds
            self.calls[stage] += 1
            self.samples[stage].append((arg, seconds))

    def wrap(self, owner, name, stage):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - start, args[0] if args else None)

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, original)


def timed_task(run, sandbox_on, limits):
    """The Dask task of ``ste_course.grading.distributed`` with the fork server's boot timed on the worker."""
    from ste_course.grading import distributed as d

    slot = d._slot_for_this_thread(sandbox_on)
    boot = 0.0
    if slot.worker.proc is None or slot.worker.proc.poll() is not None:
        start = time.perf_counter()
        slot.worker.start()
        boot = time.perf_counter() - start
    result = d.run_on_worker(run, sandbox_on, limits)
    return dict(result, bench_boot=boot)


def noop_task(run, sandbox_on, limits):
    """Does nothing with the notebook: what Dask itself costs per task."""
    return {"id": run["id"], "status": "", "events": [], "seconds": 0.0, "cells": len(run["cells"])}


class Boots:
    """Collects the worker-side boot times the timed task reports, and the results' sizes."""

    def __init__(self, inner, timers):
        self.inner, self.timers = inner, timers
        self.result_bytes = []

    def run_all(self, runs, on_result):
        def collect(index, result):
            if isinstance(result, dict) and "bench_boot" in result:
                boot = result.pop("bench_boot")
                if boot:
                    self.timers.add("sandbox start", boot)
            self.result_bytes.append(len(json.dumps(result)))
            on_result(index, result)

        self.inner.run_all(runs, collect)

    def join(self):
        self.inner.join()


# ---------------------------------------------------------------- one grading run
def grade_once(mode, klass, out, sources, workers, db_url):
    timers = Timers()
    undo = [timers.wrap(judges, "preflight", "preflight"), timers.wrap(judges, "conclude", "judging"),
            timers.wrap(record.Recorder, "_gradebook", "database"),
            timers.wrap(record.Recorder, "_feedback", "feedback"),
            timers.wrap(record.Recorder, "record", "record (all)"),
            timers.wrap(record.Recorder, "__init__", "gradebook open")]
    if mode == "serial":
        undo.append(timers.wrap(sandbox.Worker, "start", "sandbox start"))
        executor = Boots(executors.LocalExecutor(1, True, sandbox.Limits()), timers)
    else:
        executor = Boots(distributed.DaskExecutor("local", n_workers=workers, sandbox=True, task=timed_task), timers)
    start = time.perf_counter()
    try:
        results = grading.grade(klass, out, sources, SECRET, jobs_n=1, sandbox=True, db_url=db_url,
                                progress=False, executor=executor)
    finally:
        for restore in undo:
            restore()
    wall = time.perf_counter() - start
    execution = [r.seconds for r in results if r.seconds is not None]
    return dict(mode=mode, wall=wall, results=results, timers=timers, execution=execution,
                result_kb=statistics.mean(executor.result_bytes) / 1024 if executor.result_bytes else 0.0)


def dask_overhead(klass, sources, workers):
    """Per-task cost of Dask alone: the class's run dicts through ``noop_task`` on a warm cluster."""
    found = jobs.collect(klass, sources)
    runs = [p.run for p in (steps.preflight(j, SECRET) for j in found) if isinstance(p, steps.Pending)]
    size = statistics.mean(len(json.dumps(r)) for r in runs) / 1024
    executor = distributed.DaskExecutor("local", n_workers=workers, sandbox=True, task=noop_task)
    executor.connect()
    done = threading.Event()
    got = []

    def on_result(index, result):
        got.append(index)
        if len(got) == len(runs):
            done.set()

    start = time.perf_counter()
    executor.run_all(runs, on_result)
    done.wait()
    seconds = time.perf_counter() - start
    executor.join()
    return seconds, len(runs), size


# ---------------------------------------------------------------- report
def row(run, n):
    t, wall = run["timers"], run["wall"]
    per = lambda stage: 1000 * t.total.get(stage, 0.0) / n  # noqa: E731 - ms per notebook
    other_record = t.total.get("record (all)", 0.0) - t.total.get("database", 0.0) - t.total.get("feedback", 0.0)
    boots = t.calls.get("sandbox start", 0)
    exe = run["execution"]
    return (f"| {run['mode']} | {n} | {wall:.1f} | {n / wall:.2f} | "
            f"{t.total.get('sandbox start', 0.0):.1f} s / {boots} | "
            f"{statistics.mean(exe) if exe else 0:.2f} | {per('preflight'):.1f} | {per('judging'):.1f} | "
            f"{per('feedback'):.1f} | {per('database'):.1f} | {1000 * other_record / n:.1f} | "
            f"{t.total.get('gradebook open', 0.0):.1f} |")


# ---------------------------------------------------------------- the parent's own ceiling
STUDENT = "zzSTUDENTzz"  # the templates' student id, replaced by each student's


class StubJudges:
    """Judges that answer at once with results judged earlier (one per assignment, notebook and
    kind of student, renamed) and their feedback pages (rendered once, as a judge renders them,
    the student's id put in): what the parent does alone is then collecting, the window and
    recording."""

    def __init__(self, templates, plan):
        self.templates, self.plan_of = templates, plan

    def plan(self, job, reply):
        from ste_course.grading.judges import Ticket

        reply(("run", {"id": "/".join(job.key)}, Ticket("", "")))

    def judge(self, job, ticket, payload, reply):
        import copy

        from ste_course.grading.judges import Judged

        kind = self.plan_of[job.student]
        template, page = self.templates[(job.source.assignment, job.source.name, kind)]
        result = copy.copy(template)
        result.student = job.student
        reply(Judged(result, page.replace(STUDENT, job.student)))

    def close(self):
        pass


class InstantExecutor:
    """Workers infinitely fast: every run's result at once (the stub judges ignore it)."""

    def capacity(self):
        return 64

    def run_all(self, runs, on_result):
        for index, run in enumerate(runs):
            on_result(index, {"id": run["id"], "status": "", "events": []})

    def join(self):
        pass


def templates(solutions, sources, work):
    """Real results (sandboxed runs, judged) of a complete and a blank student, per notebook."""
    klass = work / "templates"
    classroom.make_class(solutions, klass, {"complete": "complete", "blank": "blank"})
    results = grading.grade(klass, work / "templates-out", sources, SECRET, jobs_n=2, sandbox=True, progress=False)
    out = {}
    for r in results:
        r.student, kind = STUDENT, r.student
        source = next(nb for nb in sources[r.assignment] if nb.name == r.notebook)
        out[(r.assignment, r.notebook, kind)] = (r, judges.with_page(r, source).page)
    return out


def ceiling_child(n_students, db_url, solutions, tmpl, out_queue):
    """One parent-only run in a fresh process: wall, first record, recording cost, peak RSS."""
    sources = load_assignments(solutions)
    with tempfile.TemporaryDirectory(prefix="ste-ceiling-") as tmp:
        klass = Path(tmp) / "submitted"
        plan = {f"student{i:05d}": ("complete" if i % 2 == 0 else "blank") for i in range(n_students)}
        n = classroom.make_class(solutions, klass, plan)
        base = _memory_kb("VmRSS")
        timers = Timers()
        undo = [timers.wrap(record.Recorder, "record_batch", "record"), timers.wrap(record.Recorder, "_gradebook", "db")]
        first = []
        original = grading._record_batch

        def spy(recorder, batch):
            recorded = original(recorder, batch)
            if batch and not first:
                first.append((time.perf_counter(), len(batch)))
            return recorded

        grading._record_batch = spy
        pool = grading.InlineJudges
        grading.InlineJudges = lambda *a: StubJudges(tmpl, plan)
        start = time.perf_counter()
        try:
            done = grading.grade(klass, Path(tmp) / "out", sources, SECRET, sandbox=False, db_url=db_url,
                                 progress=False, executor=InstantExecutor(), keep_results=False)
        finally:
            grading.InlineJudges, grading._record_batch = pool, original
            for restore in undo:
                restore()
        wall = time.perf_counter() - start
        peak = _memory_kb("VmHWM")
    out_queue.put(dict(n=n, recorded=len(done), wall=wall, first=first[0][0] - start, first_batch=first[0][1],
                       record_ms=1000 * timers.total["record"] / max(1, n), db_ms=1000 * timers.total["db"] / max(1, n),
                       peak_mb=peak / 1024, grown_mb=(peak - base) / 1024))


def _memory_kb(field):
    """This process's ``VmRSS`` (now) or ``VmHWM`` (its peak) in KB, from ``/proc/self/status``:
    unlike ``ru_maxrss``, the peak of this process's own memory, not of the parent it was
    started from (``ru_maxrss`` keeps the parent's peak across the exec of a spawned child)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def ceiling(solutions, sources, work, sizes, db_urls):
    import multiprocessing

    print("recording template results (a complete and a blank student, sandboxed) ...", file=sys.stderr, flush=True)
    tmpl = templates(solutions, sources, work)
    per_notebook = len([nb for nbs in sources.values() for nb in nbs])
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for name, url_of in db_urls:
        for size in sizes:
            students = max(1, size // per_notebook)
            q = ctx.Queue()
            proc = ctx.Process(target=ceiling_child, args=(students, url_of(size), solutions, tmpl, q))
            proc.start()
            got = q.get()
            proc.join()
            rows.append((name, got))
            print(f"  {name} {got['n']} notebooks: {got['n'] / got['wall']:.1f} nb/s", file=sys.stderr, flush=True)
    print("\nThe parent alone (instant stub executor, stub judges answering with recorded results; "
          "each run in a fresh process):\n")
    print("| gradebook | notebooks | wall s | notebooks/s | after the first grade, notebooks/s "
          "| first grade recorded after s | record ms/nb | of which database ms/nb | peak RSS MB "
          "| RSS growth during the run MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['n']} | {r['wall']:.1f} | {r['n'] / r['wall']:.1f} | "
              f"{(r['n'] - r['first_batch']) / (r['wall'] - r['first']):.1f} | {r['first']:.2f} | "
              f"{r['record_ms']:.1f} | {r['db_ms']:.1f} | {r['peak_mb']:.0f} | {r['grown_mb']:.0f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes of the LocalCluster")
    parser.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    parser.add_argument("--modes", default="serial,cluster", help="comma-separated: serial, cluster")
    parser.add_argument("--db", default=None, help="gradebook URL (default: SQLite in each output folder)")
    parser.add_argument("--ceiling", default="", metavar="SIZES",
                        help="also measure the parent alone for these class sizes in notebooks (e.g. 200,2000), "
                             "with SQLite and a throw-away PostgreSQL 15")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"serial", "cluster"}
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; use serial and/or cluster")
    sources = load_assignments(args.solutions.resolve())
    start = time.perf_counter()
    import ste_course.specs  # noqa: F401 - the parent's references (TensorFlow), imported once, untimed
    import tensorflow  # noqa: F401

    parent_import = time.perf_counter() - start
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ste-scale-") as tmp:
        work = Path(tmp)
        klass = work / "submitted"
        plan = {f"student{i:03d}": ("complete" if i % 2 == 0 else "blank") for i in range(args.students)}
        n = classroom.make_class(args.solutions.resolve(), klass, plan)
        runs = []
        for mode in modes:
            print(f"grading {n} notebooks: {mode} ...", file=sys.stderr, flush=True)
            runs.append(grade_once(mode, klass, work / f"out-{mode}", sources, args.workers, args.db))
        overhead = dask_overhead(klass, sources, args.workers) if "cluster" in modes else None
    assignments = len(sources)
    print(f"\n{args.students} students x {assignments} assignments = {n} notebooks (half complete, half blank), "
          f"{os.cpu_count()} cores (load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after); "
          f"cluster = LocalCluster, {args.workers} worker processes x 1 thread; the parent imported TensorFlow "
          f"once in {parent_import:.1f} s (not counted)\n")
    if not runs:
        print("(no grading mode run)")
    print("| mode | notebooks | wall s | notebooks/s | sandbox start (total / boots) | execution s/nb | "
          "preflight ms/nb | judging ms/nb | feedback ms/nb | database ms/nb | result file ms/nb | "
          "gradebook open s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(row(run, len(run["results"])))
    if len(runs) == 2 and runs[0]["results"]:
        a = {(r.student, r.assignment, r.notebook): (r.score, r.status) for r in runs[0]["results"]}
        b = {(r.student, r.assignment, r.notebook): (r.score, r.status) for r in runs[1]["results"]}
        print(f"\nsame grades in both modes: {a == b}; speed-up {runs[0]['wall'] / runs[1]['wall']:.2f}x")
    for run in runs:
        exe = sorted(run["execution"])
        judged = [sec for pending, sec in run["timers"].samples["judging"]
                  if plan.get(getattr(getattr(pending, "job", None), "student", None)) == "complete"]
        if exe:
            print(f"{run['mode']}: execution per notebook median {statistics.median(exe):.2f} s, "
                  f"max {exe[-1]:.2f} s, sum {sum(exe):.0f} s; judging a complete notebook "
                  f"{1000 * statistics.mean(judged) if judged else 0:.0f} ms on average; "
                  f"a worker's result is {run['result_kb']:.1f} KB on average")
    if overhead:
        seconds, count, size = overhead
        print(f"Dask alone (no-op task, warm {args.workers}-worker LocalCluster): {count} tasks in {seconds:.2f} s = "
              f"{1000 * seconds / count:.1f} ms per notebook; run dict {size:.1f} KB on average")
    if args.ceiling:
        sizes = [int(x) for x in args.ceiling.split(",") if x.strip()]
        spec = importlib.util.spec_from_file_location("pg_server", ROOT / "tests" / "test_postgres.py")
        pg = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(pg)
        server = pg.Server()
        try:
            server.start()
            dbs = [("SQLite", lambda size: None),
                   ("PostgreSQL 15", lambda size: server.create_database(f"ceiling{size}_{time.monotonic_ns()}"))]
            with tempfile.TemporaryDirectory(prefix="ste-scale-") as tmp:
                ceiling(args.solutions.resolve(), sources, Path(tmp), sizes, dbs)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
