"""``ste-course check``: the source is valid, the release is in sync and every notebook behaves.

0. Every graded cell of ``solutions/`` is valid (:func:`ste_course.authoring.source.load_notebook`): a
   notebook with problems is reported, one line each, and not run; the course's conventions
   (:func:`ste_course.authoring.source.validate`) are warnings, problems with ``--strict``.
1. A fresh release of ``solutions/`` equals the committed ``exercises/``.
2. Every solution notebook runs with no error in any cell (so every automatic test passes: full
   points; written answers are graded by hand, never run, and are not automatic points).
3. Every released notebook runs with errors only where a student has work to do: unfinished
   solution cells (``NotImplementedError``) and the tests that depend on them; no test passes.
4. No sibling gives a part's answer: in each solution's kernel, after its last cell, every
   public ``ste_utils`` function a check part does not forbid (:func:`ste_course.authoring.derive.part_forbid`)
   is wrapped as a student would (``h = f(x, c); return h + tf.stop_gradient(solution(x, c) - h)``,
   and the converse) and graded on the part's probe inputs; one that scores is a problem.

Notebooks run through the same fork server as grading (trusted code, so without a sandbox).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from ste_course.authoring.release import drift
from ste_course.authoring.source import load_assignments, load_notebook
from ste_course.authoring.source import problems as source_problems
from ste_course.authoring.source import warnings as source_warnings
from ste_course.sandbox import Limits, Worker
from ste_course.authoring.derive import asks_own, crashed, derive_all, part_forbid

ALLOWED_IN_RELEASE = ("NotImplementedError", "AssertionError", "CheckFailed", "NameError")
PROOF_CELL = 1_000_000  # the index of the forbid proof's cell, after a solution's own cells


def _cells(nb_path: Path, assignment: str):
    nb = load_notebook(nb_path, assignment)
    return nb, [{"index": c.index, "source": c.source, "locked": False} for c in nb.cells
                if c.cell_type == "code"]


def run_checks(solutions: Path, exercises: Path, log=print, strict: bool = False) -> list:
    """Every problem of the course, one line each (with ``strict``, the source's warnings too;
    without, they are logged)."""
    sources = load_assignments(solutions)
    problems = source_problems(sources, strict)
    if problems:  # an invalid source cannot be released, so there is no drift to compare
        return problems
    for warning in [] if strict else source_warnings(sources):
        log(f"warning: {warning}")
    settings = next((nb.settings for nbs in sources.values() for nb in nbs), None)
    problems += [f"drift: {p}" for p in drift(solutions, exercises, settings)]
    derive_all(c for nbs in sources.values() for nb in nbs for c in nb.grade_cells)  # one child, cached
    worker = Worker(0, sandbox=False, limits=Limits(cell_seconds=120, notebook_seconds=600))
    try:
        for assignment, notebooks in sources.items():
            for nb in notebooks:
                for kind, path in (("solution", nb.path), ("release", Path(exercises) / assignment / nb.path.name)):
                    if not path.exists():
                        continue  # reported by the drift check
                    problems += _run_one(worker, kind, path, assignment, log)
    finally:
        worker.stop()
    return problems


def forbid_parts(nb) -> list:
    """``[grade_id, spec, object expression, labels not to wrap]`` per check call of ``nb``'s
    check cells (labels: what the part forbids and what crashed while deriving it)."""
    parts = []
    for cell in nb.grade_cells:
        if not cell.checks or not asks_own(cell):  # a part that may use the library proves nothing
            continue
        forbid = part_forbid(cell)
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check" and len(node.args) >= 2 \
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                spec = node.args[1].value
                parts.append([cell.grade_id, spec, ast.unparse(node.args[0]), forbid + list(crashed(spec))])
    return [list(p) for p in {json.dumps(p): p for p in parts}.values()]


def _proof_cell(nb) -> dict:
    """The cell that runs :func:`~ste_course.authoring.derive.prove_forbidden` in the solution's kernel
    and prints what it finds."""
    parts = json.dumps(json.dumps(forbid_parts(nb)))
    return {"index": PROOF_CELL, "locked": False, "source": (
        "from ste_course.authoring.derive import prove_forbidden as _prove_forbidden\n"
        f"print('\\n'.join(_prove_forbidden(globals(), __import__('json').loads({parts}))))")}


def _run_one(worker, kind, path, assignment, log):
    nb, cells = _cells(path, assignment)
    proof = kind == "solution" and any(c.checks for c in nb.grade_cells)
    if proof:
        cells.append(_proof_cell(nb))
    result = worker.run({"id": str(path), "cells": cells, "calls": {}, "seed": 0})
    ends = {e["cell"]: e for e in result["events"] if e.get("event") == "end"}
    problems = []
    if result.get("status"):
        problems.append(f"{path}: {result['status']}: {result.get('reason')}")
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        where = f"{path} cell {cell.index}" + (f" ({cell.grade_id})" if cell.grade_id else "")
        end = ends.get(cell.index)
        if end is None:
            problems.append(f"{where}: did not run")
            continue
        error = end.get("error")
        if kind == "solution" and error:
            problems.append(f"{where}: {error}")
        if kind == "release":
            if error and error.split(":", 1)[0].rsplit(".", 1)[-1] not in ALLOWED_IN_RELEASE:
                problems.append(f"{where}: unexpected error in the student version: {error}")
            if cell.grade and not error:
                problems.append(f"{where}: this test passes in the blank student version (points for nothing)")
            if error and not (cell.grade or cell.solution):
                problems.append(f"{where}: a locked cell fails in the student version: {error}")
    if proof:
        end = ends.get(PROOF_CELL)
        if end is None or end.get("error"):
            problems.append(f"{path}: the forbid proof did not finish: {(end or {}).get('error')}")
        else:
            problems += [f"{path} {line}" for line in str(end.get("stdout") or "").splitlines() if line.strip()]
    log(f"{'ok  ' if not problems else 'FAIL'} {kind:8s} {path} ({result.get('seconds')} s)")
    return problems
