"""Small pieces shared by the spec modules: turning students' return values into arrays, and
comparisons that add a hint to the standard elementwise messages.

Which side runs what: :func:`fresh`, :func:`tensors`, :func:`to_array` and :func:`keyed` serve a
spec's ``run``, which executes in the student's kernel (when grading, in the sandbox, where
forbidden ``ste_utils`` functions are tripwires), so nothing here calls ``ste_utils``; the
comparisons and hints (:func:`compare_with_hint`, :func:`scale_hint`, ...) run wherever the
verdict is made: the grader, or the student's own kernel.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from ste_course.evidence import encode_array
from ste_course.specs import base


def fresh(case: dict, *names: str) -> list:
    """Copies of the arrays ``case[name]``: a student's code may modify its inputs in place."""
    return [np.array(case[n], copy=True) for n in names]


def tensors(case: dict, *names: str) -> list:
    """``tf.constant`` of each ``case[name]`` (TensorFlow imported lazily)."""
    import tensorflow as tf

    return [tf.constant(case[n]) for n in names]


def to_array(value, what: str) -> np.ndarray:
    """``value`` (a tensor, array, number or nested list) as a NumPy array, or a clear error."""
    if value is None:
        raise TypeError(f"{what} is None; return an array (convert a None gradient with tf.zeros_like)")
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.kind == "O":
        raise TypeError(f"{what} must be an array of numbers; got {type(value).__name__}")
    return array


def keyed(result, keys: tuple, what: str) -> dict:
    """``{key: array}`` from a dict returned by the student, naming missing keys."""
    if not isinstance(result, dict):
        raise TypeError(f"{what} must return a dict with keys {', '.join(map(repr, keys))}; "
                        f"it returned {type(result).__name__}")
    missing = [k for k in keys if k not in result]
    if missing:
        raise KeyError(f"{what} returned a dict without {', '.join(map(repr, missing))} "
                       f"(its keys: {', '.join(map(repr, result))})")
    return {k: to_array(result[k], f"{what}[{k!r}]") for k in keys}


def distinct(expected: float, got: float) -> tuple:
    """``expected`` and ``got`` as strings with enough digits to tell them apart."""
    for digits in (6, 9, 12, 17):
        e, g = f"{expected:.{digits}g}", f"{got:.{digits}g}"
        if e != g or expected == got:
            break
    return e, g


def precision_note(expected: float, got: float) -> str:
    """A sentence when two numbers differ only in their last digits (a precision problem)."""
    if expected != got and np.isfinite(expected) and np.isfinite(got) \
            and abs(expected - got) <= 1e-3 * max(1.0, abs(expected)):
        return (" Only the last digits differ: compute in the input's dtype, without casting to "
                "another precision and back.")
    return ""


def compare_with_hint(spec_name: str, hint: Callable) -> Callable:
    """A ``Spec.compare``: the standard comparison of :func:`ste_course.specs.base.compare`, plus
    ``hint(case, output, expected, got) -> str | None`` for each output that differs, where
    ``expected`` and ``got`` are float64 arrays (possibly of different shapes)."""

    def _compare(case, expected, got):
        spec = dataclasses.replace(base.get_spec(spec_name), compare=None)
        evidence = {"outputs": {k: encode_array(values, dtype) for k, (values, dtype) in got.items()}}
        messages = []
        for output, exp in expected.items():  # one output at a time, each followed by its hint
            found = base.compare(spec, case, {output: exp}, evidence)
            messages += found
            if found and output in got:
                extra = hint(case, output, np.asarray(exp).astype(np.float64), got[output][0])
                if extra:
                    messages.append(extra)
        return messages

    return _compare


def scale_hint(expected: np.ndarray, got: np.ndarray, output: str) -> Optional[str]:
    """A sentence when ``got`` is ``expected`` times one constant (a missing factor, a sign)."""
    if expected.shape != got.shape:
        return None
    mask = np.abs(expected) > 1e-9
    if not mask.any() or np.any(np.abs(got[~mask]) > 1e-9):
        return None
    ratio = got[mask] / expected[mask]
    if not np.allclose(ratio, ratio[0], rtol=1e-4, atol=0) or np.isclose(ratio[0], 1.0):
        return None
    if np.isclose(ratio[0], -1.0):
        return f"Hint: your {output} has the right size but the opposite sign everywhere."
    if np.isclose(ratio[0], 0.0):
        return f"Hint: your {output} is zero everywhere."
    return (f"Hint: your {output} is {ratio[0]:.4g} times the right one everywhere: "
            "look for a missing or extra constant factor.")


def transpose_hint(expected: np.ndarray, got: np.ndarray, output: str) -> Optional[str]:
    """A sentence when ``got`` is the transpose of ``expected``."""
    if got.ndim == 2 and expected.ndim == 2 and got.shape == expected.shape[::-1] \
            and got.shape != expected.shape and np.allclose(got.T, expected, rtol=1e-6, atol=1e-9):
        return (f"Hint: your {output} is the transpose of the right one; a gradient has the "
                "shape of the variable it belongs to.")
    return None


__all__ = ["distinct", "precision_note", "fresh", "tensors", "to_array", "keyed", "compare_with_hint", "scale_hint",
           "transpose_hint"]
