"""The single writer: results, gradebook, ``grades.csv`` and feedback, written by the parent only.

Each graded notebook is recorded as soon as it is judged, in its own gradebook transaction and
an atomically replaced result file, so an interrupted run keeps everything already written and a
re-run picks up where it stopped. The SQLite gradebook is backed up before a run.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ste_course.source import SourceNotebook
from ste_course.untrusted import cell, clean

CSV_COLUMNS = ["student_id", "assignment", "notebook", "score", "max_score", "status", "reason",
               "late", "penalty"]


@dataclass
class NotebookResult:
    student: str
    assignment: str
    notebook: str
    score: float
    max_score: float
    status: str  # ok, missing, invalid, timeout, crash, output, error
    reason: str = ""
    cells: list = field(default_factory=list)  # [{"grade_id", "points", "max_points", "messages"}]
    submission_sha256: str = ""
    source_sha256: str = ""
    seconds: float | None = None
    feedback_cells: list = field(default_factory=list)  # [{"kind", "text", "grade_id"}]
    late: bool = False
    penalty: float = 0.0  # points taken off ``score`` already


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def result_path(out: Path, student: str, assignment: str, notebook: str) -> Path:
    return Path(out).resolve() / "results" / student / assignment / f"{notebook}.json"


def previous_result(out: Path, student: str, assignment: str, notebook: str):
    """The result an earlier (possibly interrupted) run recorded, or None."""
    try:
        return json.loads(result_path(out, student, assignment, notebook).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def gradebook_url(url: str) -> str:
    """The SQLAlchemy URL for nbgrader's Gradebook: an instructor's plain ``postgresql://`` (or
    ``postgres://``) URL gets the psycopg 3 driver (SQLAlchemy's default for it, psycopg2, is not
    installed); any other URL, or one that names its driver, is kept."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


class WriterLock:
    """Makes concurrent grading runs take turns at writing a PostgreSQL gradebook (no-op elsewhere).

    nbgrader checks, then inserts and commits inside its own helpers (``Gradebook()`` creating the
    schema, ``add_student``, ``add_submission``), so two runs writing a fresh database or the same
    student at once can both insert, and a retry could not make those multi-commit steps atomic.
    A session-level advisory lock, taken on a connection of its own around opening the gradebook
    and around each notebook's write, serialises only those milliseconds (the notebooks still run
    in parallel); the server drops it if a run dies.
    """

    KEY = 0x57E_C0DE_6B  # any constant shared by every ste-course writer of the database

    def __init__(self, url: str):
        self.engine = self.conn = None
        if url.startswith("postgresql"):
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            self.engine = create_engine(url, poolclass=NullPool)
            self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _call(self, function: str) -> None:
        if self.conn is not None:
            from sqlalchemy import text

            self.conn.execute(text(f"SELECT {function}(:key)"), {"key": self.KEY})

    def __enter__(self):
        self._call("pg_advisory_lock")
        return self

    def __exit__(self, *exc):
        self._call("pg_advisory_unlock")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.engine.dispose()


