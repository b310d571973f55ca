"""``ste-course similarity``: rank pairs of submissions by the code they share (MOSS-style).

For each assignment (a folder of ``solutions/``) every student's code becomes one document: the
answers in the solution cells of each notebook (matched by ``grade_id`` with the instructor's
source, as the grader does, see :func:`ste_course.grading.preflight.prepare`) plus any code cells the
student added (copied code could hide there). Documents are compared

* pairwise between students (``kind="students"``),
* with the published solution cells of the same assignment (``kind="solution"``),
* with the ``ste_utils`` source, one cell per module (``kind="library"``),

and an HTML report ranks the pairs and shows the matching code side by side
(``similarity.html``; every pair's numbers also go to ``similarity.csv``).

How a pair is scored (the ``copydetect`` library, winnowing as in Schleimer, Wilkerson & Aiken,
SIGMOD 2003):

1. *Ignore what was given.* In each answer cell, the lines the released notebook already had
   in that cell (signature, docstring, argument checks, the ``# YOUR CODE HERE`` stub) are
   blanked (:func:`blank_provided`); and every k-gram of any code in the released notebook
   (its code cells and the code blocks of its markdown) is dropped from the fingerprints.
2. *Normalise.* copydetect tokenises each cell with pygments as Python; every identifier
   (names, attributes, function and class names) becomes ``V``/``F``/``O``, every string ``S``;
   comments and all whitespace are dropped. Renamed variables and changed comments or layout
   change nothing. Keywords, operators, numbers and builtins stay as written.
3. *Fingerprint.* Every k-gram of the normalised text (``k = NOISE`` = 25 characters, about a
   line of code) is hashed; the guarantee threshold equals ``k``, so the winnowing window is 1
   and every k-gram is kept (the documents are small).
4. *Compare.* Every cell of A against every cell of B: ``sim_A`` = (normalised characters of A
   inside k-grams that also occur in B) / (normalised characters of A inside any kept k-gram);
   likewise ``sim_B``.

The score of a student pair is ``max(sim_A, sim_B)``: a student who copied a classmate's
answer into a longer notebook of their own is still caught from the copier's side. Against the
solutions or ``ste_utils`` it is the student's side only (the library is long; a pasted function
is most of the student's code, not of the library).

Flagged means ``score >= threshold`` and at least ``MIN_OVERLAP`` matching normalised
characters. ``THRESHOLD = 0.5``. On the synthetic ``ste_sign`` answers of
tests/test_similarity.py, copies score 1.0 (renamed variables with new comments and spacing;
the published solution pasted with renames; ``ste_utils.ste_sign`` pasted), while four
independent correct answers written differently score at most 0.29 against each other, the
solution and ``ste_utils`` (what they share is the ``@tf.custom_gradient`` / inner ``def
grad(dy)`` skeleton the course teaches, or a ``tf.cast(...)`` line). Edited copies of the same
11-line answer scored 0.81 (two debug prints added), 0.75 (one line rewritten), 0.45 (the inner
``grad`` rewritten as a lambda) and 0.33 (two lines rewritten): on answers this short a copier
who rewrites a few lines gets under any threshold that spares honest students, so look down the
ranking too. Smaller k does not separate better (k = 18: honest pairs up to 0.47, the two-line
rewrite 0.53; k = 12: honest up to 0.80), so k stays at copydetect's default of 25.
``MIN_OVERLAP = 50`` (about two lines) keeps a two-line answer that happens to match a
classmate's out of the flagged list; it is still ranked. Flagged is a prompt to read the two
cells side by side, not a verdict.

Cost: each cell is tokenised and hashed once per assignment (pygments, linear in its length);
a pair is one ``set.isdisjoint`` per pair of cells, and for the cells that do share hashes
copydetect's set intersection plus a little numpy to turn matching positions into ranges:
O(len A + len B). n students give n(n-1)/2 pairs per assignment plus 2n reference pairs.
Measured on this 2-core machine (shared, load about 4): 60 synthetic students, one notebook,
answers of about 1,300 characters (20-45 lines, drawn from five styles, so 437 pairs flag):
1,890 pairs in 1.6-2.2 s of CPU (2-3 s wall) with the HTML and CSV written, plus about 1 s to
import copydetect (it imports matplotlib); 20 students: 0.4 s.

Student notebooks are data here, never run. Their text goes into the report through
``html.escape`` only; a notebook that cannot be read (bad JSON, not nbformat 4, too large, a
symlink) is skipped with a note in the report.
"""

