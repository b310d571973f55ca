"""``ste-course grade``: collect -> preflight -> restore -> run in sandbox -> judge -> record.

Each stage is a function over plain data (:mod:`~ste_course.grading.jobs`,
:mod:`~ste_course.grading.steps`, :mod:`~ste_course.grading.judges`); the runs go to a pool of
workers (one fork server each, :mod:`ste_course.sandbox`), while judging and recording stay in
this process, the single writer.
"""

from __future__ import annotations

import itertools
import secrets
import sys
from pathlib import Path

from ste_course.files import PRIVATE, atomic_write
from ste_course.grading.executors import LocalExecutor
from ste_course.grading.fingerprint import (checks_fingerprint, code_fingerprint, course_checks, limits_fingerprint,
                                            secret_fingerprint)
from ste_course.grading.jobs import GradeError, Job, iter_jobs, layout_problem
from ste_course.grading.judges import InlineJudges, Judged, JudgePool
from ste_course.grading.late import LatePolicy
from ste_course.grading.pipeline import Pipeline
from ste_course.grading.steps import internal_error
from ste_course.record.gradebook import RETRIED, capped
from ste_course.record.recorder import NotebookResult, Recorded, Recorder
from ste_course.sandbox import Limits, bwrap_path, sandbox_problem
from ste_course.untrusted import shown


def load_secret(path: Path) -> str:
    """The instructor's grading secret (created on first use, readable by its owner only)."""
    path = Path(path).expanduser()
    if not path.exists():
        atomic_write(path, secrets.token_hex(32) + "\n", PRIVATE, parents=True)
        print(f"ste-course: created a grading secret at {path}; keep it (re-grading needs it) "
              "and out of the repository", file=sys.stderr)
    return path.read_text().strip()


# Notebooks written to the gradebook in one transaction when results queue up for the recorder
# (pipeline's flush): a crash loses at most these (not committed: graded again by the next run).
RECORD_BATCH = 32


class Graded(list):
    """What :func:`grade` recorded (see there), with ``dropped``: the
    :class:`~ste_course.record.recorder.DroppedEdits` of the notebooks whose hand edits this run
    dropped (listed in ``hand_edits_dropped.csv`` of the output folder too)."""

    dropped: list = []


def grade(submissions: Path, out: Path, sources: dict, secret: str, jobs_n: int = 2,
          sandbox: bool = True, limits: Limits | None = None, db_url: str | None = None,
          students=None, assignments=None, force: bool = False, progress: bool = True,
          late: LatePolicy | None = None, executor=None, drop_manual: bool = False,
          judges: int = 0, keep_results: bool = True, retry_errors: bool = False) -> Graded:
    """Grade a class; returns the list of NotebookResult recorded in this run (without
    ``keep_results``, their keys (student, assignment, notebook) only: a large class's results
    are in the gradebook and files, not in this process's memory), a :class:`Graded`.

    The class streams through a bounded window (:class:`~ste_course.grading.pipeline.Pipeline`): jobs are
    collected lazily, planned a few notebooks ahead of ``executor`` (default: a
    :class:`LocalExecutor` with ``jobs_n`` workers) and recorded as their results arrive.
    ``judges`` processes plan and judge (:class:`~ste_course.grading.judges.JudgePool`; 0: this
    process); whatever runs the notebooks, only this process records. A notebook is graded
    again when :func:`inputs` changed since the gradebook recorded it (the submission, the
    assignment as ``sources`` holds it, the grading code, the course's checks, the secret, the
    limits, the late rule, the timestamp), when its status does not judge the student
    (:data:`~ste_course.record.gradebook.RETRIED`), when its files are not those of its grade
    (:meth:`~ste_course.record.recorder.Recorder.complete`), or with ``force``; hand edits in
    the gradebook survive a re-grade of the same submission unless ``drop_manual``, and an
    ``error`` never replaces a grade. A notebook that ended in an error
    :data:`~ste_course.record.gradebook.ERROR_CAP` times in a row from the same inputs is left as
    it is (:func:`~ste_course.record.gradebook.capped`; its row says so) unless ``retry_errors``
    or ``force``.

    An executor with a ``start()`` is started before anything is recorded.

    Raises:
        GradeError: nothing under ``submissions`` has the expected layout (:func:`layout_problem`),
            or the executor cannot start or run notebooks
            (:class:`~ste_course.grading.executors.ExecutorError`: the run stops at once).
    """
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
    retry_errors = retry_errors or force
    owned, executor = executor is None, executor or LocalExecutor(max(1, jobs_n), sandbox, limits)
    if callable(getattr(executor, "start", None)):
        _start(executor)
    context = (f"{code_fingerprint()}|{checks_fingerprint(course_checks(sources))}|{secret_fingerprint(secret)}"
               f"|{limits_fingerprint(limits)}")
    judging = JudgePool(judges, sources, secret, context, late) if judges > 0 else InlineJudges(secret, context, late)
    done = Graded()
    try:
        recorder = Recorder(out, db_url, sources, late.due if late else None, drop_manual)
    except BaseException:
        judging.close()
        if owned and callable(getattr(executor, "stop", None)):  # a worker launched by start() and never used
            executor.stop()
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
        result = judged.result if isinstance(judged, Judged) else judged
        if not retry_errors and result.status in RETRIED and _capped(recorder, job, result.inputs):
            return  # an error planned without a run (e.g. the assignment's source): left as it is
        pending.append((job, judged))
        if len(pending) >= RECORD_BATCH:
            flush()

    failed = None
    try:
        Pipeline(itertools.chain([first], jobs), judging, executor,
                 wanted=lambda job, ticket: force or not (_already_graded(recorder, job, ticket.inputs) or (
                     not retry_errors and _capped(recorder, job, ticket.inputs))),
                 record=record, failed=internal_error, flush=flush).run()
    except BaseException as err:  # e.g. ExecutorError (a GradeError): the workers cannot run notebooks
        failed = err
        raise
    finally:
        if bar is not None:
            bar.close()
        judging.close()
        if owned and callable(getattr(executor, "stop", None)):  # launched by start(), never used
            executor.stop()
        done.dropped = list(recorder.dropped)
        try:
            recorder.write_csv()
        except Exception as err:  # noqa: BLE001 - never hides the error that stopped the run
            if failed is None:
                raise
            print(f"ste-course: grades.csv could not be written ({type(err).__name__}: {shown(err, 200)}); "
                  "`ste-course feedback` writes it again", file=sys.stderr)
        finally:
            recorder.close()
    return done


