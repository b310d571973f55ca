"""nbgrader's gradebook as the one record of a course's grades.

Everything a grade is made of lives in the gradebook (SQLite or PostgreSQL), where formgrader
shows and edits it:

* each test cell's points: ``Grade.auto_score`` (the grader), ``Grade.manual_score`` and
  ``Grade.extra_credit`` (a hand edit in formgrader, kept through automatic re-grades of the
  same submission unless ``ste-course grade --drop-manual``);
* the late penalty: ``SubmittedNotebook.late_submission_penalty``, the submission's
  ``timestamp`` and the assignment's ``duedate``, as nbgrader's ``LateSubmissionPlugin`` records
  them; a notebook's grade is ``max(0, score - penalty)``, as nbgrader's own export computes it;
* what nbgrader has no column for, in one extra table of the same database,
  ``ste_course_result`` (student, assignment, notebook, status, reason, late, hours late, the
  fingerprint of everything the grade depends on, the submission's SHA-256, and how many times
  in a row the notebook ended in an ``error`` with the same inputs: :data:`ERROR_CAP`). formgrader
  and nbgrader's migrations ignore tables they do not know; a table of an older grader gains the
  new columns when it is opened (:func:`_migrate`).

``grades.csv``, the LMS exports and the terminal summary are all :func:`rows` of this record.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, delete, inspect, select, text

STATUS = Table(
    "ste_course_result", MetaData(),
    Column("student", String(128), primary_key=True),
    Column("assignment", String(128), primary_key=True),
    Column("notebook", String(128), primary_key=True),
    Column("status", String(16), nullable=False),  # ok, missing, invalid, timeout, crash, output, error
    Column("reason", Text, nullable=False, default=""),
    Column("late", String(8), nullable=False, default="no"),  # no, yes, unknown (timestamp unreadable)
    Column("hours_late", Float, nullable=True),
    Column("inputs", String(64), nullable=False, default=""),  # fingerprint of what the grade depends on
    Column("submission_sha256", String(64), nullable=False, default=""),
    # errors in a row with the same inputs (error_inputs: their fingerprint); 0 after any other status
    Column("errors", Integer, nullable=False, default=0, server_default="0"),
    Column("error_inputs", String(64), nullable=False, default="", server_default=""),
)

# Statuses that say nothing about the student's work: graded again by the next run.
RETRIED = frozenset({"error"})
# A notebook that ended in an error this many times in a row with the same inputs (its bytes and
# everything else its grade depends on) is not graded again by a plain run (:func:`capped`): a
# student who can make their own notebook error (e.g. by writing on the event channel) cannot
# make every run pay a worker for it. ``ste-course grade --retry-errors`` grades it again.
ERROR_CAP = 3
CAPPED_NOTE = (f"ended in an error {ERROR_CAP} times with the same submission and grader; "
               "`ste-course grade --retry-errors` grades it again")
ROW_COLUMNS = ["student_id", "assignment", "notebook", "score", "max_score", "status", "reason",
               "late", "penalty", "hours_late", "raw_score", "manual", "needs_manual"]


def open_gradebook(db_url: str):
    """nbgrader's :class:`~nbgrader.api.Gradebook` on ``db_url``, with :data:`STATUS` created."""
    import warnings

    import nbgrader.api
    from nbgrader.api import Gradebook

    warnings.filterwarnings("ignore", module="nbgrader.api")
    warnings.filterwarnings("ignore", message=".*not in session.*")
    nbgrader.api.get_alembic_version = _alembic_head  # a new gradebook's version, without a subprocess
    gb = Gradebook(db_url)
    STATUS.create(gb.engine, checkfirst=True)
    _migrate(gb.engine)
    if gb.engine.dialect.name == "sqlite":
        _sqlite_wal(gb)
    return gb


def _migrate(engine) -> None:
    """Add the columns of :data:`STATUS` that a table made by an older grader lacks (with their
    defaults: no notebook has errors counted yet). Another process may add them at the same time:
    a column that exists by then is fine."""
    have = {c["name"] for c in inspect(engine).get_columns(STATUS.name)}
    for column in STATUS.columns:
        if column.name in have:
            continue
        kind = column.type.compile(dialect=engine.dialect)
        default = column.server_default.arg if column.server_default is not None else None
        sql = f"ALTER TABLE {STATUS.name} ADD COLUMN {column.name} {kind}" + (
            f" NOT NULL DEFAULT '{default}'" if default is not None else "")
        try:
            with engine.begin() as con:
                con.execute(text(sql))
        except Exception:  # noqa: BLE001 - added meanwhile by another process, else a real failure
            if column.name not in {c["name"] for c in inspect(engine).get_columns(STATUS.name)}:
                raise