from __future__ import annotations

import csv
import html
import importlib.util
import io
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ste_course.authoring.release import blank_solution
from ste_course.authoring.source import SourceError, load_notebook
from ste_course.grading.preflight import PreflightError, prepare, read_submission
from ste_course.untrusted import cell, clean, shown, valid_id

NOISE = 25  # k: the shortest run of normalised characters that counts as a match
THRESHOLD = 0.5  # flag a pair whose score reaches this (see the module docstring)
MIN_OVERLAP = 50  # ... and that shares at least this many normalised characters
MAX_LISTED = 100  # pairs listed (ranked, with code) per assignment in the HTML report
MAX_DOCUMENT_CHARS = 200_000  # a student's code beyond this is cut (with a note)
LANGUAGE = "python"
FENCED = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Document:
    """One side of a comparison: a student's code for an assignment, or a reference.

    ``cells`` is a tuple of ``(label, code, scored)``: ``scored`` is ``code`` with the lines the
    release provides blanked (same length), and is what gets fingerprinted. Each cell is
    tokenised on its own, so an open string in one cell cannot swallow the next, and no match
    spans two cells.
    """

    name: str  # student id, "solutions/<assignment>" or "ste_utils"
    kind: str  # "student", "solution" or "library"
    cells: tuple


@dataclass(frozen=True)
class Match:
    """A compared pair. ``left`` is always a student; ``right`` a student or a reference."""

    assignment: str
    kind: str  # "students", "solution" or "library"
    left: str
    right: str
    score: float
    left_similarity: float
    right_similarity: float
    overlap: int  # matching normalised characters on the left
    left_cells: tuple = ()  # ((label, code, ((start, end), ...)), ...): matching code per cell
    right_cells: tuple = ()

    def flagged(self, threshold: float = THRESHOLD) -> bool:
        """``score >= threshold`` and at least ``MIN_OVERLAP`` shared normalised characters."""
        return self.score >= threshold and self.overlap >= MIN_OVERLAP


# ---------------------------------------------------------------------------- reading notebooks
def _cell_text(cell) -> str:
    src = cell.get("source", "") if isinstance(cell, dict) else ""
    if isinstance(src, list):
        return "".join(s for s in src if isinstance(s, str))
    return src if isinstance(src, str) else ""


@dataclass(frozen=True)
class Release:
    """What the released notebook gives the students: none of it counts as similarity."""

    pieces: tuple  # every code cell and fenced markdown code block (boilerplate k-grams)
    cells: dict  # grade_id -> that cell's released code (its lines are blanked in answers)


def released_code(released: Path, source) -> tuple:
    """``(Release, note)`` of one released notebook.

    The pieces are its code cells (stubs, signatures and provided code in solution cells, set-up
    and visible tests) and the fenced code blocks of its markdown. When the released notebook
    cannot be read, the same is derived from the instructor's ``source`` (a
    :class:`~ste_course.authoring.source.SourceNotebook`) the way ``ste-course release`` blanks it, and the
    note says so.
    """
    try:
        nb = json.loads(Path(released).read_bytes().decode("utf-8"))
        cells = nb["cells"] if isinstance(nb, dict) and isinstance(nb.get("cells"), list) else None
    except (OSError, ValueError):
        cells = None
    pieces, by_id, note = [], {}, None
    if cells is not None:
        for cell in (c for c in cells if isinstance(c, dict)):
            text, meta = _cell_text(cell), cell.get("metadata")
            nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
            grade_id = nbg.get("grade_id") if isinstance(nbg, dict) else None
            if cell.get("cell_type") == "code":
                pieces.append(text)
                if isinstance(grade_id, str):
                    by_id[grade_id] = text
            else:
                pieces += FENCED.findall(text)
    else:
        note = f"{released} could not be read: provided code taken from the instructor's source"
        for c in source.cells:
            if c.cell_type == "code":
                pieces.append(blank_solution(c.source) if c.solution else c.visible_source)
                by_id[c.grade_id] = pieces[-1]
            else:
                pieces += FENCED.findall(c.source)
    return Release(tuple(pieces), by_id), note


