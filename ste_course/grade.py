"""``ste-course grade``: collect -> preflight -> restore -> run in sandbox -> judge -> record.

Each stage is a function over plain data; the runs go to a pool of workers (one fork server
each, :mod:`ste_course.sandbox`), while judging and recording stay in this process, the single
writer.
"""

from __future__ import annotations

import hashlib
import queue
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ste_course.late import LatePolicy
from ste_course.judge import judge, plan, scrubber
from ste_course.preflight import PreflightError, prepare, read_submission
from ste_course.record import NotebookResult, Recorder, previous_result
from ste_course.sandbox import Limits, Worker, bwrap_path
from ste_course.source import SourceNotebook

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")


class GradeError(RuntimeError):
    pass


@dataclass
class Job:
    student: str
    source: SourceNotebook
    path: Path

    @property
    def key(self):
        return (self.student, self.source.assignment, self.source.name)


def collect(submissions: Path, sources: dict, students=None, assignments=None):
    """Jobs for every ``SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb`` the course expects,
    plus the results for folders that cannot be graded (bad student ids)."""
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise GradeError(f"no submissions folder at {submissions}")
    jobs, rejected = [], []
    for folder in sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith(".")):
        student = folder.name
        if students and student not in students:
            continue
        if not STUDENT_ID.match(student):
            rejected.append(student)
            continue
        for assignment, notebooks in sources.items():
            if assignments and assignment not in assignments:
                continue
            if not (folder / assignment).is_dir():
                continue  # not submitted at all: no row (nbgrader does the same)
            for nb in notebooks:
                jobs.append(Job(student, nb, folder / assignment / f"{nb.name}.ipynb"))
    return jobs, rejected


def load_secret(path: Path) -> str:
    """The instructor's grading secret (created on first use, readable by its owner only)."""
    path = Path(path).expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
        print(f"ste-course: created a grading secret at {path}; keep it (re-grading needs it) "
              "and out of the repository", file=sys.stderr)
    return path.read_text().strip()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _missing_reason(job: Job) -> str:
    folder = job.path.parent
    others = sorted(p.name for p in folder.glob("*.ipynb")) if folder.is_dir() else []
    hint = f" (found {', '.join(others[:5])}; the notebook must keep its name)" if others else ""
    return f"{job.path.name} was not submitted{hint}"


def _feedback_cells(source, prepared, events, scrub):
    """What the student sees: their code, instructions, visible test source and verdicts."""
    ends = {e.get("cell"): e for e in events if isinstance(e, dict) and e.get("event") == "end"}
    by_id = source.by_id()
    cells = []
    for cell in prepared.cells:
        original = by_id.get(cell.grade_id) if cell.locked else None
        if cell.cell_type == "markdown":
            cells.append({"kind": "markdown", "text": cell.source, "grade_id": cell.grade_id})
            continue
        if original is not None and original.grade:
            cells.append({"kind": "test", "text": original.visible_source, "grade_id": original.grade_id})
            continue
        cells.append({"kind": "code", "text": cell.source, "grade_id": cell.grade_id})
        end = ends.get(cell.index)
        if end is not None and not cell.locked:
            out = str(end.get("stdout") or "")[:5000]
            if end.get("error"):
                out += ("\n" if out else "") + str(end["error"])[:500]
            if out.strip():
                cells.append({"kind": "output", "text": scrub(out), "grade_id": None})
    return cells


def _stop_status(events, result, prepared, source):
    """(status, reason) from how the run ended."""
    if result.get("status") in ("timeout", "output", "error"):
        return result["status"], result.get("reason") or ""
    fatal = [e for e in events if e.get("event") == "fatal"]
    if fatal:
        return "error", f"the notebook could not start: {fatal[0].get('error', '')[:200]}"
    ended = {e.get("cell") for e in events if e.get("event") == "end"}
    graded = {c.index for c in prepared.code_cells if c.locked and c.grade_id in
              {g.grade_id for g in source.grade_cells}}
    if not graded <= ended:
        return "crash", "the notebook's process ended before its tests ran (a crash, os._exit or sys.exit at top level)"
    return "ok", ""


@dataclass
class Pending:
    """A notebook that passed preflight: what to run and what to judge it with."""

    job: Job
    prepared: object
    plan: object
    raw: bytes

    @property
    def run(self) -> dict:
        """The plain-data job for a worker (nothing here lets the sandbox see other files)."""
        return {"id": "/".join(self.job.key), "cells": [c.__dict__ for c in self.prepared.code_cells],
                "calls": self.plan.calls, "seed": 0}


def _base(job: Job) -> dict:
    source = job.source
    return dict(student=job.student, assignment=source.assignment, notebook=source.name,
                max_score=source.max_score, source_sha256=_sha256(source.path.read_bytes()))


def preflight(job: Job, secret: str):
    """A ``NotebookResult`` for a notebook that cannot run (missing, invalid), else a ``Pending``."""
    source = job.source
    if not job.path.exists() and not job.path.is_symlink():
        return NotebookResult(score=0.0, status="missing", reason=_missing_reason(job), **_base(job))
    try:
        raw = job.path.read_bytes() if job.path.is_file() and not job.path.is_symlink() else b""
        prepared = prepare(source, read_submission(job.path))
    except PreflightError as err:
        return NotebookResult(score=0.0, status=err.status, reason=err.reason, **_base(job))
    return Pending(job, prepared, plan(source, prepared, secret, job.student), raw)


