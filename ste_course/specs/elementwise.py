"""Specs for elementwise functions with a straight-through gradient (values and gradients).

:func:`elementwise_specs` registers two specs per function, ``<name>/value`` and
``<name>/gradient``, so the forward pass and the backward pass earn separate points (a plain
``tf.round`` passes the first and fails the second).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ste_course.checks import Spec, register

HIDDEN_DTYPES = ("float16", "float32", "float64")
HIDDEN_SHAPES = ((9,), (3, 4), (2, 3, 2))


def _fill(rng, base: np.ndarray, shape, scale: float) -> np.ndarray:
    """``base`` points first (boundaries), then Gaussian values, reshaped to ``shape``."""
    size = int(np.prod(shape))
    extra = rng.normal(0.0, scale, size=max(size - base.size, 0))
    values = np.concatenate([rng.permutation(base)[:size], extra])
    return values.reshape(shape)


def make_cases(boundary: Callable[[dict], list], params_choices: list, scale: float = 2.0,
               visible_params: Optional[dict] = None):
    """A ``cases(rng, hidden)`` function for an elementwise spec.

    Visible: one float32 vector of the boundary points (and their neighbours) with upstream 1.
    Hidden: one case per dtype and shape, with parameters drawn from ``params_choices``, the
    boundary points, their float neighbours and random values; upstream gradients random in
    [0.5, 1.5] for half of them, so the product with the upstream gradient is tested too.
    """
    visible_params = visible_params if visible_params is not None else params_choices[0]

    def cases(rng, hidden):
        if not hidden:
            x = np.array(sorted(set(boundary(visible_params))), dtype=np.float32)
            return [{"x": x, "upstream": np.ones_like(x), **visible_params}]
        out = []
        for i, (dtype, shape) in enumerate([(d, s) for d in HIDDEN_DTYPES for s in HIDDEN_SHAPES]):
            params = params_choices[int(rng.integers(len(params_choices)))]
            points = np.array(boundary(params), dtype=np.float64).astype(dtype)
            near = np.concatenate([np.nextafter(points, np.array(np.inf, dtype)),
                                   np.nextafter(points, np.array(-np.inf, dtype))])
            x = _fill(rng, np.concatenate([points, near]).astype(np.float64), shape, scale).astype(dtype)
            upstream = (rng.uniform(0.5, 1.5, size=shape) if i % 2 else np.ones(shape)).astype(dtype)
            out.append({"x": x, "upstream": upstream, **params})
        return out

    return cases


def _run_value(fn, case):
    import tensorflow as tf

    params = {k: v for k, v in case.items() if k not in ("x", "upstream")}
    return {"value": fn(tf.constant(case["x"]), **params)}


def _run_gradient(fn, case):
    import tensorflow as tf

    params = {k: v for k, v in case.items() if k not in ("x", "upstream")}
    x = tf.constant(case["x"])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x, **params)
    grad = tape.gradient(y, x, output_gradients=tf.constant(case["upstream"]))
    return {"gradient": tf.zeros_like(x) if grad is None else grad}


def _describe(case) -> str:
    x = np.asarray(case["x"])
    params = ", ".join(f"{k}={v}" for k, v in case.items() if k not in ("x", "upstream"))
    return f"x of dtype {x.dtype.name} and shape {x.shape}" + (f" ({params})" if params else "")


def elementwise_specs(name: str, reference: Callable, boundary: Callable[[dict], list],
                      params_choices: list, why_value: Callable, why_gradient: Callable,
                      label: str, scale: float = 2.0):
    """Register ``<name>/value`` and ``<name>/gradient``.

    Args:
        name: spec base name, e.g. ``"ste_sign"``.
        reference: ``reference(x_tensor, **params)``, an ``ste_utils`` function.
        boundary: ``boundary(params) -> list of points`` where bugs live.
        params_choices: list of keyword-argument dicts the function is called with.
        why_value / why_gradient: ``why(x, params) -> str``: the rule at ``x``, used as
            "... should be 0 because <why>; yours is 1".
        label: how to call the student's function in messages, e.g. ``"your ste_sign"``.
    """
    cases = make_cases(boundary, params_choices, scale)

    def ref_value(case):
        return _run_value(reference, case)

    def ref_gradient(case):
        return _run_gradient(reference, case)

    def explain(what, why):
        def _explain(case, output, index, expected, got):
            x = float(np.asarray(case["x"]).ravel()[index])
            params = {k: v for k, v in case.items() if k not in ("x", "upstream")}
            up = float(np.asarray(case["upstream"]).ravel()[index])
            at = f"x = {x:.6g}" + (f" with upstream gradient {up:.4g}" if output == "gradient" and up != 1 else "")
            dtype = np.asarray(case["x"]).dtype.name
            return (f"The {what} of {label} at {at} ({dtype}) should be {expected:.6g} because "
                    f"{why(x, params)}; yours is {got:.6g}.")
        return _explain

    register(Spec(name=f"{name}/value", summary=f"forward values of {label}", cases=cases,
                  run=_run_value, reference=ref_value, describe=_describe,
                  explain=explain("value", why_value)))
    register(Spec(name=f"{name}/gradient", summary=f"gradients of {label}", cases=cases,
                  run=_run_gradient, reference=ref_gradient, describe=_describe,
                  explain=explain("gradient", why_gradient)))


# ----------------------------------------------------------------------------- ste_sign
def _sign_reference(x, clip_value=1.0):
    import ste_utils

    return ste_utils.ste_sign(x, clip_value=clip_value)


def _sign_why_value(x, params):
    return "x >= 0 maps to +1 (0 included, unlike tf.sign)" if x >= 0 else "x < 0 maps to -1"


def _sign_why_gradient(x, params):
    c = params.get("clip_value", 1.0)
    if abs(x) <= c:
        return f"it lies inside the clip window |x| <= {c:g} (boundary included), so the upstream gradient passes"
    return f"it lies outside the clip window |x| <= {c:g}"


elementwise_specs(
    "ste_sign", _sign_reference,
    boundary=lambda p: [0.0, p["clip_value"], -p["clip_value"], 0.5 * p["clip_value"], -1.5 * p["clip_value"], 3.0],
    params_choices=[{"clip_value": 1.0}, {"clip_value": 0.5}, {"clip_value": 2.0}],
    why_value=_sign_why_value, why_gradient=_sign_why_gradient, label="your ste_sign",
)