def _alembic_head() -> str:
    """What nbgrader's ``get_alembic_version`` stamps a new gradebook with (the head of its
    migrations), read in this process: nbgrader runs ``alembic heads`` as a subprocess, a second
    Python start (seconds on a busy machine) on the way to the first grade."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from nbgrader.api import _temp_alembic_ini

    with _temp_alembic_ini("sqlite:////tmp/gradebook.db") as ini:  # nbgrader's own arguments
        return ScriptDirectory.from_config(Config(ini)).get_current_head()


def _sqlite_wal(gb) -> None:
    """A SQLite gradebook in write-ahead-log mode with ``synchronous=NORMAL``: a commit appends
    to ``gradebook.db-wal`` without waiting for the disk, readers (formgrader, an export) never
    block the writer nor see half a transaction, and a writer waits (SQLite's busy timeout, 5 s)
    for another's commit. A crash of the process loses nothing committed; a power cut may lose the
    last commits (never corrupts the file), which the next run grades again. The mode is stored in
    the file (every later opener, formgrader too, uses it); it needs the file on a local disk, not
    a network share (as any SQLite writer sharing the file)."""
    from sqlalchemy import event

    def pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(gb.engine, "connect", pragmas)
    gb.db.commit()
    gb.engine.dispose()  # the connections opened so far are replaced by ones with the pragmas


def db_url_of(graded: Path) -> str:
    """The gradebook of a folder written by ``ste-course grade``: its own ``gradebook.db`` (so a
    moved or copied folder reads its own), else the URL its ``nbgrader_config.py`` names (read,
    never executed: a ``--db`` given to grade)."""
    db = Path(graded) / "gradebook.db"
    if db.is_file():
        return f"sqlite:///{db.resolve()}"
    config = Path(graded) / "nbgrader_config.py"
    if config.is_file():
        match = re.search(r"^c\.CourseDirectory\.db_url = (.+)$", config.read_text(encoding="utf-8"), re.M)
        if match:
            return ast.literal_eval(match.group(1))
    raise FileNotFoundError(f"{db} does not exist; run `ste-course grade` first")


# ------------------------------------------------------------------ the assignments' definition
def sync_definition(gb, sources: dict, due: dict | None = None) -> list:
    """Make the gradebook's assignments those of ``sources`` (as ``nbgrader generate_assignment``
    does, but also when submissions exist): grade and solution cells added, updated (points) or
    removed (a renamed cell is both), each earlier submission given a grade (and comment) row for
    every cell it lacks; ``due`` sets each assignment's ``duedate``. Returns the
    ``assignment/notebook`` names whose cells changed. One transaction."""
    from nbgrader.api import Comment, Grade

    changed = []
    try:
        for assignment, notebooks in sources.items():
            gb.update_or_create_assignment(assignment, duedate=(due or {}).get(assignment))
            for nb in notebooks:
                gb.update_or_create_notebook(nb.name, assignment)
                grades = {c.grade_id: c for c in nb.cells if c.grade}
                solutions = {c.grade_id for c in nb.cells if c.solution}
                notebook = gb.find_notebook(nb.name, assignment)
                before = ({c.name: c.max_score for c in notebook.grade_cells},
                          {c.name for c in notebook.solution_cells})
                for cell in list(notebook.grade_cells):
                    if cell.name not in grades:
                        _drop_cell(gb, cell, cell.grades)
                for cell in list(notebook.solution_cells):
                    if cell.name not in solutions:
                        _drop_cell(gb, cell, cell.comments)
                for gid, cell in grades.items():
                    gb.update_or_create_grade_cell(gid, nb.name, assignment, max_score=cell.points,
                                                   cell_type=cell.cell_type)
                for gid in solutions:
                    gb.update_or_create_solution_cell(gid, nb.name, assignment)
                gb.db.expire(notebook)
                for submitted in notebook.submissions:
                    graded = {g.cell_id for g in submitted.grades}
                    commented = {c.cell_id for c in submitted.comments}
                    for cell in notebook.grade_cells:
                        if cell.id not in graded:
                            gb.db.add(Grade(cell_id=cell.id, notebook=submitted))
                    for cell in notebook.solution_cells:
                        if cell.id not in commented:
                            gb.db.add(Comment(cell_id=cell.id, notebook=submitted))
                after = ({c.name: c.max_score for c in notebook.grade_cells},
                         {c.name for c in notebook.solution_cells})
                if after != before:
                    changed.append(f"{assignment}/{nb.name}")
        gb.db.commit()
    except Exception:
        gb.db.rollback()
        raise
    return changed


def _drop_cell(gb, cell, rows) -> None:
    for row in list(rows):
        gb.db.delete(row)
    gb.db.flush()
    gb.db.delete(cell)
    gb.db.flush()


# ------------------------------------------------------------------ one notebook's grade
def previous(gb, student: str, assignment: str, notebook: str):
    """The stored :data:`STATUS` row of a notebook (a mapping), or None."""
    key = (STATUS.c.student == student) & (STATUS.c.assignment == assignment) & (STATUS.c.notebook == notebook)
    return gb.db.execute(select(STATUS).where(key)).mappings().first()


def capped(prev, inputs: str) -> bool:
    """Whether the stored row ``prev`` (:func:`previous`) is an ``error`` that ended
    :data:`ERROR_CAP` times in a row with these ``inputs``: a plain run leaves it as it is."""
    return prev is not None and prev["status"] in RETRIED and bool(inputs) \
        and prev["error_inputs"] == inputs and prev["errors"] >= ERROR_CAP


def _errors(prev, result) -> dict:
    """The error count of the row ``result`` makes: one more when ``prev`` ended in an error with
    the same inputs, else 1; an error whose inputs are not known (it failed before they were
    read) leaves the count as it was; any other status clears it."""
    if result.status not in RETRIED:
        return dict(errors=0, error_inputs="")
    if not result.inputs:
        return dict(errors=prev["errors"], error_inputs=prev["error_inputs"]) if prev is not None else \
            dict(errors=0, error_inputs="")
    same = prev is not None and prev["status"] in RETRIED and prev["error_inputs"] == result.inputs
    return dict(errors=prev["errors"] + 1 if same else 1, error_inputs=result.inputs)


def write(gb, result, drop_manual: bool = False) -> list:
    """Record one notebook's grade (``result``: a :class:`~ste_course.record.recorder.NotebookResult`)
    in one transaction (:func:`write_batch`). Returns what was dropped, one line per cell (for the
    reason)."""
    return write_batch(gb, [result], drop_manual)[0].dropped


@dataclass(frozen=True)
class Written:
    """What :func:`write_batch` did to one notebook: the hand edits it dropped (one line per
    cell, with the comments dropped) and whether none is left (``fresh``: its :func:`part_scores` are then
    :func:`fresh_parts`, so its feedback page could be rendered before the write)."""

    dropped: list
    fresh: bool
    kept: bool = False  # an error that left the notebook's grade (and its files) as they were
    why: str = ""  # why hand edits were dropped: "asked with --drop-manual" or "submission changed"


def write_batch(gb, results, drop_manual: bool = False, definitions: dict | None = None,
                before_commit=None) -> list:
    """Record several notebooks' grades in one transaction (one commit: in a SQLite gradebook with
    ``synchronous=NORMAL``, one write to disk; in PostgreSQL, one flush of its log); returns a
    :class:`Written` per result. Hand edits (``manual_score``, ``extra_credit``,
    ``manual_comment``) are kept when the same submission is graded again, dropped with
    ``drop_manual`` or when the student's bytes changed (:func:`_write_one`); an ``error`` result
    never replaces a grade. Either every notebook of the batch is recorded or none (an
    interrupted run grades the rest again: no status row, no grade). ``definitions``: a dict kept
    for a run (:func:`_definition`), so an assignment's cells are read once per run, not per new
    submission. ``before_commit(written)`` runs after the rows are written and before the commit
    (the recorder's journal of the batch, and its report of dropped hand edits): if it raises,
    nothing is committed."""
    definitions = {} if definitions is None else definitions
    try:
        written = [_write_one(gb, result, drop_manual, definitions) for result in results]
        if before_commit is not None:
            before_commit(written)
        gb.db.commit()
    except BaseException:
        gb.db.rollback()
        raise
    return written


def _changed(prev, result) -> bool:
    """Whether ``result`` is of other bytes than the grade ``prev`` holds. An empty hash says
    "not known" for an ``error`` (the judge died before reading the file) and "no file" for
    ``missing`` and ``invalid``: an unknown hash never counts as a change; no file does."""
    if prev is None:
        return False
    before, now = prev["submission_sha256"], result.submission_sha256
    if result.status in RETRIED and not now:
        return False
    return before != now


def _write_one(gb, result, drop_manual: bool, definitions: dict) -> Written:
    """One notebook's rows, not committed.

    An ``error`` result (:data:`RETRIED`) of a notebook the gradebook already holds writes its
    status row only: the points, hand edits and comments stay as they are (the grade of the last
    run that graded it, for the submission whose hash the row keeps), the reason says this run
    failed, and the next run grades it again, unless it ended in an error :data:`ERROR_CAP`
    times in a row with the same inputs (:func:`_errors`; the reason then says so)."""
    prev = previous(gb, result.student, result.assignment, result.notebook)
    key = dict(student=result.student, assignment=result.assignment, notebook=result.notebook)
    errors = _errors(prev, result)
    capped_note = [CAPPED_NOTE] if errors["errors"] >= ERROR_CAP else []
    if result.status in RETRIED and prev is not None:
        note = "the grade recorded before stands"
        if _changed(prev, result):
            note += "; it is of an earlier version of the submission"
        row = dict(status=result.status, reason="; ".join([r for r in (result.reason,) if r] + [note] + capped_note),
                   late=prev["late"], hours_late=prev["hours_late"], inputs=prev["inputs"],
                   submission_sha256=prev["submission_sha256"], **errors)
        gb.db.execute(STATUS.update().where(*(getattr(STATUS.c, k) == v for k, v in key.items())).values(**row))
        return Written([], False, kept=True)
    same = not _changed(prev, result)
    submission = _submission(gb, result.assignment, result.student, definitions)
    submission.timestamp = dt.datetime.fromisoformat(result.submitted_at) if result.submitted_at else None
    notebook = gb.find_submission_notebook(result.notebook, result.assignment, result.student)
    points = {c["grade_id"]: float(c["points"]) for c in result.cells}
    written = {c["grade_id"] for c in result.cells if c.get("manual")}  # graded by hand only
    dropped = []
    for grade in notebook.grades:
        grade.auto_score = None if grade.name in written else points.get(grade.name, 0.0)
        grade.needs_manual_grade = False
        if grade.manual_score is not None or grade.extra_credit is not None:
            if drop_manual or not same:
                dropped.append(f"{grade.name}: manual {grade.manual_score}, extra {grade.extra_credit}")
                grade.manual_score = grade.extra_credit = None
        if grade.name in written:  # a written answer waits for formgrader's score
            grade.needs_manual_grade = grade.manual_score is None
    for comment in notebook.comments:
        if comment.manual_comment is not None and (drop_manual or not same):
            dropped.append(f"{comment.name}: comment {comment.manual_comment!r}")
            comment.manual_comment = None
    notebook.late_submission_penalty = result.penalty or None
    reason = result.reason
    why = "asked with --drop-manual" if drop_manual and same else "submission changed"
    if dropped:
        note = f"hand edits dropped, {why.replace('submission', 'the submission')} (" + "; ".join(dropped) + ")"
        reason = f"{reason}; {note}" if reason else note
    reason = "; ".join([r for r in (reason,) if r] + capped_note)
    row = dict(status=result.status, reason=reason, late=result.late,
               hours_late=result.hours_late, inputs=result.inputs,
               submission_sha256=result.submission_sha256, **errors)
    gb.db.execute(delete(STATUS).where(*(getattr(STATUS.c, k) == v for k, v in key.items())))
    gb.db.execute(STATUS.insert().values(**key, **row))
    fresh = not any(g.manual_score is not None or g.extra_credit is not None for g in notebook.grades) \
        and not any(c.manual_comment for c in notebook.comments)
    return Written(dropped, fresh, why=why)


def _definition(gb, assignment: str, definitions: dict) -> tuple:
    """``(assignment id, [(notebook id, grade cell ids, solution cell ids, task cell ids)])``,
    read from the gradebook once and kept in ``definitions`` (they are fixed during a run:
    :func:`sync_definition` runs before it)."""
    if assignment not in definitions:
        found = gb.find_assignment(assignment)
        definitions[assignment] = (found.id, [
            (nb.id, [c.id for c in nb.grade_cells], [c.id for c in nb.solution_cells], [c.id for c in nb.task_cells])
            for nb in found.notebooks])
    return definitions[assignment]


def _submission(gb, assignment: str, student: str, definitions: dict):
    """The student's submission of ``assignment``, made (with the student) if missing, without
    committing: nbgrader's ``update_or_create_student`` and ``add_submission`` commit each call.
    A new submission mirrors the assignment as ``add_submission`` builds it (a submitted notebook
    per notebook, a grade per grade cell, a comment per solution cell; task cells both)."""
    from nbgrader.api import Assignment, Comment, Grade, Student, SubmittedAssignment, SubmittedNotebook

    found = gb.db.query(SubmittedAssignment).join(Assignment).filter(
        Assignment.name == assignment, SubmittedAssignment.student_id == student).one_or_none()
    if found is not None:
        return found
    if gb.db.get(Student, student) is None:
        gb.db.add(Student(id=student))
    assignment_id, notebooks = _definition(gb, assignment, definitions)
    submission = SubmittedAssignment(assignment_id=assignment_id, student_id=student)
    for notebook_id, grades, solutions, tasks in notebooks:
        nb = SubmittedNotebook(notebook_id=notebook_id, assignment=submission)
        for cell_id in grades:
            Grade(cell_id=cell_id, notebook=nb)
        for cell_id in solutions:
            Comment(cell_id=cell_id, notebook=nb)
        for cell_id in tasks:
            Comment(cell_id=cell_id, notebook=nb)
            Grade(cell_id=cell_id, notebook=nb)
    gb.db.add(submission)
    gb.db.flush()
    return submission


def fresh_parts(result, source) -> dict:
    """What :func:`part_scores` gives for ``result``'s notebook right after :func:`write_batch`
    recorded it with no hand edit left (:attr:`Written.fresh`): each grade cell of ``source``
    (the gradebook's, :func:`sync_definition`) with the automatic points (0 for a written
    answer, which waits for a hand grade), no comment. Lets a judge render the feedback page
    before the write; the recorder uses the page only when the write says ``fresh``."""
    points = {c["grade_id"]: float(c["points"]) for c in result.cells}
    written = {c["grade_id"] for c in result.cells if c.get("manual")}
    cells = {c.grade_id: float(c.points) for c in source.cells if c.grade}
    return {"scores": {gid: (0.0 if gid in written else points.get(gid, 0.0), most, False)
                       for gid, most in cells.items()},
            "comments": {}, "waiting": written & cells.keys()}


# ------------------------------------------------------------------ what everything is derived from
def rows(gb) -> list:
    """One dict per submitted notebook (:data:`ROW_COLUMNS`), sorted by student, assignment,
    notebook: ``score`` is ``max(0, raw_score - penalty)`` with ``raw_score`` nbgrader's
    (manual scores and extra credit over automatic ones), ``manual`` says a hand edit is in it,
    ``needs_manual`` lists the parts still waiting for a hand grade (:func:`waiting`)."""
    from nbgrader.api import SubmittedAssignment, SubmittedNotebook

    status = {(r["student"], r["assignment"], r["notebook"]): r
              for r in gb.db.execute(select(STATUS)).mappings()}
    out = []
    for nb in gb.db.query(SubmittedNotebook).join(SubmittedAssignment):
        key = (nb.student.id, nb.assignment.assignment.name, nb.notebook.name)
        extra = status.get(key, {})
        raw, penalty = float(nb.score or 0.0), float(nb.late_submission_penalty or 0.0)
        out.append(dict(
            student_id=key[0], assignment=key[1], notebook=key[2], score=max(0.0, raw - penalty),
            max_score=float(nb.max_score or 0.0), status=extra.get("status", ""),
            reason=extra.get("reason", ""), late=extra.get("late", "no"), penalty=penalty,
            submission_sha256=extra.get("submission_sha256", ""),
            capped=extra.get("status") in RETRIED and (extra.get("errors") or 0) >= ERROR_CAP,
            hours_late=extra.get("hours_late"), raw_score=raw,
            manual=any(g.manual_score is not None or g.extra_credit is not None for g in nb.grades),
            needs_manual=sorted(g.name for g in nb.grades if waiting(g))))
    return sorted(out, key=lambda r: (r["student_id"], r["assignment"], r["notebook"]))


def waiting(grade) -> bool:
    """A part still to be graded by hand: flagged ``needs_manual_grade`` (a written answer) with
    no manual score yet. formgrader clears the flag when it saves a score; a score set through
    nbgrader's API alone counts too."""
    return bool(grade.needs_manual_grade) and grade.manual_score is None


def part_scores(gb, student: str, assignment: str, notebook: str) -> dict:
    """``{"scores": {grade_id: (score, max_score, manual)}, "comments": {grade_id: manual
    comment}, "waiting": {grade_id, ...}}`` of one submitted notebook, as formgrader shows them
    (``waiting``: the parts without a hand grade yet, :func:`waiting`)."""
    nb = gb.find_submission_notebook(notebook, assignment, student)
    scores = {g.name: (float(g.score or 0.0), float(g.max_score or 0.0),
                       g.manual_score is not None or g.extra_credit is not None) for g in nb.grades}
    comments = {c.name: c.manual_comment for c in nb.comments if c.manual_comment}
    return {"scores": scores, "comments": comments, "waiting": {g.name for g in nb.grades if waiting(g)}}