def _self_contained(line: str) -> bool:
    """True when blanking ``line`` cannot change where strings start or end after it: no
    triple quote, or one ``\"\"\"...\"\"\"`` (or ``\'\'\'...\'\'\'``) pair and no backslash."""
    double, single = line.count('"""'), line.count("'''")
    if double + single == 0:
        return not line.rstrip().endswith("\\")
    return "\\" not in line and sorted((double, single)) == [0, 2]


def blank_provided(code: str, provided: str) -> str:
    """``code`` with each line that the release already had in this cell turned into spaces.

    A line is provided when, stripped, it equals a non-blank line of ``provided``. Spaces keep
    every offset (so matches still point into the student's text) and vanish in normalisation,
    so the signature, docstring and checks given in a cell count neither as code nor as a match,
    not even in k-grams that run from them into the student's own lines. A line that opens or
    closes a multi-line string is kept: blanking it could turn the student's code after it into
    a string and hide it.
    """
    given = {line.strip() for line in provided.splitlines() if line.strip()}
    out = []
    for line in code.split("\n"):
        body = line.rstrip("\r")
        if body.strip() in given and _self_contained(body):
            line = " " * len(body) + line[len(body):]
        out.append(line)
    return "\n".join(out)


def student_cells(submissions: Path, parts: tuple, source, release: Release) -> tuple:
    """``(cells, notes)``: a submitted notebook's answers to ``source``'s solution code cells (in
    the source's order) and the code cells the student added, as ``(label, code, scored)``
    (``scored``: the code with the release's lines blanked); ``cells`` is None when the notebook
    cannot be read. It is read as ``grade`` reads it: ``submissions/<parts...>`` through the
    student's own folders only, size-checked first, lone surrogates replaced.
    """
    try:
        prepared = prepare(source, read_submission(submissions, parts))
    except PreflightError as err:
        return None, [f"skipped: {err.reason}"]
    cells = tuple((f"{source.name}.ipynb: {c.grade_id or 'cell added by the student'}", c.source,
                   blank_provided(c.source, release.cells.get(c.grade_id, "") if c.grade_id else ""))
                  for c in prepared.cells if not c.locked and c.cell_type == "code")
    return cells, prepared.notes