class Recorder:
    def __init__(self, out: Path, db_url: str | None, sources: dict):
        self.out = Path(out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.db_url = gradebook_url(db_url or f"sqlite:///{self.out / 'gradebook.db'}")
        self.sources = sources
        self._backup()
        import warnings

        from nbgrader.api import Gradebook

        warnings.filterwarnings("ignore", module="nbgrader.api")
        warnings.filterwarnings("ignore", message=".*not in session.*")

        self.lock = WriterLock(self.db_url)
        with self.lock:
            self.gb = Gradebook(self.db_url)
            self._sync_assignments()
        self._course_folder()

    # ---------------------------------------------------------------- set-up
    def _backup(self):
        db = self.out / "gradebook.db"
        if self.db_url.startswith("sqlite:///") and db.exists():
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            backups = self.out / "backups"
            backups.mkdir(exist_ok=True)
            shutil.copy2(db, backups / f"gradebook-{stamp}.db")

    def _sync_assignments(self):
        gb = self.gb
        for assignment, notebooks in self.sources.items():
            gb.update_or_create_assignment(assignment)
            for nb in notebooks:
                gb.update_or_create_notebook(nb.name, assignment)
                for cell in nb.cells:
                    if cell.grade:
                        gb.update_or_create_grade_cell(cell.grade_id, nb.name, assignment,
                                                       max_score=cell.points, cell_type=cell.cell_type)
                    if cell.solution:
                        gb.update_or_create_solution_cell(cell.grade_id, nb.name, assignment)
        gb.db.commit()

    def _course_folder(self):
        """Make ``out`` an nbgrader course folder: config, ``source/`` (the instructor's
        notebooks) beside ``autograded/`` and ``feedback/``, so ``nbgrader formgrader`` run
        in ``out`` opens this gradebook for manual review."""
        for assignment, notebooks in self.sources.items():
            for nb in notebooks:
                target = self.out / "source" / assignment / nb.path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(nb.path, target)
        _atomic_write(self.out / "nbgrader_config.py",
                      "# Written by ste-course grade: run `nbgrader formgrader` in this folder.\n"
                      "c = get_config()  # noqa: F821\n"
                      f"c.CourseDirectory.root = {str(self.out)!r}\n"
                      f"c.CourseDirectory.db_url = {self.db_url!r}\n")

    # ---------------------------------------------------------------- results
    def result_path(self, student, assignment, notebook) -> Path:
        return result_path(self.out, student, assignment, notebook)

    def record(self, result: NotebookResult, source: SourceNotebook | None) -> None:
        """Write one notebook's grade everywhere; its text is cleaned first (lone surrogates from
        the sandbox or a notebook become U+FFFD), so writing UTF-8 cannot fail on it."""
        result = NotebookResult(**clean(asdict(result)))
        with self.lock:
            self._gradebook(result)
        if source is not None:
            self._feedback(result, source)
            self._autograded(result, source)
        _atomic_write(self.result_path(result.student, result.assignment, result.notebook),
                      json.dumps(asdict(result), indent=1))

    def _gradebook(self, result: NotebookResult) -> None:
        gb = self.gb
        try:
            gb.update_or_create_student(result.student)
            try:
                gb.find_submission(result.assignment, result.student)
            except Exception:  # noqa: BLE001 - MissingEntry
                gb.add_submission(result.assignment, result.student)
            points = {c["grade_id"]: c["points"] for c in result.cells}
            for grade_id, score in points.items():
                grade = gb.find_grade(grade_id, result.notebook, result.assignment, result.student)
                grade.auto_score = float(score)
            gb.db.commit()
        except Exception:
            gb.db.rollback()
            raise

    def _autograded(self, result: NotebookResult, source: SourceNotebook) -> None:
        """The instructor's notebook with the student's answers and each test's verdict as its
        output, in ``autograded/`` where nbgrader's formgrader looks for it."""
        nb = json.loads(source.path.read_text(encoding="utf-8"))
        answers = {c["grade_id"]: c["text"] for c in result.feedback_cells
                   if c.get("kind") == "code" and c.get("grade_id")}
        grades = {c["grade_id"]: c for c in result.cells}
        for cell in nb.get("cells", []):
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("solution") and gid in answers:
                cell["source"] = answers[gid]
            if cell.get("cell_type") == "code":
                cell["outputs"], cell["execution_count"] = [], None
                if gid in grades:
                    g = grades[gid]
                    text = f"{g['points']:g} / {g['max_points']:g} points\n" + "".join(f"- {m}\n" for m in g["messages"])
                    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": text}]
        path = self.out / "autograded" / result.student / result.assignment / f"{result.notebook}.ipynb"
        _atomic_write(path, json.dumps(nb, indent=1))

    def _feedback(self, result: NotebookResult, source: SourceNotebook) -> None:
        path = self.out / "feedback" / result.student / result.assignment / f"{result.notebook}.html"
        _atomic_write(path, render_feedback(result))

    # ---------------------------------------------------------------- csv
    def write_csv(self) -> Path:
        """``grades.csv`` from every result file; text cells a spreadsheet would run as a formula
        get a leading ``'`` (:func:`ste_course.untrusted.cell`), scores stay numbers."""
        rows = []
        for path in sorted((self.out / "results").glob("*/*/*.json")):
            try:
                r = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(r, dict):
                continue
            rows.append({k: r.get("student" if k == "student_id" else k, "") for k in CSV_COLUMNS})
        target = self.out / "grades.csv"
        fd, tmp = tempfile.mkstemp(dir=self.out, prefix=".grades.")
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in sorted(rows, key=lambda r: (r["student_id"], r["assignment"], r["notebook"])):
                for number in ("score", "max_score", "penalty"):
                    row[number] = float(row[number] or 0)
                writer.writerow({k: cell(v) for k, v in row.items()})  # no formula reaches a spreadsheet
        os.replace(tmp, target)
        return target

    def close(self):
        self.gb.close()
        self.lock.close()


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
pre{background:#f6f8fa;padding:.6rem;border-radius:4px;overflow-x:auto;white-space:pre-wrap}
.test{border-left:4px solid #999;padding-left:.8rem;margin:1rem 0}
.pass{border-color:#2a7d2a}.fail{border-color:#b22}
.score{font-weight:bold}.out{background:#fffbe6}
"""


def render_feedback(result: NotebookResult) -> str:
    """Static HTML, everything escaped; test cells shown without their hidden part."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(result.assignment)} "
             f"feedback</title><style>{_STYLE}</style></head><body>",
             f"<h1>{e(result.assignment)} / {e(result.notebook)}</h1>",
             f"<p class='score'>Score: {result.score:g} / {result.max_score:g}</p>"]
    if result.late:
        parts.append(f"<p><b>Late:</b> {result.penalty:g} points deducted.</p>")
    if result.status != "ok":
        parts.append(f"<p><b>Status:</b> {e(result.status)}: {e(result.reason)}</p>")
    by_id = {c["grade_id"]: c for c in result.cells}
    for cell in result.feedback_cells:
        kind, text = cell["kind"], cell["text"]
        if kind == "markdown":
            parts.append(f"<div class='md'><pre>{e(text)}</pre></div>")
        elif kind == "code":
            parts.append(f"<pre>{e(text)}</pre>")
        elif kind == "output":
            parts.append(f"<pre class='out'>{e(text)}</pre>")
        elif kind == "test":
            grade = by_id.get(cell["grade_id"], {})
            ok = grade.get("points", 0) == grade.get("max_points", 0)
            verdict = (f"{grade.get('points', 0):g} / {grade.get('max_points', 0):g} points")
            messages = "".join(f"<li>{e(m)}</li>" for m in grade.get("messages", []))
            parts.append(f"<div class='test {'pass' if ok else 'fail'}'><pre>{e(text)}</pre>"
                         f"<p class='score'>{verdict}</p>{'<ul>' + messages + '</ul>' if messages else ''}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