def conclude(pending: Pending, result: dict) -> NotebookResult:
    """Judge a worker's plain-data result (outside the sandbox)."""
    source, prepared = pending.job.source, pending.prepared
    events = [e for e in result.get("events", []) if isinstance(e, dict)] if isinstance(result, dict) else []
    status, reason = _stop_status(events, result if isinstance(result, dict) else {}, prepared, source)
    cell_grades = judge(source, pending.plan, events, reason or None)
    scrub = scrubber(source)
    notes = "; ".join(prepared.notes)
    if notes:
        reason = f"{reason}; {notes}" if reason else notes
    seconds = result.get("seconds") if isinstance(result, dict) else None
    return NotebookResult(
        score=float(sum(g.points for g in cell_grades)), status=status, reason=scrub(reason),
        cells=[{"grade_id": g.grade_id, "points": g.points, "max_points": g.max_points,
                "messages": [scrub(m) for m in g.messages]} for g in cell_grades],
        submission_sha256=_sha256(pending.raw), seconds=seconds if isinstance(seconds, (int, float)) else None,
        feedback_cells=_feedback_cells(source, prepared, events, scrub), **_base(pending.job))


def apply_late(result: NotebookResult, job: Job, late: LatePolicy | None) -> NotebookResult:
    if late is not None and result.status != "missing":
        result.late, _, result.penalty = late.assess(result.assignment, job.path.parent, result.score,
                                                     result.max_score)
        result.score = max(0.0, result.score - result.penalty)
    return result


def grade_one(job: Job, worker: Worker, secret: str, late: LatePolicy | None = None) -> NotebookResult:
    """Grade one notebook on ``worker`` (preflight, run, judge); nothing is recorded."""
    item = preflight(job, secret)
    if isinstance(item, Pending):
        item = conclude(item, worker.run(item.run))
    return apply_late(item, job, late)


class LocalExecutor:
    """Runs notebooks on ``n`` fork-server workers of this machine, one thread each."""

    def __init__(self, n: int, sandbox: bool, limits: Limits):
        self.workers = [Worker(i, sandbox, limits) for i in range(n)]

    def run_all(self, runs: list, on_result) -> None:
        """Call ``on_result(index, result)`` (from worker threads) for each run dict."""
        pending: queue.Queue = queue.Queue()
        for item in enumerate(runs):
            pending.put(item)

        def work(worker):
            try:
                while True:
                    try:
                        index, run = pending.get_nowait()
                    except queue.Empty:
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


def grade(submissions: Path, out: Path, sources: dict, secret: str, jobs_n: int = 2,
          sandbox: bool = True, limits: Limits | None = None, db_url: str | None = None,
          students=None, assignments=None, force: bool = False, progress: bool = True,
          late: LatePolicy | None = None, executor=None):
    """Grade a class; returns the list of NotebookResult recorded in this run.

    ``executor`` runs the notebooks (default: a :class:`LocalExecutor` with ``jobs_n`` workers);
    whatever runs them, this process alone judges and records.
    """
    if sandbox and executor is None and not bwrap_path():
        raise GradeError("bubblewrap (bwrap) is not installed, so submissions cannot be sandboxed. "
                         "Install it (Debian: apt-get install bubblewrap) or pass --no-sandbox if "
                         "you trust every submission.")
    limits = limits or Limits()
    jobs, rejected = collect(submissions, sources, students, assignments)
    for student in rejected:
        print(f"ste-course: skipped folder {student[:60]!r}: not a valid student id", file=sys.stderr)
    # Naming students or assignments asks for a re-grade of exactly those.
    force = force or bool(students) or bool(assignments)
    todo = [job for job in jobs if force or not _already_graded(out, job)]
    finished: queue.Queue = queue.Queue()
    runnable = []
    for job in todo:
        item = preflight(job, secret)
        if isinstance(item, Pending):
            runnable.append(item)
        else:
            finished.put((job, item))
    if executor is None and runnable:
        executor = LocalExecutor(max(1, min(jobs_n, len(runnable))), sandbox, limits)
    if runnable:
        # Workers boot (import TensorFlow) while this process opens the gradebook.
        executor.run_all([p.run for p in runnable], lambda i, result: finished.put((runnable[i], result)))
    done = []
    recorder = Recorder(out, db_url, sources)
    try:
        bar = _progress(len(todo), progress)
        for _ in range(len(todo)):
            item, payload = finished.get()
            if isinstance(item, Pending):
                try:
                    result = conclude(item, payload)
                except Exception as err:  # noqa: BLE001
                    src = item.job.source
                    result = NotebookResult(item.job.student, src.assignment, src.name, 0.0, src.max_score, "error",
                                            f"internal grading error: {type(err).__name__}: {err}"[:300])
                job = item.job
            else:
                job, result = item, payload
            recorder.record(apply_late(result, job, late), job.source)
            done.append(result)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if runnable:
            executor.join()
    finally:
        recorder.write_csv()
        recorder.close()
    return done


def _already_graded(out: Path, job: Job) -> bool:
    """Graded by an earlier or interrupted run from the same files: the grade would be the same."""
    prev = previous_result(out, *job.key)
    return bool(prev) and job.path.is_file() and not job.path.is_symlink() \
        and prev.get("submission_sha256") == _sha256(job.path.read_bytes()) \
        and prev.get("source_sha256") == _sha256(job.source.path.read_bytes())


def _progress(total, enabled):
    if not enabled or not sys.stderr.isatty() or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="nb", desc="grading")