def load_sources(solutions: Path, notes: list) -> dict:
    """``{assignment: [SourceNotebook, ...]}``; unreadable instructor notebooks become notes."""
    out = {}
    for folder in sorted(p for p in Path(solutions).iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(folder.glob("*.ipynb")):
            try:
                out.setdefault(folder.name, []).append(load_notebook(path, folder.name))
            except (SourceError, OSError, ValueError) as err:
                notes.append(f"{path}: instructor notebook skipped ({str(err)[:200]})")
    return out


def _cap(cells: tuple, where: str, notes: list) -> tuple:
    """The cells cut to ``MAX_DOCUMENT_CHARS`` characters in all (with a note when cut)."""
    out, left = [], MAX_DOCUMENT_CHARS
    for label, code, scored in cells:
        out.append((label, code[:left], scored[:left]))
        left -= len(out[-1][1])
    if left <= 0:
        notes.append(f"{where}: code cut to {MAX_DOCUMENT_CHARS} characters")
    return tuple(cell for cell in out if cell[1])


def student_folders(submissions: Path, notes: list) -> list:
    """The names of the folders that are students, as ``grade`` takes them: a link or a name that
    is not a usable id (:func:`ste_course.untrusted.valid_id`) is a note (the name escaped), not a
    document; names starting with ``.`` and plain files are not students."""
    out = []
    for name in sorted(os.listdir(submissions)):
        path = Path(submissions) / name
        if name.startswith(".") or not (path.is_symlink() or path.is_dir()):
            continue
        if path.is_symlink():
            notes.append(f"{shown(name, 60)}: skipped: the student folder is a link")
        elif not valid_id(name):
            notes.append(f"{shown(name, 60)}: skipped: not a usable student id")
        else:
            out.append(name)
    return out


def student_documents(submissions: Path, students: list, assignment: str, sources: list, releases: dict,
                      notes: list) -> list:
    """One :class:`Document` per student (of :func:`student_folders`) who submitted anything
    readable for ``assignment``."""
    docs = []
    for student in students:
        cells, submitted = [], False
        for source in sources:
            parts = (student, assignment, f"{source.name}.ipynb")
            path = Path(submissions).joinpath(*parts)
            if not path.exists() and not path.is_symlink():
                continue
            found, cell_notes = student_cells(submissions, parts, source, releases[source.name])
            notes += [f"{'/'.join(parts)}: {n}" for n in cell_notes]
            if found is not None:
                cells += found
                submitted = True
        if submitted:
            docs.append(Document(student, "student", _cap(tuple(cells), f"{student}/{assignment}", notes)))
    return docs


def solution_document(assignment: str, sources: list, releases: dict) -> Document:
    """The instructor's solution code cells of ``assignment`` (what a pasted copy matches), with
    the lines the release gives blanked as in the answers."""
    cells = tuple((f"{s.name}.ipynb: {c.grade_id}", c.source,
                   blank_provided(c.source, releases[s.name].cells.get(c.grade_id, "")))
                  for s in sources for c in s.cells if c.solution and c.cell_type == "code")
    return Document(f"solutions/{assignment}", "solution", cells)


def default_library() -> Path:
    """The folder of the ``ste_utils`` package, found without importing it (no TensorFlow)."""
    spec = importlib.util.find_spec("ste_utils")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the ste_utils package is not importable; pass library=")
    return Path(list(spec.submodule_search_locations)[0])


def library_document(library: Path) -> Document:
    """The library's source, one cell per ``.py`` file."""
    library = Path(library)
    cells = []
    for path in sorted(p for p in library.rglob("*.py") if "__pycache__" not in p.parts):
        code = path.read_text(encoding="utf-8")
        cells.append((f"{library.name}/{path.relative_to(library).as_posix()}", code, code))
    return Document(library.name, "library", tuple(cells))


# ---------------------------------------------------------------------------- comparing
def boilerplate_hashes(pieces: list) -> set:
    """Hashes of every k-gram of each normalised piece of provided code: matches to ignore."""
    from copydetect import CodeFingerprint

    hashes = set()
    for code in pieces:
        hashes |= CodeFingerprint("provided.py", NOISE, 1, filter=True, language=LANGUAGE,
                                  fp=io.StringIO(code)).hashes
    return hashes


@dataclass
class Fingerprint:
    """copydetect's fingerprints of a whole document, its cells merged: each cell is tokenised
    and hashed on its own (no k-gram spans two cells), then every hash maps to its positions in
    the cells' normalised texts laid end to end (cell ``i`` starts at ``starts[i]``), so a pair
    of documents is compared with one set intersection, linear in their lengths."""

    doc: Document
    cells: list  # copydetect CodeFingerprint per cell (filtered_code, offsets, hash_idx)
    starts: np.ndarray  # where each cell's normalised text starts in the merged document
    positions: dict  # hash -> np.ndarray of merged positions
    coverage: float  # normalised characters inside kept k-grams (copydetect's token_coverage)


def fingerprints(doc: Document, boilerplate: set) -> Fingerprint:
    """The document's merged fingerprint: identifiers normalised, ``boilerplate`` removed.

    The boilerplate is removed here rather than by ``CodeFingerprint(boilerplate=...)``: in
    copydetect 0.5.0 that argument also drops every occurrence but the last of any k-gram that
    appears twice in a cell (``np.intersect1d(..., assume_unique=True)`` on a list with repeats),
    so a repeated block would be half ignored and shown unmarked.
    """
    from copydetect import CodeFingerprint
    from copydetect.utils import get_token_coverage

    cells, starts, merged, coverage, start = [], [], {}, 0.0, 0
    for label, _, scored in doc.cells:
        fp = CodeFingerprint(label, NOISE, 1, filter=True, language=LANGUAGE, fp=io.StringIO(scored))
        fp.hash_idx = {h: idx for h, idx in fp.hash_idx.items() if h not in boilerplate}
        coverage += float(get_token_coverage(fp.hash_idx, NOISE, len(fp.filtered_code)))
        for h, idx in fp.hash_idx.items():
            merged.setdefault(h, []).extend(start + int(i) for i in idx)
        cells.append(fp)
        starts.append(start)
        start += len(fp.filtered_code)
    positions = {h: np.asarray(p, dtype=np.int64) for h, p in merged.items()}
    return Fingerprint(doc, cells, np.asarray(starts, dtype=np.int64), positions, coverage)


def _spans(slices, length: int) -> list:
    """copydetect's 2 x N slice array as clipped ``(start, end)`` pairs."""
    slices = np.asarray(slices)
    if slices.ndim != 2 or slices.shape[1] == 0:
        return []
    return [(max(0, int(a)), min(length, int(b))) for a, b in zip(slices[0], slices[1]) if b > a]


def _merge(spans: list) -> tuple:
    """Sorted, non-overlapping union of ``(start, end)`` spans."""
    out = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)


