"""Code that lives in ``/tmp`` stays importable inside a sealed notebook.

Each notebook gets a private tmpfs on ``/tmp`` (:func:`ste_course.inside.server._seal`). A
checkout or a virtual environment may itself live in ``/tmp`` (a CI clone made with
``mktemp -d``): before the fix, every notebook of such a checkout ended with
``ModuleNotFoundError: No module named 'ste_course.inside.harness'`` and ``ste-course check``
failed on every notebook. Here the module is put on ``PYTHONPATH`` in pytest's ``tmp_path``
(under ``/tmp``), which the unsandboxed server (``ste-course check``'s) inherits.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ste_course.sandbox import Limits, Worker


def test_a_module_under_tmp_is_importable_in_a_notebook(tmp_path, monkeypatch):
    assert Path(tempfile.gettempdir()).resolve() in tmp_path.resolve().parents  # the case under test
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "helper_in_tmp.py").write_text("ANSWER = 42\n")
    monkeypatch.setenv("PYTHONPATH", str(mods))
    marker = tempfile.NamedTemporaryFile(prefix="host-tmp-marker-")  # in the host's /tmp itself
    worker = Worker(0, sandbox=False, limits=Limits())
    try:
        cell = f"import helper_in_tmp, os\nprint(helper_in_tmp.ANSWER, os.path.exists({marker.name!r}))"
        result = worker.run({"id": "tmp", "cells": [{"index": 0, "source": cell, "locked": False}],
                             "calls": {}, "seed": 0})
    finally:
        worker.stop()
        marker.close()
    end = [e for e in result["events"] if e.get("event") == "end"]
    assert end and end[0]["error"] is None, result["events"]
    # the module is found, and the rest of the host's /tmp stays hidden behind the notebook's tmpfs
    assert end[0]["stdout"].split() == ["42", "False"], end[0]
