"""The single writer: the gradebook, then feedback and ``grades.csv`` derived from it, written
by the parent only.

Graded notebooks are recorded as they are judged: alone, or with those judged meanwhile (at
most ``grade.RECORD_BATCH``) in one gradebook transaction (:meth:`Recorder.record_batch`,
:func:`ste_course.record.gradebook.write_batch`), so an interrupted run keeps everything already
committed and a re-run picks up where it stopped (the batch cut off is graded again). The
files of a committed batch are finished by the next run if this one stops before it wrote them
(the journal: :class:`Recorder`). ``results/`` keeps each notebook's evidence (what the feedback
shows of the student's cells, with the hash of the submission it is of); grades are read from
the gradebook only. The SQLite gradebook in use is backed up before a run (the last
:data:`KEEP_BACKUPS` copies kept). A feedback page is a view of the gradebook: :func:`refresh_feedback` (``ste-course feedback``,
and ``ste-course return-feedback`` before it returns the pages) renders it again from the
gradebook as it is now and the stored evidence, grading nothing, so a score or comment entered
in formgrader reaches the student.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import sqlite3
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ste_course.authoring.source import SourceNotebook
from ste_course.files import atomic_write
from ste_course.record import gradebook
from ste_course.record.feedback import render_feedback
from ste_course.record.sanitize import framed
from ste_course.record.writelock import WriterLock, ping_on_checkout, retrying
from ste_course.untrusted import cell, clean

# grades.csv: ``score`` is the grade (after the late penalty, hand edits included), ``raw_score``
# the points before the penalty, ``late`` True/False (False with "lateness not assessed" in the
# reason when the timestamp could not be read), ``manual`` whether a hand edit is in the score,
# ``needs_manual`` the parts still waiting for a hand grade (grade ids, space-separated; empty:
# none).
CSV_COLUMNS = gradebook.ROW_COLUMNS


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
    late: str = "no"  # no, yes, unknown (timestamp.txt unreadable: said in the reason)
    penalty: float = 0.0  # points taken off ``score`` already (nbgrader's late_submission_penalty)
    hours_late: float | None = None
    submitted_at: str = ""  # timestamp.txt as naive UTC ISO (nbgrader's SubmittedAssignment.timestamp)
    inputs: str = ""  # fingerprint of everything the grade depends on (ste_course.grading.fingerprint.inputs)


def result_path(out: Path, student: str, assignment: str, notebook: str) -> Path:
    return Path(out).resolve() / "results" / student / assignment / f"{notebook}.json"


def gradebook_url(url: str) -> str:
    """The SQLAlchemy URL for nbgrader's Gradebook: an instructor's plain ``postgresql://`` (or
    ``postgres://``) URL gets the psycopg 3 driver (SQLAlchemy's default for it, psycopg2, is not
    installed); any other URL, or one that names its driver, is kept."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


KEEP_BACKUPS = 5  # pre-run copies of a SQLite gradebook kept in ``backups/`` (older ones removed)
DROPPED_REPORT = "hand_edits_dropped.csv"  # every hand edit a re-grade dropped, appended
DROPPED_COLUMNS = ["when", "student_id", "assignment", "notebook", "why", "dropped"]


@dataclass
class Recorded:
    """What :meth:`Recorder.record_batch` did: ``problems`` are ``(NotebookResult, message)`` of
    notebooks whose grade was committed but whose files could not all be written (the next run
    writes them from the journal); ``dropped`` the :class:`DroppedEdits` of the batch."""

    problems: list = field(default_factory=list)
    dropped: list = field(default_factory=list)


@dataclass(frozen=True)
class DroppedEdits:
    """Hand edits a re-grade dropped: the notebook, why (``asked with --drop-manual`` or
    ``submission changed``) and what (one entry per cell)."""

    student: str
    assignment: str
    notebook: str
    why: str
    dropped: tuple


