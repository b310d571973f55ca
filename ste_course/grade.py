"""``ste-course grade``: collect -> preflight -> restore -> run in sandbox -> judge -> record.

Each stage is a function over plain data; the runs go to a pool of workers (one fork server
each, :mod:`ste_course.sandbox`), while judging and recording stay in this process, the single
writer.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ste_course.judge import harness_events, judge, plan, scrubber
from ste_course.late import LateError, LatePolicy, read_timestamp
from ste_course.preflight import MAX_NOTEBOOK_BYTES, PreflightError, parse_submission, prepare
from ste_course.gradebook import RETRIED
from ste_course.record import NotebookResult, Recorder
from ste_course.sandbox import Limits, Worker, bwrap_path, sandbox_problem
from ste_course.source import SourceNotebook
from ste_course.untrusted import NotOwnFile, clean, escaped_id, read_own, shown, valid_id


class GradeError(RuntimeError):
    pass


@dataclass
class Job:
    """One expected notebook of one submissions folder.

    ``folder`` is the folder's name as the file system has it (possibly not UTF-8); ``student``
    is the id it is graded under: the name itself when :func:`~ste_course.untrusted.valid_id`,
    else its escaped rendering, with ``problem`` saying why it cannot be the student's work.
    """

    student: str
    source: SourceNotebook
    root: Path  # the submissions folder
    folder: str
    problem: str = ""  # set: graded as ``invalid`` with this reason, nothing is read

    @property
    def key(self):
        return (self.student, self.source.assignment, self.source.name)

    @property
    def parts(self) -> tuple:
        """The path below ``root``, one component per element (read with ``read_own``)."""
        return (self.folder, self.source.assignment, f"{self.source.name}.ipynb")

    @property
    def path(self) -> Path:
        return self.root.joinpath(*self.parts)


def _kind(path: Path) -> str:
    """``"link"``, ``"folder"``, ``"other"`` or ``"none"`` for ``path`` itself (no link followed)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "none"
    return "link" if stat.S_ISLNK(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def _folder_problem(name: str, kind: str) -> str:
    if kind == "link":
        return (f"the student folder {shown(name, 60)} is a link; only a student's own folder is "
                "graded as theirs")
    if not valid_id(name):
        return (f"the folder name {shown(name, 60)} is not a usable student id (control or format "
                "characters, a path separator, or bytes that are not UTF-8); rename the folder")
    return ""


def collect(submissions: Path, sources: dict, students=None, assignments=None) -> list:
    """Every job of :func:`iter_jobs`, as a list."""
    return list(iter_jobs(submissions, sources, students, assignments))


def iter_jobs(submissions: Path, sources: dict, students=None, assignments=None):
    """A :class:`Job` (lazily, one student folder at a time) for every notebook the course expects in every folder of
    ``SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb`` (folders starting with ``.`` and
    plain files are not students). An assignment folder that does not exist was not submitted
    (no job, as nbgrader). A folder whose name is not a usable id, a student folder or an
    assignment folder that is a link gets jobs with a ``problem`` (graded ``invalid``): every
    assignment for a linked student folder, whose content is never looked at."""
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise GradeError(f"no submissions folder at {shown(submissions)}")
    for name in sorted(os.listdir(submissions)):
        kind = _kind(submissions / name)
        if name.startswith(".") or kind not in ("folder", "link"):
            continue
        student = name if valid_id(name) else escaped_id(name)
        if students and student not in students:
            continue
        problem = _folder_problem(name, kind)
        for assignment, notebooks in sources.items():
            if assignments and assignment not in assignments:
                continue
            where = _kind(submissions / name / assignment) if kind == "folder" else "link"
            if where in ("none", "other"):
                continue  # not submitted at all: no row (nbgrader does the same)
            why = problem or (f"the assignment folder {assignment} is a link; only a student's own "
                              "files are graded as theirs" if where == "link" else "")
            yield from (Job(student, nb, submissions, name, why) for nb in notebooks)


def layout_problem(submissions: Path, sources: dict, limit: int = 5) -> str:
    """Why nothing under ``submissions`` matched ``<student>/<assignment>/<notebook>.ipynb``:
    what was expected and what was found instead (names escaped, links not followed)."""
    names = sorted(sources)
    found = []
    for top, dirs, files in os.walk(submissions):
        depth = len(Path(top).relative_to(submissions).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < 2 else []
        found += [Path(top, f).relative_to(submissions) for f in sorted(files) if f.endswith(".ipynb")]
        if len(found) >= limit:
            break
    expected = (f"expected <student>/<assignment>/<notebook>.ipynb under {shown(submissions)}, with an "
                f"assignment of solutions/ ({', '.join(names)})")
    if not found:
        return f"{expected}; found no notebook at all"
    path = found[0]
    parts = path.parts
    if len(parts) == 1:
        hint = "flat files: put each in <student>/<assignment>/"
    elif len(parts) == 2 and parts[0] in sources:
        hint = "this looks like one student's folder: pass the folder that holds the students' folders"
    elif len(parts) == 3 and parts[0] in sources and parts[1] not in sources:
        hint = "assignment and student swapped?"
    elif len(parts) == 3:
        hint = f"{shown(parts[1], 60)} is not an assignment of solutions/"
    else:
        hint = "not <student>/<assignment>/<notebook>.ipynb"
    return f"{expected}; found {shown(path.as_posix(), 120)}: {hint}"


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


# What decides a grade besides the submission, the assignment's source and the secret: the
# checks (specs, the kernel side, the judge) and the library they call; a course's own checks
# folder is fingerprinted beside them (:func:`checks_fingerprint`).
CHECKING_CODE = ("ste_course/specs", "ste_course/inside", "ste_course/judge.py", "ste_course/checks.py",
                 "ste_course/evidence.py", "ste_course/preflight.py", "ste_course/source.py", "ste_utils")


def code_fingerprint(root: Path = Path(__file__).resolve().parent.parent) -> str:
    """SHA-256 over the checking code's Python files (paths and bytes): a changed check, spec
    or ``ste_utils`` function changes it."""
    digest = hashlib.sha256()
    for entry in CHECKING_CODE:
        path = root / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def course_checks(sources: dict) -> Path | None:
    """The checks folder of the course whose ``solutions/`` ``sources`` were loaded from
    (:func:`~ste_course.specs.declarative.checks_folder`: ``checks/`` beside ``solutions/``, or
    the folder ``[course] checks`` of its ``ste_course.toml`` names); None without sources."""
    from ste_course.specs.declarative import checks_folder

    for notebooks in sources.values():
        for nb in notebooks:  # solutions/<assignment>/<notebook>.ipynb
            return checks_folder(Path(nb.path).resolve().parents[2])
    return None


def checks_fingerprint(folder: Path | None) -> str:
    """SHA-256 over a course's checks folder: every file under it (the ``*.toml`` declarations
    and the reference ``.py`` files they name; caches and dot-files left out), relative paths and
    bytes, so a moved course keeps its fingerprint. A folder that does not exist gives ``"none"``."""
    if folder is None or not Path(folder).is_dir():
        return "none"
    folder = Path(folder)
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder)
        if not file.is_file() or any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            continue
        digest.update(rel.as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def secret_fingerprint(secret: str) -> str:
    """A fingerprint of the grading secret (a keyed hash: the secret cannot be found from it)."""
    import hmac

    return hmac.new(secret.encode(), b"ste-course grading secret fingerprint", "sha256").hexdigest()[:16]


def inputs(job: "Job", raw: bytes | None, context: str, late: "LatePolicy | None") -> str:
    """The fingerprint of everything a notebook's grade depends on: the submission's bytes, the
    assignment's source, ``context`` (the checking code, the course's checks folder and the
    secret's fingerprint), the late rule for its assignment and its ``timestamp.txt``."""
    stamp = "none"
    if late is not None and late.due.get(job.source.assignment) is not None:
        try:
            stamp = str(read_timestamp(job.path.parent))
        except LateError as err:
            stamp = f"unreadable: {err}"
    parts = [_sha256(raw) if raw is not None else "-", _sha256(job.source.path.read_bytes()), context,
             late.fingerprint(job.source.assignment) if late is not None else "none", stamp]
    return _sha256("\n".join(parts).encode())


def _missing_reason(job: Job) -> str:
    """What is in the (real, not linked) assignment folder instead, names escaped."""
    try:
        others = sorted(shown(n, 60) for n in os.listdir(job.path.parent) if n.endswith(".ipynb"))
    except OSError:
        others = []
    hint = f" (found {', '.join(others[:5])}; the notebook must keep its name)" if others else ""
    return f"{job.parts[-1]} was not submitted{hint}"


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
    """A ``NotebookResult`` for a notebook that cannot run (missing, invalid), else a ``Pending``.

    The notebook is read through the student's own folders only (no link followed), its size
    checked before it is read (:func:`~ste_course.untrusted.read_own`).
    """
    source = job.source
    if source.problems:  # the instructor's mistake: this notebook's rows, never the class
        more = f" (and {len(source.problems) - 1} more; run ste-course check)" if len(source.problems) > 1 else ""
        return NotebookResult(score=0.0, status="error", reason=f"the assignment's source is invalid: "
                              f"{source.problems[0]}{more}", **_base(job))
    if job.problem:
        return NotebookResult(score=0.0, status="invalid", reason=job.problem, **_base(job))
    try:
        raw = read_own(job.root, job.parts, MAX_NOTEBOOK_BYTES, job.parts[-1])
        prepared = prepare(source, parse_submission(raw, job.parts[-1]))
    except FileNotFoundError:
        return NotebookResult(score=0.0, status="missing", reason=_missing_reason(job), **_base(job))
    except NotOwnFile as err:
        return NotebookResult(score=0.0, status="invalid", reason=err.reason, **_base(job))
    except PreflightError as err:
        return NotebookResult(score=0.0, status=err.status, reason=err.reason, **_base(job))
    return Pending(job, prepared, plan(source, prepared, secret, job.student), raw)


def conclude(pending: Pending, result: dict) -> NotebookResult:
    """Judge a worker's plain-data result (outside the sandbox)."""
    source, prepared = pending.job.source, pending.prepared
    result = clean(result)  # the sandbox's JSON may hold lone surrogates: data, never an error
    events = [e for e in result.get("events", []) if isinstance(e, dict)] if isinstance(result, dict) else []
    stream = harness_events(events, pending.plan.order)  # only the harness's events are evidence
    events = stream.events
    status, reason = _stop_status(events, result if isinstance(result, dict) else {}, prepared, source)
    if stream.tampered and status in ("ok", "crash"):
        status, reason = "error", stream.tampered
    cell_grades = judge(source, pending.plan, events, reason or None)
    scrub = scrubber(source)
    notes = "; ".join(prepared.notes)
    if notes:
        reason = f"{reason}; {notes}" if reason else notes
    seconds = result.get("seconds") if isinstance(result, dict) else None
    return NotebookResult(
        score=float(sum(g.points for g in cell_grades)), status=status, reason=scrub(reason),
        cells=[{"grade_id": g.grade_id, "points": g.points, "max_points": g.max_points,
                "messages": [scrub(m) for m in g.messages], "manual": g.manual} for g in cell_grades],
        submission_sha256=_sha256(pending.raw), seconds=seconds if isinstance(seconds, (int, float)) else None,
        feedback_cells=_feedback_cells(source, prepared, events, scrub), **_base(pending.job))


def apply_late(result: NotebookResult, job: Job, late: LatePolicy | None) -> NotebookResult:
    """Take the late penalty off a graded notebook; an unreadable ``timestamp.txt`` is said in
    the reason (``late`` is ``unknown``, no penalty)."""
    if late is None or result.status in ("missing", "invalid") or late.due.get(result.assignment) is None:
        return result
    try:
        submitted = read_timestamp(job.path.parent)
    except LateError as err:
        note = f"lateness not assessed: {err}"
        result.reason = f"{result.reason}; {note}" if result.reason else note
        result.late = "unknown"
        return result
    is_late, seconds, result.penalty = late.rule(result.assignment, submitted, result.max_score)
    result.late, result.hours_late = ("yes" if is_late else "no"), round(seconds / 3600, 4)
    result.submitted_at = submitted.isoformat() if submitted else ""
    result.score = max(0.0, result.score - result.penalty)
    return result


def error_result(job: Job, stage: str, err: BaseException) -> NotebookResult:
    """The row of a notebook whose grading failed in this process (re-graded by the next run)."""
    src = job.source
    return NotebookResult(job.student, src.assignment, src.name, 0.0, src.max_score, "error",
                          f"internal grading error while {stage}: {type(err).__name__}: {shown(err, 240)}")


def guarded(job: Job, stage: str, step, *args):
    """``step(*args)``, or :func:`error_result` when it raises: one notebook never stops the run."""
    try:
        return step(*args)
    except Exception as err:  # noqa: BLE001 - whatever goes wrong is this notebook's row
        return error_result(job, stage, err)


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
        (any iterable, possibly blocking until its next run is ready: :mod:`ste_course.pipeline`)."""
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


# Notebooks written to the gradebook in one transaction when results queue up for the recorder
# (pipeline's flush): a crash loses at most these (not committed: graded again by the next run).
RECORD_BATCH = 32


def grade(submissions: Path, out: Path, sources: dict, secret: str, jobs_n: int = 2,
          sandbox: bool = True, limits: Limits | None = None, db_url: str | None = None,
          students=None, assignments=None, force: bool = False, progress: bool = True,
          late: LatePolicy | None = None, executor=None, drop_manual: bool = False,
          judges: int = 0, keep_results: bool = True):
    """Grade a class; returns the list of NotebookResult recorded in this run (without
    ``keep_results``, their keys (student, assignment, notebook) only: a large class's results
    are in the gradebook and files, not in this process's memory).

    The class streams through a bounded window (:class:`~ste_course.pipeline.Pipeline`): jobs are
    collected lazily, planned a few notebooks ahead of ``executor`` (default: a
    :class:`LocalExecutor` with ``jobs_n`` workers) and recorded as their results arrive.
    ``judges`` processes plan and judge (:class:`~ste_course.judging.JudgePool`; 0: this
    process); whatever runs the notebooks, only this process records. A notebook is graded
    again when :func:`inputs` changed since the gradebook recorded it, when its status does not
    judge the student (:data:`~ste_course.gradebook.RETRIED`), or with ``force``; hand edits in
    the gradebook survive a re-grade of the same submission unless ``drop_manual``.

    Raises:
        GradeError: nothing under ``submissions`` has the expected layout (:func:`layout_problem`).
    """
    from ste_course.judging import InlineJudges, JudgePool
    from ste_course.pipeline import Pipeline

    if sandbox and executor is None and not bwrap_path():
        raise GradeError("bubblewrap (bwrap) is not installed, so submissions cannot be sandboxed. "
                         "Install it (Debian: apt-get install bubblewrap) or pass --no-sandbox if "
                         "you trust every submission.")
    if sandbox and executor is None and (problem := sandbox_problem()):  # never graded without the limits
        raise GradeError(problem)
    limits = limits or Limits()
    jobs = iter_jobs(submissions, sources, students, assignments)
    first = next(jobs, None)
    if first is None:
        raise GradeError(layout_problem(Path(submissions), sources))
    # Naming students or assignments asks for a re-grade of exactly those.
    force = force or bool(students) or bool(assignments)
    context = f"{code_fingerprint()}|{checks_fingerprint(course_checks(sources))}|{secret_fingerprint(secret)}"
    judging = JudgePool(judges, sources, secret, context, late) if judges > 0 else InlineJudges(secret, context, late)
    executor = executor or LocalExecutor(max(1, jobs_n), sandbox, limits)
    done = []
    try:
        recorder = Recorder(out, db_url, sources, late.due if late else None, drop_manual)
    except BaseException:
        judging.close()
        raise
    bar = _progress(progress)
    pending = []  # judged, not written yet: at most RECORD_BATCH

    def flush():
        if not pending:
            return
        batch = pending[:]
        pending.clear()
        for job, recorded in zip((job for job, _ in batch), _record_batch(recorder, batch)):
            done.append(recorded if keep_results else job.key)
            if bar is not None:
                bar.update(1)

    def record(job, judged):
        pending.append((job, judged))
        if len(pending) >= RECORD_BATCH:
            flush()

    try:
        Pipeline(itertools.chain([first], jobs), judging, executor,
                 wanted=lambda job, ticket: force or not _already_graded(recorder, job, ticket.inputs),
                 record=record, failed=lambda job, stage, err: error_result(job, stage, err), flush=flush).run()
    finally:
        if bar is not None:
            bar.close()
        judging.close()
        try:
            recorder.write_csv()
        finally:
            recorder.close()
    return done


def _record_batch(recorder: Recorder, batch: list) -> list:
    """Record ``batch`` (``(job, judged)``: a :class:`~ste_course.judging.Judged` or a bare
    result) in one gradebook transaction; if that fails, each notebook on its own
    (:func:`_record`). Returns what was recorded, in order."""
    from ste_course.judging import Judged

    items = [(job, *((judged.result, judged.page) if isinstance(judged, Judged) else (judged, None)))
             for job, judged in batch]
    try:
        recorder.record_batch([(result, job.source, page) for job, result, page in items])
        return [result for _, result, _ in items]
    except Exception:  # noqa: BLE001 - nothing of the batch was committed: one by one
        return [_record(recorder, result, job, page) for job, result, page in items]


def _record(recorder: Recorder, result: NotebookResult, job: Job, page: str | None = None) -> NotebookResult:
    """Record ``result``; if that fails, record the failure as the notebook's error row (and if
    even that fails, say so on stderr): the run goes on either way. Returns what was recorded."""
    try:
        recorder.record(result, job.source, page)
        return result
    except Exception as err:  # noqa: BLE001
        failed = error_result(job, "recording", err)
    try:
        recorder.record(failed, job.source)
    except Exception as err:  # noqa: BLE001
        print(f"ste-course: could not record {shown('/'.join(job.key), 120)}: {type(err).__name__}: "
              f"{shown(err, 200)}", file=sys.stderr)
    return failed


def _already_graded(recorder: Recorder, job: Job, fingerprint: str) -> bool:
    """The gradebook holds this notebook's grade from the same :func:`inputs`, with a status that
    judges the student: grading it again would give the same grade. A gradebook that cannot be
    read says nothing: the notebook is graded again."""
    try:
        prev = recorder.previous(*job.key)
    except Exception:  # noqa: BLE001 - e.g. a dropped database connection: grade it
        return False
    return prev is not None and prev["status"] not in RETRIED and prev["inputs"] == fingerprint


def _progress(enabled):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit="nb", desc="grading")
