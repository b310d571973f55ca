"""A synthetic class for grading tests and benchmarks, made from any instructor's source folder.

``make_class(source, dest, {"ada": "complete", "bo": "blank"})`` writes
``dest/<student>/<assignment>/<notebook>.ipynb`` for every notebook of ``source``:

* ``complete``: the source notebook as a student would hand in the model answer (hidden tests
  removed, solutions kept): full marks;
* ``blank``: the release (solutions replaced by nbgrader's stub): no marks;
* ``slow``: ``complete`` whose first answer cell also sleeps ``SLOW_SECONDS`` (full marks, but
  it keeps a worker busy long enough to be interrupted).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ste_course.authoring.release import blank_solution
from ste_course.authoring.source import strip_hidden

SLOW_SECONDS = 3.0
KINDS = ("complete", "blank", "slow")


def _text(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def submission(source_nb: dict, kind: str) -> dict:
    """The notebook a student of ``kind`` hands in."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    nb = copy.deepcopy(source_nb)
    slowed = False
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        text = _text(cell)
        if meta.get("grade") and cell["cell_type"] == "code":
            text = strip_hidden(text)
        if meta.get("solution") and cell["cell_type"] == "code":
            if kind == "blank":
                text = blank_solution(text)
            elif kind == "slow" and not slowed:
                text += f"\nimport time as _time\n_time.sleep({SLOW_SECONDS})\n"
                slowed = True
        cell["source"] = text
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def source_notebooks(source: Path) -> list:
    """``(assignment, path)`` of every notebook in the instructor's source folder."""
    return [(p.parent.name, p) for p in sorted(Path(source).glob("*/*.ipynb"))]


def make_class(source: Path, dest: Path, plan: dict) -> int:
    """Write the class ``plan`` (student -> kind) into ``dest``; returns the notebook count."""
    count = 0
    for assignment, path in source_notebooks(source):
        source_nb = json.loads(path.read_text(encoding="utf-8"))
        for student, kind in plan.items():
            target = Path(dest) / student / assignment / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(submission(source_nb, kind), indent=1), encoding="utf-8")
            count += 1
    return count
