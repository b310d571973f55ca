"""The instructor's truth: assignments read from ``solutions/`` (nbgrader source notebooks).

For each notebook we keep the cells by nbgrader ``grade_id``: which are solution cells (the
student's answer is taken), which are locked (restored from here when grading), how many points
each test cell is worth, which checks it calls (read from its source, never executed), and which
``ste_utils`` names a part forbids.

Three kinds of graded cell:

* a **check cell** (a test cell calling ``check(obj, "spec")``): the grader judges evidence;
* an **assert cell** (a test cell of a notebook where no cell calls ``check``, nbgrader's own
  style, "bring your own assignment"): the points when the cell runs without an error;
* a **written answer** (nbgrader's "manually graded answer": solution and grade, usually
  markdown): points given by hand in formgrader; autograding leaves it "needs manual grade".

Reading never stops at the first mistake. Every notebook gets two lists, one line each naming
the file, the cell's grade id and what to fix:

* ``problems``: what nbgrader itself refuses or what makes grading impossible (a duplicate grade
  id, a graded cell without points, an nbgrader cell without a grade id, a solution or hidden-test
  region that is not closed or sits in the wrong kind of cell, a ``check`` call that cannot be
  read). ``release`` and ``check`` refuse them; ``grade`` gives that notebook's rows status ``error``.
* ``warnings``: this course's authoring conventions (:func:`validate`): hidden blocks, points
  notes that add up, answers some test uses. Any notebook ``nbgrader generate_assignment``
  accepts is released and graded with warnings; ``--strict`` makes them problems.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
# "(3 points)", "(1 point)", "(3 + 4 points)" in a test's first line or a part's heading
POINTS_NOTE = re.compile(r"\((\d+(?:\.\d+)?(?:\s*\+\s*\d+(?:\.\d+)?)*)\s+points?\)")


class SourceError(ValueError):
    """An instructor notebook that breaks the course's conventions (``problems``: one line each)."""

    def __init__(self, problems):
        problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(problems))
        self.problems = problems


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

    @property
    def manual(self) -> bool:
        """A written answer (nbgrader: solution and grade): graded by hand, never automatically."""
        return self.grade and self.solution

    @property
    def asserts(self) -> bool:
        """A test cell judged by running it (nbgrader's ``assert`` style): no ``check`` call."""
        return self.grade and not self.solution and self.cell_type == "code" and not self.checks


@dataclass
class SourceNotebook:
    assignment: str
    name: str  # file stem
    path: Path
    cells: list
    metadata: dict
    problems: list = field(default_factory=list)  # one line each; non-empty: not gradable
    warnings: list = field(default_factory=list)  # the course's conventions (errors with --strict)
    settings: object = None  # the course's nbgrader_config.py (authoring.nbconfig.NbgraderSettings)

    @property
    def grade_cells(self):
        return [c for c in self.cells if c.grade]

    @property
    def auto_cells(self):
        """The test cells the grader scores (check or assert cells; not written answers)."""
        return [c for c in self.cells if c.grade and not c.manual]

    @property
    def max_score(self) -> float:
        return float(sum(c.points for c in self.grade_cells))

    @property
    def manual_score(self) -> float:
        """The points given by hand (written answers)."""
        return float(sum(c.points for c in self.grade_cells if c.manual))

    def by_id(self) -> dict:
        return {c.grade_id: c for c in self.cells if c.grade_id}


def strip_hidden(source: str) -> str:
    """The source without its hidden-test regions, as nbgrader's ClearHiddenTests removes them
    (a line containing ``BEGIN HIDDEN TESTS`` up to the line containing ``END HIDDEN TESTS``)."""
    out, hiding = [], False
    for line in source.split("\n"):
        if "BEGIN HIDDEN TESTS" in line:
            hiding = True
        elif "END HIDDEN TESTS" in line:
            hiding = False
        elif not hiding:
            out.append(line)
    return "\n".join(out)


def hidden_lines(source: str) -> list:
    """The non-blank lines inside hidden-test blocks (to scrub them from any output)."""
    lines, hiding = [], False
    for line in source.splitlines():
        if "BEGIN HIDDEN TESTS" in line:
            hiding = True
        elif "END HIDDEN TESTS" in line:
            hiding = False
        elif hiding and line.strip():
            lines.append(line.strip())
    return lines


