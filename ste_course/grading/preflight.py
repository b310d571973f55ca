"""Read a submitted notebook defensively and rebuild the notebook that will run.

Nothing in a submission is trusted except the source of its solution cells (and cells the
student added). Every other cell (set-up, instructions, tests) comes from the instructor's source
by ``grade_id``: edited ones are restored, deleted ones re-added, duplicated ones graded as if the
copy were not there (:func:`prepare`). The kernelspec and nbgrader metadata are the instructor's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ste_course.authoring.release import released_source
from ste_course.authoring.source import SourceNotebook
from ste_course.untrusted import NotOwnFile, clean, read_own, shown

MAX_NOTEBOOK_BYTES = 5 * 2**20
MAX_CELL_CHARS = 200_000
# Cells per submission: every one is run, judged and rendered on the feedback page (about 1 ms
# each in the grader); the course's notebooks have at most 17, a student's scratch cells a few dozen.
MAX_CELLS = 1000


class PreflightError(ValueError):
    """A submission that cannot be graded at all; ``status`` goes into grades.csv."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class RunCell:
    index: int  # position in the run
    source: str
    locked: bool
    grade_id: str | None = None
    cell_type: str = "code"


@dataclass
class Prepared:
    cells: list  # RunCell, code and markdown, in order
    notes: list = field(default_factory=list)  # repairs made, for the instructor's reason column
    unanswered: list = field(default_factory=list)  # written answers left as released ("No response.")

    @property
    def code_cells(self):
        return [c for c in self.cells if c.cell_type == "code"]


def read_submission(path: Path, parts: tuple | None = None) -> dict:
    """The notebook at ``path`` as JSON data, read defensively (see :func:`parse_submission`).

    With ``parts`` (e.g. ``(student, assignment, file)``), ``path`` is the submissions folder
    and no part may be a link: only the student's own files are read. Without, only the file
    itself is checked.
    """
    path = Path(path)
    root, parts = (path, parts) if parts else (path.parent, (path.name,))
    try:
        raw = read_own(root, parts, MAX_NOTEBOOK_BYTES, parts[-1])
    except NotOwnFile as err:
        raise PreflightError("invalid", err.reason) from None
    return parse_submission(raw, parts[-1])


