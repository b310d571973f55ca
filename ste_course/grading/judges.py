"""Judges: the trusted work of grading, done on plain data beside the parent's recording.

Two kinds of work per notebook, both in the instructor's own processes (never in a sandbox or
on a Dask worker):

* :func:`plan_job`: read the submission (through the student's own folders), preflight it, draw
  its cases from the secret and compute the fingerprint of what its grade depends on. The run
  dict it returns is what a worker needs (cells and the student's cases, never the secret or the
  seed); the :class:`Ticket` is what the parent keeps while the notebook runs (two hashes).
* :func:`judge_job`: read the submission again, make sure its bytes are those the run was
  planned from, draw the same cases again (deterministic: secret, student, cell, answers),
  compute the references (NumPy for the built-in specs: :mod:`ste_course.references`), compare
  the worker's evidence, apply the late rule.
* :func:`with_page`: render the notebook's feedback page from plain data (its cells, evidence
  and part scores as a gradebook without hand edits holds them), so the parent only writes the
  file (nbconvert's rendering is most of what recording a notebook would cost it). The page is
  rendered from the result the judge scrubbed: hidden tests never reach it.

:class:`JudgePool` runs them in ``n`` processes of this machine (spawned: each imports
TensorFlow once, while the sandboxes boot, only if a reference of the run needs it), so the parent's own cost per notebook is recording;
:class:`InlineJudges` runs them in the calling thread (small runs, tests). Both give the same
grades: the functions are the same and depend only on the files, the secret and the evidence.
The judges hold the grading secret, as the parent does; nothing they compute is sent to a
worker except the run dict.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from ste_course.grading.fingerprint import inputs
from ste_course.grading.jobs import Job
from ste_course.grading.steps import Pending, apply_late, conclude, guarded, internal_error, preflight
from ste_course.untrusted import clean


@dataclass(frozen=True)
class Ticket:
    """What the parent keeps of a notebook while it runs."""

    sha256: str  # of the submission's bytes the run was planned from
    inputs: str  # fingerprint of everything its grade depends on (ste_course.grading.fingerprint.inputs)


def plan_job(job, secret: str, context: str, late):
    """``("run", run dict, Ticket)`` for a notebook to run, else ``("result", NotebookResult)``
    (missing, invalid, unreadable: graded without running)."""
    item = guarded(job, "reading the submission", preflight, job, secret)
    raw = item.raw if isinstance(item, Pending) else None
    fingerprint = guarded(job, "reading the submission", inputs, job, raw, context, late)
    if not isinstance(fingerprint, str):
        item, fingerprint = fingerprint, ""
    if isinstance(item, Pending):
        return "run", item.run, Ticket(hashlib.sha256(raw).hexdigest(), fingerprint)
    item = guarded(job, "applying the late rule", apply_late, item, job, late)
    item.inputs = fingerprint
    return "result", with_page(item, job.source)


def judge_job(job, ticket: Ticket, payload, secret: str, late):
    """The worker's ``payload`` judged: the notebook's ``NotebookResult``."""
    item = guarded(job, "reading the submission", preflight, job, secret)
    if not isinstance(item, Pending) or hashlib.sha256(item.raw).hexdigest() != ticket.sha256:
        result = internal_error(job, "judging", RuntimeError(
            "the submission changed (or vanished) while it was being graded; the next run grades it"))
        result.inputs = ""
        return result
    result = guarded(job, "judging", conclude, item, payload)
    result = guarded(job, "applying the late rule", apply_late, result, job, late)
    result.inputs = ticket.inputs
    result.submission_sha256 = result.submission_sha256 or ticket.sha256  # an error's too: of these bytes
    return with_page(result, job.source)


@dataclass(frozen=True)
class Judged:
    """A judge's answer: the notebook's result (cleaned) and its feedback page rendered for a
    gradebook that holds no hand edit of it (``None``: the recorder renders it)."""

    result: object  # ste_course.record.recorder.NotebookResult
    page: str | None


def with_page(result, source) -> Judged:
    """``result`` with its page rendered from :func:`ste_course.record.gradebook.fresh_parts`: the bytes
    the recorder would render after writing it to a gradebook without hand edits (the recorder
    checks that before it uses the page). A page that cannot be rendered here is left to the
    recorder, which then says why in the notebook's row."""
    from dataclasses import asdict

    from ste_course.record.feedback import render_feedback
    from ste_course.record.gradebook import fresh_parts
    from ste_course.record.recorder import NotebookResult

    result = NotebookResult(**clean(asdict(result)))
    if source is None:
        return Judged(result, None)
    try:
        return Judged(result, render_feedback(result, fresh_parts(result, source)))
    except Exception:  # noqa: BLE001 - the grade stands; the recorder renders (and reports) it
        return Judged(result, None)


class InlineJudges:
    """Plans and judges in the calling thread (the parent's own cost then includes judging)."""

    def __init__(self, secret: str, context: str, late):
        self.secret, self.context, self.late = secret, context, late

    def plan(self, job, reply) -> None:
        reply(_attempt(plan_job, job, self.secret, self.context, self.late))

    def judge(self, job, ticket, payload, reply) -> None:
        reply(_attempt(judge_job, job, ticket, payload, self.secret, self.late))

    def close(self) -> None:
        pass


