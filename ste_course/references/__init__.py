"""The references of the built-in specs, in NumPy: the grader's side only.

A spec whose ``reference`` is a :class:`ste_course.specs.base.NumpyReference` names a function
here, ``f(case) -> {output: np.ndarray}``, that computes what the checked implementation
(``ste_utils``, in TensorFlow) gives on that case, with NumPy alone: in float64 where the result
is then exact in the case's dtype, else in the case's dtype, step for step as TensorFlow's
kernels compute it. So a judge imports no TensorFlow (issue 26: about 5 s of CPU per judge
process, and a core's worth of contention with the notebook's own import).

Two rules, checked by ``tests/test_numpy_references.py``:

* nothing here imports TensorFlow or Keras (NumPy, the standard library and
  :func:`ste_utils_module` for a NumPy-only module of ``ste_utils``);
* every reference agrees with ``ste_utils``: the object a student would write with ``ste_utils``
  gets full marks against it on drawn cases of many seeds (``tests/numpy_oracles``).

The sandbox hides this folder (``ste_course.sandbox.bwrap_command`` mounts an empty read-only
tmpfs on it): the answers are not there for a student's code to call or read.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

NUMPY_ONLY = ("integer",)  # the modules of ste_utils that import nothing but NumPy and the standard library


def ste_utils_module(name: str):
    """``ste_utils.<name>`` for a NumPy-only module (:data:`NUMPY_ONLY`), loaded from its file
    without the package's ``__init__`` (which imports TensorFlow) unless ``ste_utils`` is
    already imported: one source, the library's."""
    if name not in NUMPY_ONLY:
        raise ValueError(f"ste_utils.{name} is not a NumPy-only module; got {name!r} (known: {NUMPY_ONLY})")
    full = f"ste_utils.{name}"
    if full in sys.modules:
        return sys.modules[full]
    alias = f"{__name__}._ste_utils_{name}"
    if alias not in sys.modules:
        package = Path(importlib.util.find_spec("ste_utils").origin).parent  # found, not imported
        spec = importlib.util.spec_from_file_location(alias, package / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[alias] = module
        spec.loader.exec_module(module)
    return sys.modules[alias]
