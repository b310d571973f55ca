"""The jobs of a grading run: one per notebook the course expects in each student's folder of
``SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb`` (collected lazily, links never followed),
and why nothing matched when the layout is wrong."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ste_course.authoring.source import SourceNotebook
from ste_course.untrusted import escaped_id, shown, valid_id


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