class Recorder:
    """The one writer of a grading run: the gradebook (:mod:`ste_course.record.gradebook`), then the
    files derived from it (feedback, ``autograded/``, the run's evidence in ``results/``,
    ``grades.csv``).

    The record and its files cannot disagree for long: each batch's results are written to a
    journal (``.journal/``, flushed to disk) inside the gradebook transaction, before its commit;
    the files are written after the commit and the journal removed once they all are. A run that
    finds a journal (the last one was killed, or a file write failed) writes the files of every
    notebook whose gradebook row is the journal's, first thing (:meth:`_replay`). A notebook that
    is skipped as already graded must have its evidence, of the submission and inputs its row
    holds; a missing page or ``autograded/`` notebook is rendered again, missing or other evidence
    grades it again (:meth:`complete`)."""

    def __init__(self, out: Path, db_url: str | None, sources: dict, due: dict | None = None,
                 drop_manual: bool = False):
        self.out = Path(out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.db_url = gradebook_url(db_url or f"sqlite:///{self.out / 'gradebook.db'}")
        self.sources = sources
        self.drop_manual = drop_manual
        self._sources_text = _read_sources(sources)  # the instructor's notebooks, read once per run
        self._definitions: dict = {}  # the assignments' cells in the gradebook, read once per run
        self._batches = 0
        self.dropped: list = []  # DroppedEdits of this run
        self.backup()
        self.lock = WriterLock(self.db_url)
        with self.lock:
            self.gb = gradebook.open_gradebook(self.db_url)
            if self.lock.engine is not None:  # PostgreSQL: a dropped connection is replaced
                ping_on_checkout(self.gb.engine)
            self.changed = gradebook.sync_definition(self.gb, sources, due)
        self._course_folder()
        self.replayed = self._replay()

    # ---------------------------------------------------------------- set-up
    def backup(self) -> Path | None:
        """A consistent copy of the SQLite gradebook this run writes (the ``--db`` file, or
        ``gradebook.db``), made before the run in ``backups/<name>-<time>.db``, keeping the last
        :data:`KEEP_BACKUPS`; None for another database or a file that does not exist yet."""
        if not self.db_url.startswith("sqlite:///"):
            return None
        db = Path(self.db_url[len("sqlite:///"):])
        if not db.is_file():
            return None
        backups = self.out / "backups"
        backups.mkdir(exist_ok=True)
        for stale in backups.glob(".*"):  # the temporary file of a copy a killed run did not finish
            stale.unlink(missing_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target = backups / f"{db.stem}-{stamp}.db"
        source, memory = sqlite3.connect(db), sqlite3.connect(":memory:")
        try:  # SQLite's backup: a consistent copy, commits still in the -wal file included
            source.backup(memory)
            data = memory.serialize()
        finally:
            memory.close()
            source.close()
        atomic_write(target, data)
        for old in sorted(backups.glob(f"{db.stem}-*.db"))[:-KEEP_BACKUPS]:
            old.unlink(missing_ok=True)
        return target

    def _course_folder(self):
        """Make ``out`` an nbgrader course folder: config, ``source/`` (the instructor's
        notebooks, as this run read them) beside ``autograded/`` and ``feedback/``, so
        formgrader opens this gradebook for manual review (``make lab-instructor GRADED=out``; on
        the hub, the instructor's formgrader on ``~/graded``)."""
        for assignment, notebooks in self.sources.items():
            for nb in notebooks:
                text = self._sources_text.get(nb.path)
                if text is not None:
                    atomic_write(self.out / "source" / assignment / nb.path.name, text, parents=True)
        atomic_write(self.out / "nbgrader_config.py",
                      "# Written by ste-course grade: formgrader on this folder's gradebook is\n"
                      "# `make lab-instructor GRADED=<this folder>` (on the hub: the instructor's formgrader).\n"
                      "c = get_config()  # noqa: F821\n"
                      f"c.CourseDirectory.root = {str(self.out)!r}\n"
                      f"c.CourseDirectory.db_url = {self.db_url!r}\n", parents=True)

    # ---------------------------------------------------------------- results
    def result_path(self, student, assignment, notebook) -> Path:
        return result_path(self.out, student, assignment, notebook)

    def previous(self, student: str, assignment: str, notebook: str):
        """What the gradebook holds for this notebook (:data:`ste_course.record.gradebook.STATUS`)."""
        return gradebook.previous(self.gb, student, assignment, notebook)

    def record(self, result: NotebookResult, source: SourceNotebook | None, page: str | None = None) -> Recorded:
        """Write one notebook's grade to the gradebook, then the files derived from it
        (:meth:`record_batch` of one)."""
        return self.record_batch([(result, source, page)])

    def record_batch(self, items) -> Recorded:
        """Write several notebooks' grades, ``items`` of ``(NotebookResult, SourceNotebook or
        None, page or None)``, to the gradebook in one writer-lock turn and one transaction
        (:func:`ste_course.record.gradebook.write_batch`), then the files derived from each. Text is
        cleaned first (lone surrogates from the sandbox or a notebook become U+FFFD), so writing
        UTF-8 cannot fail on it. ``page`` is the feedback page a judge rendered from
        :func:`ste_course.record.gradebook.fresh_parts`; it is written only when the gradebook holds no
        hand edit of the notebook (then it is the page rendered here would be), else the page is
        rendered here from the gradebook.

        Raises when the batch was not committed (none of its rows was: record the notebooks one
        by one to find the one that fails). Once it is committed, nothing raises: a file that
        cannot be written is a problem of the returned :class:`Recorded` (the journal keeps the
        batch, so the next run writes it)."""
        items = [(NotebookResult(**clean(asdict(result))), source, page) for result, source, page in items]
        results = [result for result, _, _ in items]
        self._batches += 1
        journal = self.out / ".journal" / f"{dt.datetime.now():%Y%m%d-%H%M%S-%f}-{os.getpid()}-{self._batches}.json"
        dropped: list = []

        def before_commit(written):
            dropped[:] = [DroppedEdits(r.student, r.assignment, r.notebook, w.why, tuple(w.dropped))
                          for r, w in zip(results, written) if w.dropped]
            _report_dropped(self.out / DROPPED_REPORT, dropped)
            atomic_write(journal, json.dumps([dict(result=asdict(r), kept=w.kept)
                                              for r, w in zip(results, written)]), parents=True)

        def write(batch):
            return gradebook.write_batch(self.gb, batch, self.drop_manual, self._definitions, before_commit)

        try:
            written = self.lock.write(write, results, rollback=self.gb.db.rollback)
        except BaseException:
            journal.unlink(missing_ok=True)
            raise
        self.dropped += dropped
        done = Recorded(dropped=dropped)
        for (result, source, page), w in zip(items, written):
            if w.kept:  # an error that left the grade: its files stay those of that grade
                continue
            try:
                self._derive(result, source, page if w.fresh else None)
            except Exception as err:  # noqa: BLE001 - committed: the journal has it for the next run
                done.problems.append((result, f"{type(err).__name__}: {err}"))
        if not done.problems:
            _remove(journal)
        return done

    def _derive(self, result: NotebookResult, source: SourceNotebook | None, page: str | None = None) -> None:
        """The files of a committed notebook: its feedback page (``page`` if given, else rendered
        from the gradebook), its ``autograded/`` notebook and, last, its evidence."""
        if source is not None:
            if page is not None:
                atomic_write(feedback_file(self.out / "feedback", result), page, parents=True)
            else:
                retrying(self._feedback, result, source, rollback=self.gb.db.rollback)
            self._autograded(result, source)
        atomic_write(self.result_path(result.student, result.assignment, result.notebook),
                     json.dumps(asdict(result), indent=1), parents=True)

    def _replay(self) -> int:
        """Write the files of the journals a killed or failed run left (see the class): for each
        notebook whose gradebook row is still the one its journal entry committed. Returns the
        number of notebooks whose files were written; a journal that cannot be finished stays
        (said on stderr) for the next run."""
        folder = self.out / ".journal"
        count = 0
        for stale in folder.glob(".*") if folder.is_dir() else []:  # a journal a kill cut off: no commit
            _remove(stale)
        for journal in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                entries = [(_result(e["result"]), e.get("kept")) for e in json.loads(journal.read_text(encoding="utf-8"))]
            except (OSError, ValueError, TypeError, KeyError) as err:  # written atomically: never expected
                print(f"ste-course: {journal}: unreadable ({type(err).__name__}: {err}); left for a look",
                      file=sys.stderr)
                continue
            try:
                for result, kept in entries:
                    row = None if kept else self.previous(result.student, result.assignment, result.notebook)
                    if row is None or (row["status"], row["inputs"], row["submission_sha256"]) != \
                            (result.status, result.inputs, result.submission_sha256):
                        continue  # not committed, graded again since, or an error that kept a grade
                    self._derive(result, self._source(result.assignment, result.notebook))
                    count += 1
            except Exception as err:  # noqa: BLE001 - the grades stand; the next run tries again
                print(f"ste-course: the files of an earlier run's journal {journal} could not be written "
                      f"({type(err).__name__}: {err}); the next run tries again", file=sys.stderr)
                continue
            _remove(journal)
        return count

    def _source(self, assignment: str, notebook: str) -> SourceNotebook | None:
        return next((nb for nb in self.sources.get(assignment, ()) if nb.name == notebook), None)

    def complete(self, student: str, assignment: str, notebook: str, row) -> bool:
        """Whether the notebook's files are those of its gradebook ``row``: its evidence is there,
        of the submission and inputs the row holds; a missing feedback page or ``autograded/``
        notebook is then rendered again (from the gradebook and the evidence). False: the
        evidence is missing, unreadable or of another grade (grade the notebook again)."""
        try:
            data = json.loads(self.result_path(student, assignment, notebook).read_text(encoding="utf-8"))
            result = _result(data)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return False
        if (result.student, result.assignment, result.notebook, result.submission_sha256, result.inputs) != \
                (student, assignment, notebook, row["submission_sha256"], row["inputs"]):
            return False
        source = self._source(assignment, notebook)
        if source is not None:
            if not feedback_file(self.out / "feedback", result).is_file():
                retrying(self._feedback, result, source, rollback=self.gb.db.rollback)
            if not self._autograded_path(result).is_file():
                self._autograded(result, source)
        return True

    def _autograded_path(self, result: NotebookResult) -> Path:
        return self.out / "autograded" / result.student / result.assignment / f"{result.notebook}.ipynb"

    def _autograded(self, result: NotebookResult, source: SourceNotebook) -> None:
        """The instructor's notebook with the student's answers and each test's verdict as its
        output, in ``autograded/`` where nbgrader's formgrader looks for it."""
        text = self._sources_text.get(source.path)
        if text is None:  # a source that could not be read: nothing to show it in
            return
        nb = json.loads(text)
        answers = {c["grade_id"]: c["text"] for c in result.feedback_cells  # code, and written answers
                   if c.get("kind") in ("code", "markdown") and c.get("grade_id")}
        grades = {c["grade_id"]: c for c in result.cells}
        for cell in nb.get("cells", []):
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("solution") and gid in answers:
                # formgrader renders markdown unsanitised: a written answer goes in as inert HTML
                cell["source"] = framed(answers[gid]) if cell.get("cell_type") == "markdown" else answers[gid]
            if cell.get("cell_type") == "code":
                cell["outputs"], cell["execution_count"] = [], None
                if gid in grades:
                    g = grades[gid]
                    text = f"{g['points']:g} / {g['max_points']:g} points\n" + "".join(f"- {m}\n" for m in g["messages"])
                    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": text}]
        atomic_write(self._autograded_path(result), json.dumps(nb, indent=1), parents=True)

    def _feedback(self, result: NotebookResult, source: SourceNotebook) -> None:
        """The feedback page (:func:`write_feedback`)."""
        write_feedback(self.gb, result, self.out / "feedback")

    # ---------------------------------------------------------------- derived files
    def write_csv(self) -> Path:
        """``grades.csv`` from the gradebook (:func:`write_grades_csv`)."""
        return write_grades_csv(self.out, gradebook.rows(self.gb))

    def close(self):
        self.gb.close()
        self.lock.close()


def _read_sources(sources: dict) -> dict:
    """``{path: text}`` of the instructor's notebooks (None for one that cannot be read: its
    notebooks are ``error`` rows, :func:`~ste_course.grading.steps.preflight`)."""
    texts = {}
    for notebooks in sources.values():
        for nb in notebooks:
            try:
                texts[nb.path] = nb.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                texts[nb.path] = None
    return texts


def _result(data: dict) -> NotebookResult:
    names = {f.name for f in fields(NotebookResult)}
    return NotebookResult(**{k: v for k, v in data.items() if k in names})


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # the next run replays it again: the same files
        pass


def _report_dropped(path: Path, dropped: list) -> None:
    """Append ``dropped`` (:class:`DroppedEdits`) to the report ``path`` (CSV,
    :data:`DROPPED_COLUMNS`), flushed to disk: the only copy of hand edits a re-grade dropped.
    Written before the batch's commit, so a crash may list a notebook twice, never not at all."""
    if not dropped:
        return
    new = not path.exists()
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    if new:
        writer.writerow(DROPPED_COLUMNS)
    when = dt.datetime.now().isoformat(timespec="seconds")
    for d in dropped:
        writer.writerow([cell(v) for v in (when, d.student, d.assignment, d.notebook, d.why, " | ".join(d.dropped))])
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(text.getvalue())
        f.flush()
        os.fsync(f.fileno())


def write_feedback(gb, result: NotebookResult, folder: Path, row: dict | None = None) -> Path:
    """Render ``result``'s page as a view of the gradebook ``gb`` into
    ``folder/<student>/<assignment>/<notebook>.html`` (with ``folder`` the course folder's
    ``feedback/``, where nbgrader's ``generate_feedback`` puts it): each part's score, manual scores, the
    grader's comments and what waits for a hand grade as the gradebook holds them now; with
    ``row`` (:func:`ste_course.record.gradebook.rows`), also its status, maximum and lateness. The
    run's evidence (``result.feedback_cells``, messages) is what the page shows of the cells."""
    if row is not None:
        result = replace(result, status=row["status"] or result.status, max_score=row["max_score"],
                         penalty=row["penalty"], late=row["late"], hours_late=row["hours_late"],
                         score=row["score"])
    parts = gradebook.part_scores(gb, result.student, result.assignment, result.notebook)
    path = feedback_file(folder, result)
    atomic_write(path, render_feedback(result, parts), parents=True)
    return path


def feedback_file(folder: Path, result: NotebookResult) -> Path:
    """``folder/<student>/<assignment>/<notebook>.html``: a notebook's feedback page."""
    return Path(folder) / result.student / result.assignment / f"{result.notebook}.html"


@dataclass
class Rendered:
    """What :func:`refresh_feedback` did: pages written (student, assignment, notebook), and
    problems (one line each)."""

    rendered: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def stored_result(out: Path, row: dict) -> tuple:
    """``(NotebookResult, problem)`` for a gradebook row: the run's evidence from
    ``results/``, or, when it is missing, unreadable or of another submission, a result made of
    the row alone (no cells shown) and a one-line problem saying why."""
    path = result_path(out, row["student_id"], row["assignment"], row["notebook"])
    bare = NotebookResult(row["student_id"], row["assignment"], row["notebook"], row["score"],
                          row["max_score"], row["status"], row["reason"])
    try:
        result = _result(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return bare, f"{path}: no stored evidence; the page shows the scores only"
    except (OSError, ValueError, TypeError, AttributeError) as err:
        return bare, f"{path}: unreadable ({type(err).__name__}: {err}); the page shows the scores only"
    if (result.student, result.assignment, result.notebook) != (bare.student, bare.assignment, bare.notebook):
        return bare, f"{path}: holds another notebook's evidence; the page shows the scores only"
    if row.get("submission_sha256") is not None and result.submission_sha256 != row["submission_sha256"]:
        return bare, (f"{path}: holds the evidence of another version of the submission than the gradebook's "
                      "grade; the page shows the scores only (grade it again to show its cells)")
    return result, ""


def refresh_feedback(graded: Path, db_url: str | None = None, folder: Path | None = None,
                     students=None, assignments=None) -> Rendered:
    """Re-render every feedback page of the course folder ``graded`` from its gradebook (or
    ``db_url``) as it is now, grading nothing: a score or comment entered in formgrader since
    the notebook was graded reaches the student's page. Pages go to ``folder`` (default
    ``graded/feedback``, where ``ste-course return-feedback`` takes them from); ``grades.csv``
    is written again from the same rows, so it agrees with the pages."""
    graded = Path(graded).resolve()
    folder = Path(folder) if folder is not None else graded / "feedback"
    done = Rendered()
    gb = gradebook.open_gradebook(gradebook_url(db_url or gradebook.db_url_of(graded)))
    try:
        rows = gradebook.rows(gb)
        write_grades_csv(graded, rows)
        for row in rows:
            if (students and row["student_id"] not in students) or \
                    (assignments and row["assignment"] not in assignments):
                continue
            result, problem = stored_result(graded, row)
            if problem:
                done.problems.append(problem)
            write_feedback(gb, result, folder, row)
            done.rendered.append((row["student_id"], row["assignment"], row["notebook"]))
    finally:
        gb.close()
    return done


def write_grades_csv(out: Path, rows: list) -> Path:
    """``grades.csv`` (:data:`CSV_COLUMNS`) from :func:`ste_course.record.gradebook.rows`; text cells a
    spreadsheet would run as a formula get a leading ``'`` (:func:`ste_course.untrusted.cell`),
    scores stay numbers."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        row = dict(row, late=row["late"] == "yes", manual=bool(row["manual"]),
                   needs_manual=" ".join(row.get("needs_manual") or ()),
                   hours_late="" if row["hours_late"] is None else round(row["hours_late"], 2))
        writer.writerow({k: cell(v) for k, v in row.items()})  # no formula reaches a spreadsheet
    return atomic_write(Path(out) / "grades.csv", text.getvalue())
