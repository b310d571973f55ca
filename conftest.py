"""Repository-wide pytest configuration.

Notebooks are collected (by nbval, ``--nbval-lax``) only under ``course/``: solution notebooks
run through ``ste-course check``, and test or example submissions, which may be hostile, only
ever run through the sandboxed grader.
"""

from pathlib import Path

ROOT = Path(__file__).parent.resolve()
NOTEBOOK_ROOTS = (ROOT / "course",)


def pytest_ignore_collect(collection_path, config):
    path = Path(collection_path)
    if path.suffix == ".ipynb":
        return not any(root in path.resolve().parents for root in NOTEBOOK_ROOTS)
    return None