def parse_submission(raw: bytes, name: str) -> dict:
    """Notebook JSON from ``raw`` bytes; its strings have no lone surrogates (:func:`clean`).

    Raises:
        PreflightError: status ``invalid``, when it is not UTF-8 nbformat 4 JSON with cells.
    """
    name = shown(name, 60)
    try:
        nb = clean(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise PreflightError("invalid", f"{name} is not valid notebook JSON ({shown(err, 120)})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise PreflightError("invalid", f"{name} has no list of cells (nbformat 4 is required)")
    if len(nb["cells"]) > MAX_CELLS:
        raise PreflightError("invalid", f"{name} has {len(nb['cells'])} cells; at most {MAX_CELLS} are graded "
                                        "(delete the cells you added that you do not need, then submit again)")
    if nb.get("nbformat") != 4:
        raise PreflightError("invalid", f"{name} is nbformat {shown(repr(nb.get('nbformat')), 40)}; "
                                        "nbformat 4 is required (re-save it in JupyterLab)")
    return nb


def _text(value) -> str:
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else ""


def _grade_id(cell: dict):
    meta = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
    nbg = meta.get("nbgrader") if isinstance(meta.get("nbgrader"), dict) else {}
    return nbg.get("grade_id") if isinstance(nbg.get("grade_id"), str) else None


def prepare(source: SourceNotebook, submitted: dict) -> Prepared:
    """Merge the student's answers into the instructor's notebook, as nbgrader's sanitizing steps
    (DeduplicateIds, OverwriteCells) and more:

    * an answer cell is taken by ``grade_id`` with the source's type and points whatever the
      student set (the text is theirs; a changed cell type is put back, as OverwriteCells does);
      of several copies the last counts and the earlier ones run as the student's own cells
      (DeduplicateIds keeps the last);
    * every other cell of the source (tests, locked cells, markdown, set-up) is the instructor's,
      in the source's order, whatever the student did to it (edited, commented out, deleted,
      moved, metadata changed); nbgrader restores edited locked cells by checksum and, with
      ``add_missing_cells``, re-adds deleted tests;
    * cells the student added run where they put them (after the cell before them); so does
      the student's edited copy of an ordinary (metadata-free) cell of the source, just before
      the source's own, which always runs (an unchanged copy is not run twice);
    * an answer cell that is missing is missing (as in nbgrader: a missing written answer
      waits for a hand grade).

    ``Prepared.unanswered`` lists the written answers submitted exactly as released (nbgrader's
    "No response.": 0 points, no hand grade needed).
    """
    by_id = source.by_id()
    cells_in = [c for c in submitted["cells"] if isinstance(c, dict)]
    last = {}
    for position, cell in enumerate(cells_in):
        grade_id = _grade_id(cell)
        if grade_id in by_id and by_id[grade_id].solution:
            last[grade_id] = position
    plain = {c.source for c in source.cells if c.cell_type == "code" and not c.grade_id}
    answers, extras, notes = {}, {}, []
    anchor = None
    for position, cell in enumerate(cells_in):
        grade_id = _grade_id(cell)
        text = _text(cell.get("source", ""))
        if len(text) > MAX_CELL_CHARS:
            notes.append(f"a cell of {len(text)} characters was cut to {MAX_CELL_CHARS}")
            text = text[:MAX_CELL_CHARS]
        original = by_id.get(grade_id)
        if original is not None and original.solution and last[grade_id] != position:
            notes.append(f"an earlier copy of cell {grade_id} ran as your own cell (the last copy is the answer)")
            if cell.get("cell_type") == "code" and text.strip():
                extras.setdefault(anchor, []).append(text)
            continue
        if original is not None:
            anchor = grade_id
            if original.solution:
                if cell.get("cell_type") != original.cell_type:
                    notes.append(f"cell {grade_id} changed type; it was graded as {original.cell_type}")
                answers[grade_id] = text
            continue
        if grade_id is not None:
            notes.append(f"cell with unknown grade_id {grade_id[:40]!r} kept as the student's own")
        elif text in plain:
            continue  # the released copy of an ordinary cell, unchanged: the source's runs
        if cell.get("cell_type") == "code" and text.strip():
            extras.setdefault(anchor, []).append(text)
    missing = [c.grade_id for c in source.cells if c.grade_id and c.solution and c.grade_id not in answers]
    if missing:
        notes.append("missing answer cells: " + ", ".join(missing))

    cells = []

    def add(text, locked, grade_id=None, cell_type="code"):
        cells.append(RunCell(len(cells), text, locked, grade_id, cell_type))

    for text in extras.get(None, []):
        add(text, False)
    for original in source.cells:
        if original.solution:
            if original.grade_id in answers:
                add(answers[original.grade_id], False, original.grade_id, original.cell_type)
        else:
            add(original.source, True, original.grade_id, original.cell_type)
        for text in extras.get(original.grade_id, []) if original.grade_id else []:
            add(text, False)
    unanswered = [c.grade_id for c in source.cells if c.manual and c.grade_id in answers
                  and answers[c.grade_id] == released_source(c, source.settings)]
    return Prepared(cells=cells, notes=_summarised(notes), unanswered=unanswered)


MAX_NOTES = 5  # repairs named in the reason; a submission can ask for thousands


def _summarised(notes: list) -> list:
    """The first :data:`MAX_NOTES` notes and how many more there were (one reason cell stays short)."""
    if len(notes) <= MAX_NOTES:
        return notes
    return notes[:MAX_NOTES] + [f"and {len(notes) - MAX_NOTES} more repairs of this submission"]
