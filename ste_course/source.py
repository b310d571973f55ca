"""The instructor's truth: assignments read from ``solutions/`` (nbgrader source notebooks).

For each notebook we keep the cells by nbgrader ``grade_id``: which are solution cells (the
student's answer is taken), which are locked (restored from here when grading), how many points
each test cell is worth, which checks it calls (read from its source, never executed), and which
``ste_utils`` names a part forbids.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"


class SourceError(ValueError):
    """An instructor notebook that breaks the course's conventions."""


@dataclass(frozen=True)
class CheckCall:
    spec: str
    hidden: bool


@dataclass
class SourceCell:
    index: int
    cell_type: str
    source: str
    grade_id: Optional[str]
    solution: bool = False
    grade: bool = False
    locked: bool = False
    points: float = 0.0
    checks: list = field(default_factory=list)
    forbid: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    @property
    def visible_source(self) -> str:
        """The source with hidden-test blocks removed (what a student sees)."""
        return strip_hidden(self.source)


@dataclass
class SourceNotebook:
    assignment: str
    name: str  # file stem
    path: Path
    cells: list
    metadata: dict

    @property
    def grade_cells(self):
        return [c for c in self.cells if c.grade]

    @property
    def max_score(self) -> float:
        return float(sum(c.points for c in self.grade_cells))

    def by_id(self) -> dict:
        return {c.grade_id: c for c in self.cells if c.grade_id}


def strip_hidden(source: str) -> str:
    out, hiding = [], False
    for line in source.splitlines(keepends=True):
        if line.strip() == HIDDEN_BEGIN:
            hiding = True
        elif line.strip() == HIDDEN_END:
            hiding = False
        elif not hiding:
            out.append(line)
    return "".join(out).rstrip("\n")


def hidden_lines(source: str) -> list:
    """The non-blank lines inside hidden-test blocks (to scrub them from any output)."""
    lines, hiding = [], False
    for line in source.splitlines():
        if line.strip() == HIDDEN_BEGIN:
            hiding = True
        elif line.strip() == HIDDEN_END:
            hiding = False
        elif hiding and line.strip():
            lines.append(line.strip())
    return lines


def parse_checks(source: str, where: str) -> list:
    """The ``check(obj, "spec", hidden=...)`` calls of a test cell, read from its AST."""
    code = "\n".join(l for l in source.splitlines() if l.strip() not in (HIDDEN_BEGIN, HIDDEN_END))
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise SourceError(f"{where}: test cell does not parse: {err}") from None
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check":
            if len(node.args) < 2 or not isinstance(node.args[1], ast.Constant) or not isinstance(node.args[1].value, str):
                raise SourceError(f"{where}: check() needs the spec name as a string literal")
            hidden = False
            for kw in node.keywords:
                if kw.arg == "hidden":
                    if not isinstance(kw.value, ast.Constant) or not isinstance(kw.value.value, bool):
                        raise SourceError(f"{where}: hidden= must be True or False literally")
                    hidden = kw.value.value
            calls.append((node.lineno, node.col_offset, CheckCall(node.args[1].value, hidden)))
    return [c for _, _, c in sorted(calls, key=lambda t: (t[0], t[1]))]


def _source_text(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def load_notebook(path: Path, assignment: str) -> SourceNotebook:
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    cells, seen = [], set()
    for index, cell in enumerate(nb.get("cells", [])):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        grade_id = meta.get("grade_id")
        where = f"{path} cell {index}" + (f" ({grade_id})" if grade_id else "")
        if grade_id:
            if grade_id in seen:
                raise SourceError(f"{where}: duplicate grade_id")
            seen.add(grade_id)
        source = _source_text(cell)
        sc = SourceCell(index=index, cell_type=cell.get("cell_type", "code"), source=source,
                        grade_id=grade_id, solution=bool(meta.get("solution")),
                        grade=bool(meta.get("grade")), locked=bool(meta.get("locked")),
                        points=float(meta.get("points", 0) or 0),
                        forbid=list(cell.get("metadata", {}).get("ste_course", {}).get("forbid", [])),
                        metadata=cell.get("metadata", {}))
        if sc.grade and sc.cell_type == "code":
            sc.checks = parse_checks(source, where)
            if not sc.checks:
                raise SourceError(f"{where}: a graded test cell must call check() at least once")
        cells.append(sc)
    return SourceNotebook(assignment=assignment, name=Path(path).stem, path=Path(path),
                          cells=cells, metadata=nb.get("metadata", {}))


def load_assignments(solutions: Path) -> dict:
    """``{assignment: [SourceNotebook, ...]}`` for every ``solutions/<assignment>/*.ipynb``."""
    solutions = Path(solutions)
    if not solutions.is_dir():
        raise SourceError(f"no solutions folder at {solutions}")
    out = {}
    for folder in sorted(p for p in solutions.iterdir() if p.is_dir() and not p.name.startswith(".")):
        notebooks = [load_notebook(p, folder.name) for p in sorted(folder.glob("*.ipynb"))]
        if notebooks:
            out[folder.name] = notebooks
    return out
