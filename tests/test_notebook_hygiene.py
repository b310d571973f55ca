"""What is committed is clean: notebooks without outputs, and no junk tracked.

Run on the files git tracks (``git ls-files``), as they are on disk. To clear a notebook:
``jupyter nbconvert --clear-output --inplace <notebook>``.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path, PurePosixPath

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_FOLDERS = ("course", "solutions", "exercises")
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# any path component matching one of these is junk
JUNK = (".ipynb_checkpoints", "__pycache__", "*.pyc", "gradebook.db", "gradebook.db-*", "*.log",
        "Untitled*", ".DS_Store", ".pytest_cache", ".hypothesis")


def tracked() -> list[PurePosixPath]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"cannot list the tracked files with git in {ROOT}: {exc}", pytrace=False)
    return [PurePosixPath(p) for p in out.decode().split("\0") if p]


def tracked_notebooks() -> list[str]:
    try:
        files = tracked()
    except BaseException:  # reported by test_no_junk_is_tracked
        return []
    return [str(p) for p in files
            if p.suffix == ".ipynb" and p.parts[0] in NOTEBOOK_FOLDERS and (ROOT / p).exists()]


NOTEBOOKS = tracked_notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS or [None], ids=NOTEBOOKS or ["no-notebooks"])
def test_notebook_is_stored_clean(path):
    if path is None:
        pytest.fail(f"no tracked notebooks under {', '.join(NOTEBOOK_FOLDERS)}/", pytrace=False)
    text = (ROOT / path).read_text(encoding="utf-8")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{path} is not valid JSON: {exc}", pytrace=False)
    nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert raw["metadata"].get("kernelspec") == KERNELSPEC, (
        f"{path}: kernelspec {raw['metadata'].get('kernelspec')}, expected {KERNELSPEC}")
    dirty = [f"cell {i}: {len(cell['outputs'])} outputs, execution_count {cell['execution_count']}"
             for i, cell in enumerate(raw["cells"]) if cell["cell_type"] == "code"
             and (cell["outputs"] or cell["execution_count"] is not None)]
    assert not dirty, (f"{path} is stored with outputs ({'; '.join(dirty)}); clear them with "
                       f"`jupyter nbconvert --clear-output --inplace {path}`")


def test_no_junk_is_tracked():
    junk = [str(p) for p in tracked()
            if any(fnmatch.fnmatch(part, pattern) for part in p.parts for pattern in JUNK)]
    assert not junk, f"tracked files that do not belong in the repository: {junk}"
