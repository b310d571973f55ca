"""Records that never lose the instructor's work (issue 22), proven by killing the grader.

A tiny class (the bring-your-own fixture: assert cells and a written answer) is graded, given
hand edits through nbgrader's API (a manual score, extra credit, comments), then graded again
with a resubmission and raised limits (every notebook re-graded, one student's hand edits
dropped). That second run is the one attacked:

* its process group is SIGKILLed just before and just after every stage boundary (each
  gradebook commit and each file put in place, ``os.replace``) and at random moments;
* a file write fails (``os.replace`` raising ENOSPC from the k-th write on: a disk that fills up);
* the database connection drops at the k-th commit (once, and from then on).

After each fault a plain re-run must end with exactly the gradebook (scores, hand edits,
comments, status rows), feedback pages, ``autograded/`` notebooks, evidence and
``grades.csv`` of an uninterrupted run, with no journal and no temporary file left. No sandbox
and no TensorFlow: a replay executor answers for the workers (this is the recording path's test).
The other tests take the issue's items one by one.
"""

from __future__ import annotations

import csv
import errno
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from nbgrader.api import Gradebook
from sqlalchemy import select

from ste_course.authoring.source import load_assignments
import ste_course.grading.fingerprint as fingerprint
import ste_course.grading.run as run
from ste_course.grading.jobs import GradeError
from ste_course.grading.run import grade
from ste_course.record.gradebook import STATUS
from ste_course.sandbox import Limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from classroom import make_class  # noqa: E402

FAULT_POINTS: list = []  # every fault tried, for the closing count


def _page(result, parts) -> str:
    """A feedback page in a few microseconds (nbconvert takes a quarter of a second): the same
    inputs as the real one (the evidence and the gradebook's part scores and comments), so a page
    of another grade or of other hand edits differs, as the real page would."""
    parts = {k: sorted(v) if isinstance(v, set) else v for k, v in parts.items()}
    return json.dumps([asdict(result), parts], sort_keys=True, default=list)


@pytest.fixture(scope="module", autouse=True)
def _environment():
    """nbgrader's gradebook runs ``alembic`` by name; the grading code as it is when the module
    starts (others may edit the tree while the tests run); quick pages."""
    import ste_course.record.feedback as feedback
    import ste_course.record.recorder as recorder
    import ste_course.record.writelock as writelock

    frozen = fingerprint.code_fingerprint()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        mp.setattr(run, "code_fingerprint", lambda root=None: frozen)
        mp.setattr(feedback, "render_feedback", _page)
        mp.setattr(recorder, "render_feedback", _page)
        mp.setattr(os, "fsync", lambda fd: None)  # the machine never loses power here: no need to wait for the disk
        mp.setitem(writelock.retrying.__kwdefaults__, "pause", 0.0)  # retry a dropped connection at once
        yield


class Answers:
    """The workers, replayed: every cell starts and ends; the test cells end with an error when a
    student's code still raises NotImplementedError (a blank answer)."""

    def __init__(self):
        self.runs = []

    def run_all(self, runs, on_result):
        for index, one in enumerate(runs):
            self.runs.append(one["id"])
            blank = any("NotImplementedError" in c["source"] for c in one["cells"] if not c["locked"])
            events = []
            for c in one["cells"]:
                end = {"event": "end", "cell": c["index"], "stdout": ""}
                if c["locked"] and blank and "assert" in c["source"]:
                    end["error"] = "AssertionError"
                events += [{"event": "start", "cell": c["index"]}, end]
            on_result(index, {"id": one["id"], "status": "ok", "events": events, "seconds": 0.1})

    def join(self):
        pass


def _grade(subs, out, solutions, executor=None, **kwargs) -> list:
    kwargs.setdefault("limits", Limits(cell_seconds=61.0))
    return grade(subs, out, load_assignments(solutions), "secret", sandbox=False, progress=False,
                 executor=executor or Answers(), **kwargs)


def _hand_edits(out: Path) -> None:
    """What formgrader saves, through nbgrader's API: a manual score and comment for ann's written
    answer, extra credit and a comment on bob's first test, a manual score for cat's."""
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        gb.find_grade("why", "ps1", "ps1", "ann").manual_score = 0.5
        gb.find_comment("why", "ps1", "ps1", "ann").manual_comment = "Half: the cost is right, say why."
        gb.find_grade("correct_squares", "ps1", "ps1", "bob").extra_credit = 1.0
        gb.find_comment("squares", "ps1", "ps1", "bob").manual_comment = "Nice try."
        gb.find_grade("why", "ps1", "ps1", "cat").manual_score = 1.0
        gb.db.commit()


