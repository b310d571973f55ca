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


import os  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _umask_kept():
    """Each test starts with the umask the session started with. ``ste-course``'s ``main`` adds
    027 to its process's umask (files.private_umask); a test that calls ``main`` in-process must
    not leave it for later tests, which then make folders students cannot enter (the hub's
    read check found nothing to refuse only in a full run)."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)
