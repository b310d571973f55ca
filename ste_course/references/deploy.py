"""Assignment 09's references: ``ste_utils.integer`` itself (pure NumPy, TFLite's int8 arithmetic),
loaded without TensorFlow (:func:`ste_course.references.ste_utils_module`)."""

from __future__ import annotations

import numpy as np

from ste_course.references import ste_utils_module


def multiplier(case) -> dict:
    """``quantize_multiplier(r)`` for each ``r`` of ``case["real"]``: mantissa and shift, int64."""
    integer = ste_utils_module("integer")
    pairs = [integer.quantize_multiplier(float(r)) for r in case["real"]]
    return {"multiplier": np.array([p[0] for p in pairs], np.int64),
            "shift": np.array([p[1] for p in pairs], np.int64)}


def requantize(case) -> dict:
    """``requantize(acc, multiplier, shift, zero_point)``: int32 accumulators to int8."""
    integer = ste_utils_module("integer")
    return {"output": integer.requantize(case["acc"], case["multiplier"], case["shift"], case["zero_point"])}


def dense(case) -> dict:
    """``int8_dense(x, x_zero_point, weights, bias, multiplier, shift, out_zero_point)``."""
    integer = ste_utils_module("integer")
    return {"output": integer.int8_dense(case["x"], case["x_zero_point"], case["weights"], case["bias"],
                                         case["multiplier"], case["shift"], case["out_zero_point"])}