def _state(out: Path) -> dict:
    """Everything the record and its views hold: the gradebook's grades, hand edits, comments and
    status rows; every page, autograded notebook and evidence file; grades.csv; the report of
    dropped hand edits (without its time column, as a set: a crash may list a line twice)."""
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        book = {}
        for assignment in gb.assignments:
            for sub in assignment.submissions:
                for nb in sub.notebooks:
                    key = (sub.student.id, assignment.name, nb.name)
                    book[key] = (
                        sorted((g.name, g.auto_score, g.manual_score, g.extra_credit, g.needs_manual_grade)
                               for g in nb.grades),
                        sorted((c.name, c.auto_comment, c.manual_comment) for c in nb.comments),
                        nb.late_submission_penalty, nb.score)
        status = sorted(tuple(r) for r in gb.db.execute(select(STATUS)))
    files = {}
    for folder in ("feedback", "autograded", "results"):
        for path in sorted((out / folder).rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                files[path.relative_to(out).as_posix()] = path.read_bytes()
    report = out / "hand_edits_dropped.csv"
    dropped = set()
    if report.exists():
        with open(report, newline="", encoding="utf-8") as f:
            dropped = {tuple(r[1:]) for r in list(csv.reader(f))[1:]}
    return dict(book=book, status=status, files=files, csv=(out / "grades.csv").read_bytes(), dropped=dropped)


def _leftovers(out: Path) -> list:
    """A journal, a half-made backup or a temporary file left behind (none may be)."""
    found = [p for p in (out / ".journal").glob("*")] if (out / ".journal").is_dir() else []
    found += [p for p in out.rglob(".*") if p.is_file() and p.parent.name != ".journal"]
    return found


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    """S0: the class graded once and hand-edited; the run to attack: bob resubmitted (his hand
    edits go), fay is new, and the cell limit was raised (everyone is graded again)."""
    root = tmp_path_factory.mktemp("crash")
    solutions = root / "solutions"
    shutil.copytree(HERE / "fixtures" / "byo", solutions)
    subs = root / "subs"
    make_class(solutions, subs, {"ann": "complete", "bob": "blank", "cat": "complete", "dan": "blank"})
    s0 = root / "s0"
    _grade(subs, s0, solutions, limits=Limits())
    _hand_edits(s0)
    make_class(solutions, subs, {"bob": "complete", "fay": "complete"})
    expected_out = root / "expected"
    shutil.copytree(s0, expected_out)
    started = time.monotonic()
    _grade(subs, expected_out, solutions)
    seconds = time.monotonic() - started
    expected = _state(expected_out)
    return dict(root=root, solutions=solutions, subs=subs, s0=s0, expected=expected, seconds=seconds,
                expected_out=expected_out)


def _fresh(klass, name: str) -> Path:
    out = klass["root"] / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(klass["s0"], out)
    return out


def _converges(klass, out: Path, what: str) -> None:
    """A plain re-run ends with exactly the uninterrupted run's record and files; the only thing
    a SIGKILL may leave is the temporary file it cut off (never read, never in a view)."""
    cut_off = {p for p in _leftovers(out) if p.parent.name != ".journal" and p.parent.name != "backups"}
    _grade(klass["subs"], out, klass["solutions"])
    state = _state(out)
    expected = klass["expected"]
    for part in ("book", "status", "csv", "dropped"):
        assert state[part] == expected[part], (what, part)
    assert sorted(state["files"]) == sorted(expected["files"]), what
    for name, data in expected["files"].items():
        assert state["files"][name] == data, (what, name)
    assert not set(_leftovers(out)) - cut_off, (what, _leftovers(out))


def test_the_run_under_attack_drops_bobs_hand_edits_and_keeps_the_others(klass):
    book = klass["expected"]["book"]
    ann = dict((g[0], g[1:]) for g in book[("ann", "ps1", "ps1")][0])
    bob = dict((g[0], g[1:]) for g in book[("bob", "ps1", "ps1")][0])
    assert ann["why"][1] == 0.5 and bob["correct_squares"][2] is None  # kept / dropped (resubmitted)
    assert dict((c[0], c[2]) for c in book[("ann", "ps1", "ps1")][1])["why"].startswith("Half")
    assert [d[:4] for d in klass["expected"]["dropped"]] == [("bob", "ps1", "ps1", "submission changed")]
    assert ("fay", "ps1", "ps1") in book and len(klass["expected"]["files"]) == 3 * 5


# ------------------------------------------------------------------ the killed grader
def _attacked_run(subs, out, solutions, kill_at, kill_after):
    """In a process group of its own: grade, SIGKILLing the group at the ``kill_at``-th stage
    boundary (a gradebook commit or an ``os.replace``: just before it, or just after with
    ``kill_after``), or ``kill_after`` seconds in when ``kill_at`` is None."""
    os.setpgid(0, 0)
    assert os.getpgrp() == os.getpid()  # never the test runner's group

    def kill():
        os.killpg(os.getpgrp(), signal.SIGKILL)

    if kill_at is None:
        threading.Timer(kill_after, kill).start()
    else:
        from sqlalchemy.orm import Session

        count = [0]

        def boundary(real):
            def wrapped(*args, **kwargs):
                count[0] += 1
                if count[0] == kill_at and not kill_after:
                    kill()
                value = real(*args, **kwargs)
                if count[0] == kill_at and kill_after:
                    kill()
                return value
            return wrapped

        os.replace = boundary(os.replace)
        Session.commit = boundary(Session.commit)
    _grade(subs, out, solutions)
    os._exit(0)  # ran to its end: no boundary left to kill at


def _kill(klass, name, kill_at=None, kill_after=False) -> int:
    out = _fresh(klass, name)
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_attacked_run, args=(klass["subs"], out, klass["solutions"], kill_at, kill_after))
    child.start()
    child.join(120)
    assert child.exitcode in (0, -signal.SIGKILL), (name, child.exitcode)
    if child.exitcode != 0:
        FAULT_POINTS.append(name)
    _converges(klass, out, name)
    return child.exitcode