def _attempt(step, *args):
    try:
        return step(*args)
    except Exception as err:  # noqa: BLE001 - the pipeline makes it the notebook's error row
        return err


# ---------------------------------------------------------------- the pool
_STATE: dict = {}  # in a judge process: sources, secret, context, late


def _warm(tensorflow: bool) -> None:
    """Render a page (nbconvert compiles its templates once per process) and, when a reference
    of the run needs it, import TensorFlow (``ste_utils``) while the judge plans and the worker
    boots, so that judging the first notebook waits for neither (planning needs no TensorFlow)."""
    from ste_course.record.feedback import render_feedback
    from ste_course.record.recorder import NotebookResult

    try:  # a cell of each kind: the lexer's and the markdown's patterns compile on first use
        render_feedback(NotebookResult("warm", "warm", "warm.ipynb", 0.0, 1.0, "ok", "", feedback_cells=[
            {"kind": "markdown", "text": "*a* $x^2$", "grade_id": None},
            {"kind": "code", "text": "import numpy as np\nx = np.ones(2)  # warm", "grade_id": None},
            {"kind": "output", "text": "warm", "grade_id": None}]))
    except Exception:  # noqa: BLE001 - only a head start: the real pages say what fails
        pass
    if tensorflow:
        import ste_utils  # noqa: F401


def needs_tensorflow(cells) -> bool:
    """Whether judging ``cells`` computes a reference with TensorFlow (a spec whose
    ``tensorflow_reference`` is true, or one that cannot be looked up here: the judge then says
    why, and TensorFlow is imported in case)."""
    from ste_course.specs.base import get_spec

    for cell in cells:
        for call in getattr(cell, "checks", ()):
            try:
                if get_spec(call.spec).tensorflow_reference:
                    return True
            except Exception:  # noqa: BLE001 - an unknown spec is the notebook's error, later
                return True
    return False


def _start_judge(sources, secret, context, late):
    import ste_course.specs  # noqa: F401 - the specs (a reference may import TensorFlow: _warm)
    from ste_course.grading.fingerprint import inputs  # noqa: F401 - what planning and pages import,
    from ste_course.record import feedback, gradebook, recorder  # noqa: F401 - before _warm's thread
    from ste_course.authoring.derive import derive_all

    cells = [c for nbs in sources.values() for nb in nbs for c in nb.grade_cells]
    threading.Thread(target=_warm, args=(needs_tensorflow(cells),), name="ste-judge-warm", daemon=True).start()

    try:  # every part's forbid list, once (a failure shows in each notebook's plan instead)
        derive_all(cells)
    except Exception:  # noqa: BLE001
        pass

    _STATE.update(sources=sources, secret=secret, context=context, late=late)


def _job(key):
    """The :class:`~ste_course.grading.jobs.Job` of ``key`` (a job travels as its plain fields)."""
    student, assignment, name, root, folder, problem = key
    source = next(nb for nb in _STATE["sources"][assignment] if nb.name == name)
    return Job(student, source, root, folder, problem)


def _plan_remote(key):
    return plan_job(_job(key), _STATE["secret"], _STATE["context"], _STATE["late"])


def _judge_remote(key, ticket, payload):
    return judge_job(_job(key), ticket, payload, _STATE["secret"], _STATE["late"])


def _outcome(future):
    """The future's value, or the exception it ended with (cancelled, broken pool, raised)."""
    try:
        return future.result()
    except BaseException as err:  # noqa: BLE001 - every notebook gets its row
        return err


def job_key(job) -> tuple:
    return (job.student, job.source.assignment, job.source.name, job.root, job.folder, job.problem)


class JudgePool:
    """Plans and judges in ``n`` spawned processes of this machine (see the module docstring).

    A judge process that dies (out of memory, killed) breaks the pool: the notebooks it held get
    an ``error`` row (graded again by the next run) and a new pool takes the next ones.
    """

    def __init__(self, n: int, sources: dict, secret: str, context: str, late):
        self.n, self.args = max(1, int(n)), (sources, secret, context, late)
        self.pool = self._new_pool()
        self.pool.submit(int)  # one judge starts now, beside the worker's boot and the gradebook's opening

    def _new_pool(self):
        return ProcessPoolExecutor(self.n, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_judge, initargs=self.args)

    def _submit(self, reply, function, *args) -> None:
        try:
            future = self.pool.submit(function, *args)
        except BrokenProcessPool:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            future = self.pool.submit(function, *args)
        future.add_done_callback(lambda f: reply(_outcome(f)))

    def plan(self, job, reply) -> None:
        self._submit(reply, _plan_remote, job_key(job))

    def judge(self, job, ticket, payload, reply) -> None:
        # Cleaned here: data nested thousands of levels deep (the sandbox's) cannot be pickled.
        self._submit(reply, _judge_remote, job_key(job), ticket, clean(payload))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