def _start(executor) -> None:
    """Start ``executor`` (e.g. connect to a cluster): any failure is a :class:`GradeError`."""
    try:
        executor.start()
    except GradeError:
        raise
    except Exception as err:  # noqa: BLE001 - one line saying what and where
        raise GradeError(f"the executor cannot start: {type(err).__name__}: {shown(err, 300)}") from err


def _record_batch(recorder: Recorder, batch: list) -> list:
    """Record ``batch`` (``(job, judged)``: a :class:`~ste_course.grading.judges.Judged` or a bare
    result) in one gradebook transaction; if that fails, each notebook on its own
    (:func:`_record`). Returns what was recorded, in order."""
    items = [(job, *((judged.result, judged.page) if isinstance(judged, Judged) else (judged, None)))
             for job, judged in batch]
    try:
        done = recorder.record_batch([(result, job.source, page) for job, result, page in items])
    except Exception:  # noqa: BLE001 - nothing of the batch was committed: one by one
        return [_record(recorder, result, job, page) for job, result, page in items]
    _files_problems(done)
    return [result for _, result, _ in items]


def _record(recorder: Recorder, result: NotebookResult, job: Job, page: str | None = None) -> NotebookResult:
    """Record ``result``; if that fails (nothing was committed), record the failure as the
    notebook's error row (which never replaces a grade), and if even that fails, say so on
    stderr: the run goes on either way. A grade whose files could not be written is recorded:
    said on stderr, never an error row. Returns what was recorded."""
    try:
        _files_problems(recorder.record(result, job.source, page))
        return result
    except Exception as err:  # noqa: BLE001
        failed = internal_error(job, "recording", err)
        failed.submission_sha256 = result.submission_sha256
    try:
        _files_problems(recorder.record(failed, job.source))
    except Exception as err:  # noqa: BLE001
        print(f"ste-course: could not record {shown('/'.join(job.key), 120)}: {type(err).__name__}: "
              f"{shown(err, 200)}", file=sys.stderr)
    return failed


def _files_problems(done: Recorded) -> None:
    for result, problem in done.problems:
        key = "/".join((result.student, result.assignment, result.notebook))
        print(f"ste-course: {shown(key, 120)} is recorded in the gradebook, but its files could not be "
              f"written ({shown(problem, 200)}); the next run writes them", file=sys.stderr)


def _already_graded(recorder: Recorder, job: Job, fingerprint: str) -> bool:
    """The gradebook holds this notebook's grade from the same :func:`inputs`, with a status that
    judges the student, and its files are of that grade (missing pages are rendered again):
    grading it again would give the same grade. A gradebook that cannot be read says nothing:
    the notebook is graded again."""
    try:
        prev = recorder.previous(*job.key)
        return prev is not None and prev["status"] not in RETRIED and prev["inputs"] == fingerprint \
            and recorder.complete(*job.key, prev)
    except Exception:  # noqa: BLE001 - e.g. a dropped database connection: grade it
        return False


def _capped(recorder: Recorder, job: Job, fingerprint: str) -> bool:
    """The gradebook's row of this notebook is an error that ended
    :data:`~ste_course.record.gradebook.ERROR_CAP` times in a row from these inputs. A gradebook
    that cannot be read says nothing: the notebook is graded."""
    try:
        return capped(recorder.previous(*job.key), fingerprint)
    except Exception:  # noqa: BLE001 - e.g. a dropped database connection: grade it
        return False


def _progress(enabled):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit="nb", desc="grading")
