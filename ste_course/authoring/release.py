"""``ste-course release``: generate ``exercises/`` from ``solutions/`` with nbgrader.

nbgrader's ``generate_assignment`` runs in a temporary course folder, so its gradebook and log
never land in the repository; the released notebooks are then copied into ``exercises/``.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ste_course.files import SHARED, SHARED_DIR, copy_tree

from ste_course.authoring.nbconfig import DEFAULT_CODE_STUB, NbgraderSettings

CODE_STUB = DEFAULT_CODE_STUB


class ReleaseError(RuntimeError):
    pass


def blank_solution(source: str, stub: str = CODE_STUB) -> str:
    """The source with each solution region (a line containing ``BEGIN SOLUTION`` up to one
    containing ``END SOLUTION``) replaced by ``stub``, indented like the ``BEGIN`` line (what
    nbgrader's ClearSolutions does); a source without a region is returned as it is."""
    out, inside = [], False
    for line in source.split("\n"):
        if "BEGIN SOLUTION" in line:
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + part for part in stub.split("\n")]
        elif "END SOLUTION" in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def released_source(cell, settings: NbgraderSettings | None = None) -> str:
    """What the student version holds in ``cell`` (a :class:`~ste_course.authoring.source.SourceCell`),
    as nbgrader's ClearSolutions and ClearHiddenTests write it: solution regions replaced by the
    code stub (the text stub in markdown), a solution cell without a region replaced whole by the
    stub, hidden-test regions removed."""
    from ste_course.authoring.source import strip_hidden

    settings = settings or NbgraderSettings()
    stub = settings.code_stub if cell.cell_type == "code" else settings.text_stub
    text = blank_solution(cell.source, stub)
    if cell.solution and "BEGIN SOLUTION" not in cell.source:
        text = stub
    return strip_hidden(text)


@contextlib.contextmanager
def nbgrader_env(path):
    """Run nbgrader in ``path`` (its gradebook and log land there) with this environment's
    ``bin`` on PATH (nbgrader runs ``alembic`` by name)."""
    old_cwd, old_path = os.getcwd(), os.environ.get("PATH", "")
    os.chdir(path)
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old_path])
    try:
        yield
    finally:
        os.chdir(old_cwd)
        os.environ["PATH"] = old_path


def generate(solutions: Path, dest: Path, settings: NbgraderSettings | None = None) -> list:
    """Release every assignment in ``solutions`` into ``dest`` with ``settings``' stubs (a
    course's ``nbgrader_config.py``, :mod:`~ste_course.authoring.nbconfig`); returns the assignments."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    solutions, dest = Path(solutions).resolve(), Path(dest).resolve()
    assignments = sorted(p.name for p in solutions.iterdir()
                         if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.ipynb")))
    if not assignments:
        raise ReleaseError(f"no assignments (folders with notebooks) in {solutions}")
    with tempfile.TemporaryDirectory(prefix="ste-release-") as tmp:
        tmp = Path(tmp)
        for name in assignments:
            shutil.copytree(solutions / name, tmp / "source" / name,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        config = Config()
        config.CourseDirectory.root = str(tmp)
        config.CourseDirectory.db_url = f"sqlite:///{tmp / 'gradebook.db'}"
        settings = settings or NbgraderSettings()
        config.ClearSolutions.code_stub = {"python": settings.code_stub}
        config.ClearSolutions.text_stub = settings.text_stub
        config.Exchange.root = str(tmp / "exchange")
        with nbgrader_env(tmp):
            api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
            for name in assignments:
                result = api.generate_assignment(name, force=True)
                if not result.get("success"):
                    detail = result.get("log") or result.get("error")
                    raise ReleaseError(f"nbgrader could not release {name}:\n{detail}")
        dest.mkdir(parents=True, exist_ok=True)
        for name in assignments:  # each replaced whole, as every user of the checkout reads it
            copy_tree(tmp / "release" / name, dest / name, SHARED_DIR, SHARED)
    return assignments


def drift(solutions: Path, exercises: Path, settings: NbgraderSettings | None = None) -> list:
    """Differences between a fresh release and the committed ``exercises/`` (empty if in sync)."""
    with tempfile.TemporaryDirectory(prefix="ste-check-") as tmp:
        fresh = Path(tmp) / "exercises"
        generate(solutions, fresh, settings)
        problems = []
        committed = Path(exercises)
        if not committed.is_dir():
            return [f"{committed} does not exist; run `ste-course release`"]
        ours = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        theirs = {p.relative_to(committed) for p in committed.rglob("*")
                  if p.is_file() and ".ipynb_checkpoints" not in p.parts}
        for rel in sorted(ours - theirs):
            problems.append(f"exercises/{rel} is missing; run `ste-course release`")
        for rel in sorted(theirs - ours):
            problems.append(f"exercises/{rel} has no source in solutions/; remove it or add its source")
        for rel in sorted(ours & theirs):
            if not filecmp.cmp(fresh / rel, committed / rel, shallow=False):
                problems.append(f"exercises/{rel} differs from a fresh release of solutions/; "
                                "run `ste-course release` (never edit exercises/ by hand)")
        return problems