def _code(source: str) -> str:
    return "\n".join(l for l in source.splitlines() if l.strip() not in (HIDDEN_BEGIN, HIDDEN_END))


def parse_checks(source: str, where: str) -> list:
    """The ``check(obj, "spec", hidden=...)`` calls of a test cell, read from its AST."""
    try:
        tree = ast.parse(_code(source))
    except SyntaxError as err:
        raise SourceError(f"{where}: the cell does not parse ({err.msg}, line {err.lineno}); fix its Python") from None
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check":
            if len(node.args) < 2 or not isinstance(node.args[1], ast.Constant) or not isinstance(node.args[1].value, str):
                raise SourceError(f"{where}: check() needs the spec name as a string literal, "
                                  "e.g. check(my_fn, \"ste_sign/value\")")
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


def _points(meta: dict, where: str, problems: list) -> float:
    """A grade cell's points; nbgrader refuses a grade cell without them (a problem)."""
    if not meta.get("grade"):
        return 0.0
    if "points" not in meta:
        problems.append(f"{where}: a graded cell without points (nbgrader: \"does not have points\"); "
                        "set them in the cell's nbgrader metadata (Create Assignment: Points)")
        return 0.0
    value = meta["points"]
    try:
        if isinstance(value, bool):
            raise TypeError
        points = float(value)
    except (TypeError, ValueError):
        problems.append(f"{where}: points must be a number, received {value!r}; set it in the cell's "
                        "nbgrader metadata (Create Assignment: Points)")
        return 0.0
    return points


def _regions(source: str, begin: str, end: str) -> tuple:
    """``(found, closed)`` for nbgrader's regions (a line containing ``begin`` up to one
    containing ``end``), as ClearSolutions and ClearHiddenTests read them: a nested ``begin`` or
    one never closed is what nbgrader refuses."""
    found, inside = False, False
    for line in source.split("\n"):
        if begin in line:
            if inside:
                return True, False
            found = inside = True
        elif end in line:
            inside = False
    return found, not inside


