"""Remove a student or an assignment from the record and from everything derived from it.

nbgrader's ``nbgrader db student remove ID`` and ``nbgrader db assignment remove NAME`` delete the
gradebook's rows (the student or assignment and every submission of it) and refuse, unless
``--force``, when that would delete grades. :func:`remove` does the same on the gradebook
``ste-course grade`` wrote (:mod:`ste_course.record.gradebook`: nbgrader's tables and
``ste_course_result``), then removes the files derived from those rows in the course folder
(``feedback/``, ``autograded/``, the evidence in ``results/``) and writes ``grades.csv`` again
from what is left, so the exports, the summary and formgrader all stop showing them.

"Grades" here are what a person would lose: a notebook graded from a submission (any status but
``missing``) or a hand edit. Rows that only say a notebook was never handed in (``missing``,
e.g. for an assignment a student submitted to before it was published) go without ``--force``.

A removed assignment that is still in ``solutions/`` comes back in the next ``grade`` of a
folder of submissions that holds it; a removed student comes back if their folder is still in
the submissions graded (remove it there too, or grade with ``--student``/``--assignment``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete

from ste_course.record import gradebook
from ste_course.record.recorder import gradebook_url, write_grades_csv
from ste_course.record.writelock import WriterLock

KINDS = ("student", "assignment")
DERIVED = ("feedback", "autograded", "results")  # per student, then per assignment, in a course folder


class PruneError(Exception):
    """Nothing to remove, or removing would delete grades without ``force``: said in one line."""


@dataclass
class Removed:
    """What :func:`remove` did: the notebooks' rows deleted, and the derived paths removed."""

    rows: list = field(default_factory=list)  # (student, assignment, notebook)
    paths: list = field(default_factory=list)


def _checked(kind: str, name: str) -> str:
    if kind not in KINDS:
        raise PruneError(f"kind must be one of {KINDS}. Received: {kind!r}")
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise PruneError(f"a {kind} id is a folder name. Received: {name!r}")
    return name


def graded_rows(rows: list) -> list:
    """The rows of ``rows`` (:func:`~ste_course.record.gradebook.rows`) that hold a grade a person
    would lose: graded from a submission (status other than ``missing``) or edited by hand."""
    return [r for r in rows if r["status"] != "missing" or r["manual"]]


def derived_paths(graded: Path, kind: str, name: str) -> list:
    """The files and folders of the course folder ``graded`` derived from ``kind`` ``name``."""
    graded = Path(graded)
    found = []
    for folder in DERIVED:
        if kind == "student":
            found.append(graded / folder / name)
        elif (graded / folder).is_dir():
            found.extend(sorted(student / name for student in (graded / folder).iterdir()))
    if kind == "assignment":
        found.append(graded / "source" / name)  # formgrader lists the assignments of source/ too
    return [p for p in found if p.exists() or p.is_symlink()]


def remove(graded: Path, kind: str, name: str, db_url: str | None = None, force: bool = False,
           dry_run: bool = False) -> Removed:
    """Remove the student or assignment ``name`` (``kind``) from the gradebook of the course
    folder ``graded`` (or ``db_url``) and its derived files; ``grades.csv`` is written again.

    Raises:
        PruneError: ``name`` is in neither the gradebook nor the derived files, or some of its
            rows hold grades (:func:`graded_rows`) and ``force`` is not given.
    """
    name = _checked(kind, name)
    graded = Path(graded).resolve()
    url = gradebook_url(db_url or gradebook.db_url_of(graded))
    column = "student_id" if kind == "student" else "assignment"
    lock = WriterLock(url)
    done = Removed()
    try:
        with lock:
            gb = gradebook.open_gradebook(url)
            try:
                rows = [r for r in gradebook.rows(gb) if r[column] == name]
                known = _known(gb, kind, name)
                done.paths = derived_paths(graded, kind, name)
                if not known and not done.paths:
                    raise PruneError(f"no {kind} {name!r} in the gradebook {url} nor in {graded}")
                kept = graded_rows(rows)
                if kept and not force:
                    raise PruneError(
                        f"{len(kept)} graded notebook(s) of {kind} {name!r} (e.g. {kept[0]['student_id']} "
                        f"{kept[0]['assignment']} {kept[0]['notebook']}: {kept[0]['status']}, "
                        f"{kept[0]['score']:g}/{kept[0]['max_score']:g}) would be deleted; "
                        f"if you are sure, run again with --force")
                done.rows = [(r["student_id"], r["assignment"], r["notebook"]) for r in rows]
                if dry_run:
                    return done
                if known:
                    _delete(gb, kind, name)
                write_grades_csv(graded, gradebook.rows(gb))
            finally:
                gb.close()
    finally:
        lock.close()
    for path in done.paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return done


def _known(gb, kind: str, name: str) -> bool:
    from nbgrader.api import MissingEntry

    try:
        (gb.find_student if kind == "student" else gb.find_assignment)(name)
        return True
    except MissingEntry:
        return False


def _delete(gb, kind: str, name: str) -> None:
    """nbgrader's own removal (its submissions, grades and comments go with it), then the
    rows of ``ste_course_result``, in one more commit."""
    if kind == "student":
        gb.remove_student(name)
        gb.db.execute(delete(gradebook.STATUS).where(gradebook.STATUS.c.student == name))
    else:
        gb.remove_assignment(name)
        gb.db.execute(delete(gradebook.STATUS).where(gradebook.STATUS.c.assignment == name))
    gb.db.commit()
