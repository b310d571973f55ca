"""Specs for assignment 04 (``tf.stop_gradient``).

``stop_gradient/straight_through``
    ``straight_through(x, result)``: forward value ``result``, gradient passed to ``x``
    unchanged and none to ``result``: out = x + sg(result - x). Judged on the value and on
    the gradients with respect to both inputs for an upstream gradient, against
    ``ste_utils.straight_through`` (computed in NumPy by
    :func:`ste_course.references.stop_gradient.straight_through`). Inputs stay moderate
    (|x| < 10), far from the cancellation of x + (result - x) for huge |x|.

The k-bit quantizer of the same assignment (``quantize_ste/value`` and ``/gradient``) is an
elementwise spec in :mod:`ste_course.specs.elementwise`.
"""

from __future__ import annotations

import numpy as np

from ste_course.specs.base import NumpyReference, Spec, register
from ste_course.specs.common import distinct, precision_note, tensors, to_array
from ste_course.specs.elementwise import HIDDEN_DTYPES, HIDDEN_SHAPES

OUTPUTS = ("value", "dL/dx", "dL/dresult")


def _cases(rng, hidden):
    if not hidden:
        x = np.array([-1.7, -0.4, 0.0, 0.6, 2.3], np.float32)
        return [{"x": x, "result": np.round(x), "upstream": np.ones_like(x)},
                {"x": x, "result": np.array([5.0, -3.0, 1.0, 0.25, -2.0], np.float32),
                 "upstream": np.array([2.0, -1.0, 0.5, 3.0, 1.0], np.float32)}]
    out = []
    for i, (dtype, shape) in enumerate([(d, s) for d in HIDDEN_DTYPES for s in HIDDEN_SHAPES]):
        x = rng.uniform(-4.0, 4.0, shape)
        # result: a quantized x for some cases, unrelated values for the others.
        result = np.round(x) if i % 2 else rng.uniform(-3.0, 3.0, shape)
        out.append({"x": x.astype(dtype), "result": result.astype(dtype),
                    "upstream": rng.uniform(-2.0, 2.0, shape).astype(dtype)})
    return out


def _gradients(fn, case):
    import tensorflow as tf

    x, result, upstream = tensors(case, "x", "result", "upstream")
    with tf.GradientTape() as tape:
        tape.watch([x, result])
        out = fn(x, result)
    if out is None:
        raise TypeError("straight_through returned None")
    d_x, d_result = tape.gradient(out, [x, result], output_gradients=upstream,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return {"value": to_array(out, "straight_through(x, result)"), "dL/dx": d_x, "dL/dresult": d_result}


def _describe(case):
    x = np.asarray(case["x"])
    return f"x and result of dtype {x.dtype.name} and shape {x.shape}"


RULES = {
    "value": "the forward value is result itself",
    "dL/dx": "the upstream gradient passes to x unchanged (d out / d x = I)",
    "dL/dresult": "result only appears inside stop_gradient, so no gradient reaches it",
}


def _explain(case, output, index, expected, got):
    x, r, g = (float(np.asarray(case[k]).ravel()[index]) for k in ("x", "result", "upstream"))
    at = f"x = {x:.6g}, result = {r:.6g}" + (f", upstream gradient {g:.6g}" if output != "value" else "")
    e, y = distinct(expected, got)
    return (f"On {_describe(case)}, at {at}, {output} should be {e} because {RULES[output]}; "
            f"yours is {y}.{precision_note(expected, got)}")


register(Spec(name="stop_gradient/straight_through",
              summary="the value and gradients of your straight_through", cases=_cases,
              run=_gradients, reference=NumpyReference("stop_gradient", "straight_through"),
              describe=_describe, explain=_explain))