def _blanked_lines(code: str, scored: str) -> list:
    """``(start, end)`` of each line of ``code`` that is blank in ``scored`` (a provided line)."""
    out, pos = [], 0
    for line, kept in zip(code.split("\n"), scored.split("\n")):
        if line.strip() and not kept.strip():
            out.append((pos, pos + len(line) + 1))
        pos += len(line) + 1
    return out


def _unblanked(spans: tuple, code: str, scored: str) -> tuple:
    """``spans`` cut around the provided lines and trimmed of whitespace at both ends."""
    if not spans:
        return ()
    blanked, pieces = _blanked_lines(code, scored), []
    for start, end in spans:
        pos = start
        for a, b in blanked:
            if a < end and b > pos:
                pieces.append((pos, max(pos, a)))
                pos = min(end, b)
        pieces.append((pos, end))
    out = []
    for start, end in pieces:
        while start < end and code[start].isspace():
            start += 1
        while end > start and code[end - 1].isspace():
            end -= 1
        if end > start:
            out.append((start, end))
    return tuple(out)


class _Side:
    """One document of a pair: which of its normalised positions match (for the score) and the
    matching raw-text spans of each cell (for the report)."""

    def __init__(self, fp: Fingerprint, hashes):
        self.fp = fp
        found = [fp.positions[h] for h in hashes]
        merged = np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
        bounds = np.append(np.searchsorted(merged, fp.starts), len(merged))  # each cell's slice
        self.covered, self.raw = 0, {}
        for i in np.flatnonzero(np.diff(bounds)):
            self._mark(int(i), merged[bounds[i]:bounds[i + 1]] - fp.starts[i])

    def _mark(self, i: int, local) -> None:
        from copydetect.utils import get_copied_slices

        cell = self.fp.cells[i]
        slices = get_copied_slices(local, NOISE)
        covered = np.zeros(len(cell.filtered_code), dtype=bool)
        for start, end in zip(*slices):
            covered[int(start):int(end)] = True
        self.covered += int(covered.sum())
        if len(cell.offsets) > 0:  # normalised -> raw positions, as copydetect's compare_files does
            slices = slices + cell.offsets[:, 1][np.clip(np.searchsorted(cell.offsets[:, 0], slices),
                                                         0, cell.offsets.shape[0] - 1)]
        self.raw[i] = _spans(slices, len(self.fp.doc.cells[i][1]))

    def similarity(self) -> float:
        """Matched normalised characters / characters covered by kept k-grams (copydetect's)."""
        return self.covered / self.fp.coverage if self.fp.coverage else 0.0

    def cells(self) -> tuple:
        """``((label, code, spans), ...)``: matching spans without the blanked provided lines."""
        return tuple((label, code, _unblanked(_merge(self.raw.get(i, [])), code, scored))
                     for i, (label, code, scored) in enumerate(self.fp.doc.cells))


def compare(assignment: str, kind: str, left: Fingerprint, right: Fingerprint) -> Match:
    """Score one pair of documents: a position of one side matches when its k-gram occurs
    anywhere in the other (in any cell); a position matched by several cells counts once. One
    set intersection and a sort: O((len A + len B) log)."""
    common = left.positions.keys() & right.positions.keys()
    a, b = _Side(left, common), _Side(right, common)
    sim_a, sim_b = a.similarity(), b.similarity()
    score = max(sim_a, sim_b) if kind == "students" else sim_a
    return Match(assignment, kind, left.doc.name, right.doc.name, score, sim_a, sim_b, a.covered,
                 a.cells(), b.cells())


