"""The oracles of the NumPy references (``tests/test_numpy_references.py``), one module per spec
module: ``ORACLES = {spec name: make}``, where ``make()`` returns the object a student would
hand to ``check`` for that spec, built from ``ste_utils`` (the checked implementation, in
TensorFlow). A spec whose ``tensorflow_reference`` is false must give that object full marks on
its NumPy reference, case for case and seed for seed.
"""

from __future__ import annotations

import importlib
import pkgutil


def all_oracles() -> dict:
    """``{spec name: make}`` from every module of this package (a name twice is an error)."""
    found: dict = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, make in module.ORACLES.items():
            if name in found:
                raise ValueError(f"spec {name!r} has two oracles (the second in {info.name})")
            found[name] = make
    return found
