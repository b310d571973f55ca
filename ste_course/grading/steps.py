"""The steps of one notebook, each a function over plain data: :func:`preflight` (read it through
the student's own folders and check it against its source), :func:`conclude` (judge a worker's
result), :func:`apply_late` (the late rule), and :func:`guarded` with :func:`error_result`
(whatever goes wrong in a step is that notebook's ``error`` row, never the class's)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ste_course.grading.fingerprint import sha256_hex
from ste_course.grading.jobs import Job
from ste_course.grading.judge import harness_events, judge, plan, scrubber
from ste_course.grading.late import LateError, LatePolicy, read_timestamp
from ste_course.grading.preflight import MAX_NOTEBOOK_BYTES, PreflightError, parse_submission, prepare
from ste_course.record.recorder import NotebookResult
from ste_course.untrusted import LEFT_OUT, NotOwnFile, clean, read_own, shown


def _missing_reason(job: Job) -> str:
    """Why ``ste-course collect`` left the notebook out (its note, :data:`~ste_course.untrusted.LEFT_OUT`),
    else what is in the (real, not linked) assignment folder instead, names escaped."""
    try:
        note = read_own(job.root, (*job.parts[:-1], LEFT_OUT), 64 * 1024, LEFT_OUT).decode("utf-8", "replace")
    except OSError:
        note = ""
    for line in note.splitlines():
        name, _, why = line.partition("\t")
        if name == shown(job.parts[-1]):
            return f"{shown(job.parts[-1], 60)} was not collected: {shown(why, 100)} (ste-course collect leaves it out)"
    try:
        others = sorted(shown(n, 60) for n in os.listdir(job.path.parent) if n.endswith(".ipynb"))
    except OSError:
        others = []
    hint = f" (found {', '.join(others[:5])}; the notebook must keep its name)" if others else ""
    return f"{job.parts[-1]} was not submitted{hint}"


def _feedback_cells(source, prepared, events, scrub, quiet=False):
    """What the student sees: their code, instructions, visible test source and verdicts (with
    ``quiet``, :func:`~ste_course.grading.judge.quiet`: no output of theirs)."""
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
        if end is not None and not cell.locked and not quiet:
            out = str(end.get("stdout") or "")[:5000]
            if end.get("error"):
                out += ("\n" if out else "") + str(end["error"])[:500]
            if out.strip():
                cells.append({"kind": "output", "text": scrub(out), "grade_id": None})
    return cells


def _stop_status(events, result, prepared, source, quiet=False):
    """(status, reason) from how the run ended (with ``quiet``, no text the run wrote)."""
    if result.get("status") in ("timeout", "output", "error", "crash"):  # crash: the worker's memory group
        return result["status"], result.get("reason") or ""
    fatal = [e for e in events if e.get("event") == "fatal"]
    if fatal:
        said = "" if quiet else f": {str(fatal[0].get('error', ''))[:200]}"
        return "error", f"the notebook could not start{said}"
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
        # a check cell's hidden blocks reach the sandbox as their calls only (judge.sandbox_source)
        cells = [dict(c.__dict__, source=self.plan.sources.get(str(c.index), c.source)) for c in self.prepared.code_cells]
        return {"id": "/".join(self.job.key), "cells": cells,
                "calls": self.plan.calls, "seed": 0}


def _base(job: Job) -> dict:
    source = job.source
    return dict(student=job.student, assignment=source.assignment, notebook=source.name,
                max_score=source.max_score, source_sha256=sha256_hex(source.path.read_bytes()))


def preflight(job: Job, secret: str):
    """A ``NotebookResult`` for a notebook that cannot run (missing, invalid), else a ``Pending``.

    The notebook is read through the student's own folders only (no link followed), its size
    checked before it is read (:func:`~ste_course.untrusted.read_own`).
    """
    source = job.source
    if source.problems:  # the instructor's mistake: this notebook's rows, never the class
        more = f" (and {len(source.problems) - 1} more; run ste-course check)" if len(source.problems) > 1 else ""
        return error_result(job, f"the assignment's source is invalid: {source.problems[0]}{more}",
                            source_sha256=sha256_hex(source.path.read_bytes()))
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
    quiet = pending.plan.quiet
    status, reason = _stop_status(events, result if isinstance(result, dict) else {}, prepared, source, quiet)
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
        submission_sha256=sha256_hex(pending.raw), seconds=seconds if isinstance(seconds, (int, float)) else None,
        feedback_cells=_feedback_cells(source, prepared, events, scrub, quiet), **_base(pending.job))


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


def error_result(job: Job, reason: str, **fields) -> NotebookResult:
    """The one builder of a notebook's ``error`` row: no points, ``reason`` said, graded again by
    the next run (:data:`~ste_course.record.gradebook.RETRIED`); ``fields`` of
    :class:`~ste_course.record.recorder.NotebookResult` known besides (no file is read here)."""
    src = job.source
    return NotebookResult(job.student, src.assignment, src.name, 0.0, src.max_score, "error", reason, **fields)


def internal_error(job: Job, stage: str, err: BaseException) -> NotebookResult:
    """The row of a notebook whose grading failed in this process while ``stage``."""
    return error_result(job, f"internal grading error while {stage}: {type(err).__name__}: {shown(err, 240)}")


def guarded(job: Job, stage: str, step, *args):
    """``step(*args)``, or :func:`internal_error` when it raises: one notebook never stops the run."""
    try:
        return step(*args)
    except Exception as err:  # noqa: BLE001 - whatever goes wrong is this notebook's row
        return internal_error(job, stage, err)