def compare_assignment(assignment: str, students: list, references: list, provided: list) -> list:
    """Every student pair and every student against every reference, best score first."""
    boilerplate = boilerplate_hashes(provided)
    fps = {(d.name, d.kind): fingerprints(d, boilerplate) for d in students + references}
    pairs = [("students", a, b) for a, b in itertools.combinations(students, 2)]
    pairs += [(ref.kind, s, ref) for ref in references for s in students]
    matches = [compare(assignment, kind, fps[l.name, l.kind], fps[r.name, r.kind]) for kind, l, r in pairs]
    return sorted(matches, key=lambda m: (-m.score, -m.overlap, m.left, m.right))


# ---------------------------------------------------------------------------- the report
CSS = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}tr.flag{background:#fdd}
.side{display:flex;gap:1em}.side>div{flex:1;min-width:0}pre{background:#f6f6f6;padding:.5em;
overflow-x:auto;font-size:85%;margin-top:0}mark{background:#fc6}.cell{color:#555;font-size:85%}"""


def highlight(text: str, spans: tuple, context: int | None = None) -> str:
    """``text`` escaped for HTML, each ``(start, end)`` span wrapped in ``<mark>``.

    With ``context``, only lines within ``context`` lines of a span are kept (the rest become
    ``...``): for long references such as a ``ste_utils`` module.
    """
    out, pos = [], 0
    for start, end in spans:
        start = max(start, pos)
        if end <= start:
            continue
        out += [html.escape(text[pos:start]), "<mark>", html.escape(text[start:end]), "</mark>"]
        pos = end
    out.append(html.escape(text[pos:]))
    marked = "".join(out)
    if context is None:
        return marked
    lines, keep = marked.split("\n"), set()
    for start, end in spans:
        first, last = text.count("\n", 0, start), text.count("\n", 0, end)
        keep.update(range(first - context, last + context + 1))
    shown, skipping = [], False
    for number, line in enumerate(lines):
        if number in keep:
            shown.append(line)
            skipping = False
        elif not skipping:
            shown.append("...")
            skipping = True
    return "\n".join(shown)


def _side_html(name: str, similarity: float, cells: tuple, reference: bool) -> str:
    """One column: every cell of a student; only the matching cells of a reference, in excerpt."""
    e = html.escape
    parts = [f"<b>{e(name)}</b> ({similarity:.0%} of it matches)"]
    for label, code, spans in cells:
        if reference and not spans:
            continue
        parts.append(f"<div class=\"cell\">{e(label)}</div>"
                     f"<pre>{highlight(code, spans, 3 if reference else None)}</pre>")
    return "<div>" + "".join(parts) + "</div>"


def _pair_html(m: Match, anchor: str, threshold: float) -> str:
    e = html.escape
    state = " open" if m.flagged(threshold) else ""
    return (f'<details id="{anchor}"{state}><summary>{e(m.left)} &harr; {e(m.right)} '
            f"({m.kind}): score {m.score:.2f}</summary><div class=\"side\">"
            f"{_side_html(m.left, m.left_similarity, m.left_cells, False)}"
            f"{_side_html(m.right, m.right_similarity, m.right_cells, m.kind != 'students')}"
            f"</div></details>")


def _assignment_html(assignment: str, matches: list, threshold: float) -> str:
    e = html.escape
    listed = [m for m in matches if m.score > 0][:MAX_LISTED]
    rows, details = [], []
    for rank, m in enumerate(listed, 1):
        anchor = f"{e(assignment)}-{rank}"
        cls = ' class="flag"' if m.flagged(threshold) else ""
        rows.append(f'<tr{cls}><td>{rank}</td><td><a href="#{anchor}">{m.score:.2f}</a></td>'
                    f"<td>{e(m.left)}</td><td>{e(m.right)}</td><td>{m.kind}</td>"
                    f"<td>{m.left_similarity:.0%}</td><td>{m.right_similarity:.0%}</td>"
                    f"<td>{m.overlap}</td><td>{'yes' if m.flagged(threshold) else ''}</td></tr>")
        details.append(_pair_html(m, anchor, threshold))
    head = ("<tr><th>rank</th><th>score</th><th>student</th><th>compared with</th><th>kind</th>"
            "<th>left matches</th><th>right matches</th><th>overlap</th><th>flagged</th></tr>")
    shown = (f"<table>{head}{''.join(rows)}</table>{''.join(details)}" if rows
             else "<p>No pair shares any code beyond what the release provides.</p>")
    return (f"<h2>{e(assignment)}</h2><p>{len(matches)} pairs compared, "
            f"{sum(m.flagged(threshold) for m in matches)} flagged, {len(listed)} listed.</p>{shown}")


def render_html(by_assignment: dict, notes: list, threshold: float) -> str:
    """The whole report: settings, notes, then one ranked section per assignment."""
    e = html.escape
    note_list = "".join(f"<li>{e(n)}</li>" for n in notes) or "<li>none</li>"
    sections = "".join(_assignment_html(a, ms, threshold) for a, ms in by_assignment.items())
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Code similarity</title>"
            f"<style>{CSS}</style></head><body><h1>Code similarity</h1>"
            f"<p>Flagged: score &ge; {threshold:.2f} and at least {MIN_OVERLAP} matching normalised "
            f"characters (k = {NOISE}; identifiers, strings, comments and whitespace normalised; "
            f"code given in the released notebooks ignored). For two students the score is the "
            f"larger of the two sides' matching fractions; against the solutions or ste_utils it "
            f"is the student's side. A flag asks for a reading, not a verdict.</p>"
            f"<h2>Notes</h2><ul>{note_list}</ul>{sections}</body></html>")


def write_csv(path: Path, matches: list, threshold: float = THRESHOLD) -> None:
    """Every compared pair, one row each, best score first within each assignment."""
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["assignment", "kind", "student", "compared_with", "score", "student_similarity",
                    "other_similarity", "overlap", "flagged"])
        for m in matches:
            w.writerow([cell(v) for v in (m.assignment, m.kind, m.left, m.right)]  # no formula
                       + [f"{m.score:.4f}", f"{m.left_similarity:.4f}", f"{m.right_similarity:.4f}", m.overlap,
                          m.flagged(threshold)])