def test_killed_at_every_stage_boundary_a_rerun_ends_as_an_uninterrupted_run(klass):
    """Just before each boundary (just after one is the same record and files as just before the
    next: nothing is put in place between them, and random moments fall there too), and just
    after the last commit."""
    n = 1
    while _kill(klass, f"before-{n}", n) != 0:  # 0: the run ended, past the last boundary
        n += 1
    assert n > 20  # commits and files of five notebooks, the backup, the source copy, grades.csv
    _kill(klass, "after-the-last", n - 1, kill_after=True)


def test_killed_at_random_moments_a_rerun_ends_as_an_uninterrupted_run(klass):
    rng = random.Random(22)
    for k in range(8):
        _kill(klass, f"random-{k}", None, rng.uniform(0.0, 1.2 * klass["seconds"]))


# ------------------------------------------------------------------ failed writes, dropped connections
def _failing_writes(klass, first: int, once: bool) -> None:
    """``os.replace`` (every file put in place) fails with ENOSPC from its ``first``-th call on."""
    out = _fresh(klass, f"disk-full-{first}-{once}")
    real, count = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        count[0] += 1
        if count[0] == first or (count[0] > first and not once):
            raise OSError(errno.ENOSPC, "No space left on device (injected)", str(dst))
        return real(src, dst, *args, **kwargs)

    os.replace = replace
    try:
        try:
            _grade(klass["subs"], out, klass["solutions"])
        except OSError:
            pass  # grades.csv could not be written: that is the error
    finally:
        os.replace = real
    FAULT_POINTS.append(out.name)
    assert not [p for p in _leftovers(out) if p.parent.name != ".journal"], out.name  # no temporary file
    _converges(klass, out, out.name)
    return count[0]


def test_a_failed_file_write_never_costs_a_grade_and_a_rerun_ends_as_an_uninterrupted_run(klass):
    writes = _failing_writes(klass, 10**6, True)  # counts the writes of a run
    assert writes > 15
    for first in range(1, writes + 1):
        _failing_writes(klass, first, once=False)
    for first in range(1, writes + 1, 4):
        _failing_writes(klass, first, once=True)


def _dropped_connection(klass, at: int, once: bool) -> int:
    from nbgrader.api import InvalidEntry
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    out = _fresh(klass, f"db-drop-{at}-{once}")
    real, count = Session.commit, [0]

    def commit(self):
        count[0] += 1
        if count[0] == at or (count[0] > at and not once):
            self.rollback()
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"),
                                   connection_invalidated=True)
        return real(self)

    Session.commit = commit
    try:
        try:
            _grade(klass["subs"], out, klass["solutions"])
        except (OperationalError, InvalidEntry):
            pass  # the gradebook could not be opened, read or set up at all: the run stops
    finally:
        Session.commit = real
    FAULT_POINTS.append(out.name)
    _converges(klass, out, out.name)
    return count[0]


def test_a_dropped_database_connection_never_costs_a_grade(klass):
    commits = _dropped_connection(klass, 10**6, True)
    assert commits >= 5
    print(f"commits per run: {commits}")
    for at in range(1, commits + 1):
        _dropped_connection(klass, at, once=True)  # a restart: the connection comes back
    for at in range(1, commits + 1, 3):
        _dropped_connection(klass, at, once=False)  # the server is gone for the rest of the run


def test_zz_fault_points_tried(klass, capsys):
    """The closing count (printed with ``-s``)."""
    kinds = {}
    for name in FAULT_POINTS:
        kind = name.split("-")[0] if not name.startswith(("disk-full", "db-drop")) else "-".join(name.split("-")[:2])
        kinds[kind] = kinds.get(kind, 0) + 1
    with capsys.disabled():
        print(f"\n[issue 22] fault points tried: {len(FAULT_POINTS)} {kinds}")
    assert len(FAULT_POINTS) > 60