def _nbgrader_problems(sc: SourceCell, where: str) -> list:
    """What nbgrader's generate_assignment refuses in one cell (its metadata validator,
    ClearSolutions and ClearHiddenTests), said in its terms."""
    problems = []
    if (sc.grade or sc.solution or sc.locked) and not sc.grade_id:
        problems.append(f"{where}: an nbgrader cell without a grade_id (nbgrader: \"does not have a "
                        "grade_id\"); set one in Create Assignment")
    if sc.cell_type == "markdown" and sc.grade != sc.solution and not sc.metadata.get("nbgrader", {}).get("task"):
        problems.append(f"{where}: a markdown cell must be both solution and grade (nbgrader's \"Manually "
                        "graded answer\"); tick both or neither")
    found, closed = _regions(sc.source, "BEGIN SOLUTION", "END SOLUTION")
    if not closed:
        problems.append(f"{where}: a BEGIN SOLUTION region that is nested or never closed; close it "
                        "with ### END SOLUTION")
    elif found and not sc.solution:
        problems.append(f"{where}: a solution region in a cell that is not a solution cell; make it "
                        "an answer cell (Autograded answer) or remove the markers")
    found, closed = _regions(sc.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
    if not closed:
        problems.append(f"{where}: unbalanced {HIDDEN_BEGIN} / {HIDDEN_END}; close every hidden block once")
    elif found and not sc.grade:
        problems.append(f"{where}: a hidden-test region in a cell that is not a test cell; make it "
                        "an Autograder tests cell")
    return problems


def load_notebook(path: Path, assignment: str, known=None) -> SourceNotebook:
    """The notebook at ``path`` with its ``problems`` (what nbgrader refuses, or what makes grading
    impossible) and ``warnings`` (:func:`validate`); never raises for a mistake in the notebook,
    only lists it. ``known``: the check names (default: the registry)."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
            raise ValueError("no list of cells")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return SourceNotebook(assignment, path.stem, path, [], {},
                              [f"{path}: not a readable notebook ({err}); re-save it in JupyterLab"])
    cells, seen, problems = [], set(), []
    for index, cell in enumerate(nb["cells"]):
        cell = cell if isinstance(cell, dict) else {}
        metadata = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        meta = metadata.get("nbgrader") if isinstance(metadata.get("nbgrader"), dict) else {}
        grade_id = meta.get("grade_id")
        where = f"{path} [{grade_id or f'cell {index}'}]"
        solution, grade = bool(meta.get("solution")), bool(meta.get("grade"))
        locked = not solution and (grade or bool(meta.get("locked")))  # nbgrader's utils.is_locked
        if grade_id and (solution or grade or locked):
            if grade_id in seen:
                problems.append(f"{where}: duplicate grade_id (nbgrader: \"Duplicate grade id\"); give "
                                "each nbgrader cell its own id")
            seen.add(grade_id)
        source = _source_text(cell)
        sc = SourceCell(index=index, cell_type=cell.get("cell_type", "code"), source=source,
                        grade_id=grade_id, solution=solution, grade=grade, locked=locked,
                        points=_points(meta, where, problems),
                        forbid=list(metadata.get("ste_course", {}).get("forbid", [])),
                        metadata=metadata)
        problems += _nbgrader_problems(sc, where)
        if sc.grade and sc.cell_type == "code" and not sc.solution and "check" in source:
            try:
                sc.checks = parse_checks(source, where)
            except SourceError as err:
                if any(_calls_check(line) for line in source.splitlines()):
                    problems += err.problems  # check() calls we cannot read cannot be graded
            if sc.checks and known is None:
                known = _known_checks()
            for name in dict.fromkeys(call.spec for call in sc.checks):
                if name not in known:
                    problems.append(f"{where}: unknown check {name!r}{did_you_mean(name, known)}; use "
                                    "a registered name or declare it in the course's checks/ (docs/authoring.md)")
        cells.append(sc)
    out = SourceNotebook(assignment=assignment, name=path.stem, path=path, cells=cells,
                         metadata=nb.get("metadata", {}) if isinstance(nb.get("metadata"), dict) else {})
    out.problems = problems
    out.warnings = validate(out)
    return out


def _calls_check(line: str) -> bool:
    return re.search(r"(?<![\w.])check\s*\(", line.split("#", 1)[0]) is not None


# ------------------------------------------------------------------------------ validation
def _known_checks() -> set:
    import ste_course.specs  # noqa: F401  (registers the built-in checks)
    from ste_course.specs.base import SPECS

    return set(SPECS)


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _defined_names(source: str) -> set:
    """Names a solution cell defines at top level (functions, classes, assignments)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def _used_names(source: str) -> set:
    try:
        return {n.id for n in ast.walk(ast.parse(_code(source))) if isinstance(n, ast.Name)}
    except SyntaxError:
        return set()


def _has_assert(source: str) -> bool:
    try:
        return any(isinstance(n, (ast.Assert, ast.Raise)) for n in ast.walk(ast.parse(_code(source))))
    except SyntaxError:
        return True  # reported by the release itself


def _declared_points(text: str):
    match = POINTS_NOTE.search(text)
    return sum(float(p) for p in match.group(1).split("+")) if match else None


def validate(nb: SourceNotebook) -> list:
    """The course's authoring conventions ``nb`` breaks, one line each: ``<file> [<grade id>]:
    <what is wrong>; <what to do>`` (warnings: nbgrader accepts these notebooks; ``--strict``
    refuses them).

    A test cell that calls no check (in a notebook whose tests call ``check``), a test cell with
    neither check nor assert, a check cell without a hidden block, points that do not add up (a
    test's "(N points)" against its metadata, a part heading's against its tests), an answer cell
    no test uses, a graded cell worth no points, a written answer without a hidden model answer.
    """
    problems = []
    uses_check = any(c.checks for c in nb.cells)
    tests = [c for c in nb.cells if c.grade and not c.solution and c.cell_type == "code"]
    used = set().union(*(_used_names(c.source) for c in tests)) if tests else set()
    for cell in nb.cells:
        where = f"{nb.path} [{cell.grade_id or f'cell {cell.index}'}]"
        if cell.grade and cell.points <= 0 and "points" in cell.metadata.get("nbgrader", {}):
            problems.append(f"{where}: a graded cell worth {cell.points:g} points; give it positive points "
                            "or make it an ordinary cell")
        if cell in tests:
            problems += _validate_test(cell, where, uses_check)
        elif cell.manual:
            if SOLUTION_BEGIN not in cell.source or SOLUTION_END not in cell.source:
                problems.append(f"{where}: a written answer without a {SOLUTION_BEGIN} ... {SOLUTION_END} "
                                "region; put the model answer and the rubric inside it (students see "
                                "only the prompt)")
        elif cell.solution and not cell.grade and cell.cell_type == "code":
            if not (_defined_names(cell.source) & used):
                defined = ", ".join(sorted(_defined_names(cell.source))) or "nothing"
                problems.append(f"{where}: no test cell uses this answer (it defines {defined}); add a "
                                "test cell that checks it, e.g. check(name, \"spec\")")
    problems += _validate_headings(nb)
    return problems


def _validate_test(cell: SourceCell, where: str, uses_check: bool) -> list:
    problems = []
    if uses_check and not cell.checks:
        problems.append(f"{where}: this test cell calls no check(); call check(obj, \"spec\") and "
                        "check(obj, \"spec\", hidden=True) in a hidden block (docs/authoring.md)")
    if not uses_check and not _has_assert(cell.source):
        problems.append(f"{where}: this test cell has neither check() nor assert, so it fails only "
                        "when it raises; add the asserts (or check calls) that judge the answer")
    if cell.checks and not any(c.hidden for c in cell.checks):
        if HIDDEN_BEGIN not in cell.source:
            problems.append(f"{where}: no hidden block; add {HIDDEN_BEGIN} / check(obj, \"spec\", "
                            f"hidden=True) / {HIDDEN_END} so grading uses unseen inputs")
        else:
            problems.append(f"{where}: the hidden block calls no check(..., hidden=True); "
                            "pass hidden=True there")
    declared = _declared_points(cell.source.strip().splitlines()[0] if cell.source.strip() else "")
    if declared is not None and declared != cell.points:
        problems.append(f"{where}: points do not add up: the test says ({declared:g} points), its "
                        f"metadata gives {cell.points:g}; make them equal")
    return problems


def _validate_headings(nb: SourceNotebook) -> list:
    """A part heading "## Part 2 ... (3 + 4 points)" must equal the points of the graded cells
    up to the next heading that states points."""
    problems, current, heading = [], None, None

    def close():
        if heading is not None and current != heading[1]:
            problems.append(f"{nb.path} [{heading[0]}]: points do not add up: the heading says "
                            f"({heading[1]:g} points), the graded cells below it give {current:g}; "
                            "fix the heading or the cells' points")

    for cell in nb.cells:
        if cell.cell_type == "markdown" and not cell.grade:
            first = next((l for l in cell.source.splitlines() if l.lstrip().startswith("#")), "")
            declared = _declared_points(first)
            if declared is not None:
                close()
                heading, current = (cell.grade_id or f"cell {cell.index}", declared), 0.0
                continue
        if cell.grade and heading is not None:
            current += cell.points
    close()
    return problems


def load_assignments(solutions: Path, known=None) -> dict:
    """``{assignment: [SourceNotebook, ...]}`` for every ``solutions/<assignment>/*.ipynb``; each
    notebook carries its ``problems`` and ``warnings`` (see :func:`problems`) and the settings of
    the course's ``nbgrader_config.py`` beside ``solutions/`` (one it cannot honour is a problem
    of every notebook, :mod:`~ste_course.authoring.nbconfig`)."""
    from ste_course.authoring.nbconfig import NbgraderConfigError, NbgraderSettings, load

    solutions = Path(solutions)
    if not solutions.is_dir():
        raise SourceError(f"no solutions folder at {solutions}")
    try:
        settings, refused = load(solutions.resolve().parent), None
    except NbgraderConfigError as err:
        settings, refused = NbgraderSettings(), str(err)
    out = {}
    for folder in sorted(p for p in solutions.iterdir() if p.is_dir() and not p.name.startswith(".")):
        notebooks = [load_notebook(p, folder.name, known) for p in sorted(folder.glob("*.ipynb"))]
        for nb in notebooks:
            nb.settings = settings
            nb.problems += [refused] if refused else []
        if notebooks:
            out[folder.name] = notebooks
    return out


def problems(sources: dict, strict: bool = False) -> list:
    """Every notebook's problems, in order (with ``strict``, its warnings too)."""
    return [p for notebooks in sources.values() for nb in notebooks
            for p in nb.problems + (nb.warnings if strict else [])]


def warnings(sources: dict) -> list:
    """Every notebook's warnings (the course's conventions it breaks), in order."""
    return [w for notebooks in sources.values() for nb in notebooks for w in nb.warnings]