def similarity_report(submissions: Path, solutions: Path, exercises: Path, out: Path,
                      threshold: float = THRESHOLD, *, library: Path | None = None) -> list:
    """Compare all submissions; write ``out/similarity.html`` and ``out/similarity.csv``.

    Args:
        submissions: ``SUBMISSIONS/<student_id>/<assignment>/<notebook>.ipynb``.
        solutions: the instructor's source notebooks, ``solutions/<assignment>/<notebook>.ipynb``.
        exercises: the released notebooks, ``exercises/<assignment>/<notebook>.ipynb``; their code
            does not count as similarity.
        out: folder for the report (created).
        threshold: flag pairs whose score is at least this (0..1).
        library: the ``ste_utils`` source folder (default: the installed package's).

    Returns:
        The flagged :class:`Match` es, highest score first.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be between 0 and 1. Received: threshold={threshold!r}")
    for name, folder in (("submissions", submissions), ("solutions", solutions)):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"no {name} folder at {folder}")
    notes = []
    library_doc = library_document(library if library is not None else default_library())
    by_assignment = {}
    students = student_folders(submissions, notes)
    for assignment, sources in load_sources(solutions, notes).items():
        releases = {}
        for source in sources:
            releases[source.name], note = released_code(Path(exercises) / assignment / f"{source.name}.ipynb", source)
            notes += [note] if note else []
        docs = student_documents(submissions, students, assignment, sources, releases, notes)
        references = [solution_document(assignment, sources, releases), library_doc]
        provided = [piece for r in releases.values() for piece in r.pieces]
        by_assignment[assignment] = compare_assignment(assignment, docs, references, provided)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "similarity.html").write_text(clean(render_html(by_assignment, notes, threshold)), encoding="utf-8")
    every = [m for ms in by_assignment.values() for m in ms]
    write_csv(out / "similarity.csv", every, threshold)
    return sorted((m for m in every if m.flagged(threshold)), key=lambda m: (-m.score, m.assignment, m.left))
