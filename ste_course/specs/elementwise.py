"""Specs for elementwise functions with a straight-through gradient (values and gradients).

:func:`elementwise_specs` registers two specs per function, ``<name>/value`` and
``<name>/gradient``, so the forward pass and the backward pass earn separate points (a plain
``tf.round`` passes the first and fails the second).

Which side runs what: ``cases`` and the references (NumPy, in
:mod:`ste_course.references.elementwise`) run in the grader and in the student's own kernel,
never in the sandbox while grading; ``_run_value`` and ``_run_gradient`` (the specs' ``run``)
run the student's code in whichever kernel checks it.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ste_course.specs.base import NumpyReference, Spec, register
from ste_course.specs.common import distinct, precision_note

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
            near = normal_neighbours(points)
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


def elementwise_specs(name: str, reference: str, boundary: Callable[[dict], list],
                      params_choices: list, why_value: Callable, why_gradient: Callable,
                      label: str, scale: float = 2.0, cases: Optional[Callable] = None):
    """Register ``<name>/value`` and ``<name>/gradient``.

    Args:
        name: spec base name, e.g. ``"ste_sign"``.
        reference: the NumPy references' common name: ``<reference>_value`` and
            ``<reference>_gradient`` in :mod:`ste_course.references.elementwise`.
        boundary: ``boundary(params) -> list of points`` where bugs live.
        params_choices: list of keyword-argument dicts the function is called with.
        why_value / why_gradient: ``why(x, params) -> str``: the rule at ``x``, used as
            "... should be 0 because <why>; yours is 1".
        label: how to call the student's function in messages, e.g. ``"your ste_sign"``.
        cases: a ``cases(rng, hidden)`` function replacing ``make_cases(boundary,
            params_choices, scale)`` (e.g. :func:`make_cycling_cases`).
    """
    cases = cases or make_cases(boundary, params_choices, scale)

    def explain(what, why):
        def _explain(case, output, index, expected, got):
            x = float(np.asarray(case["x"]).ravel()[index])
            params = {k: v for k, v in case.items() if k not in ("x", "upstream")}
            up = float(np.asarray(case["upstream"]).ravel()[index])
            at = f"x = {x:.6g}" + (f" with upstream gradient {up:.4g}" if output == "gradient" and up != 1 else "")
            dtype = np.asarray(case["x"]).dtype.name
            e, g = distinct(expected, got)
            return (f"The {what} of {label} at {at} ({dtype}) should be {e} because "
                    f"{why(x, params)}; yours is {g}.{precision_note(expected, got)}")
        return _explain

    register(Spec(name=f"{name}/value", summary=f"forward values of {label}", cases=cases,
                  run=_run_value, reference=NumpyReference("elementwise", f"{reference}_value"),
                  describe=_describe, explain=explain("value", why_value)))
    register(Spec(name=f"{name}/gradient", summary=f"gradients of {label}", cases=cases,
                  run=_run_gradient, reference=NumpyReference("elementwise", f"{reference}_gradient"),
                  describe=_describe, explain=explain("gradient", why_gradient)))


# ----------------------------------------------------------------------------- ste_sign
def _sign_why_value(x, params):
    return "x >= 0 maps to +1 (0 included, unlike tf.sign)" if x >= 0 else "x < 0 maps to -1"


def _sign_why_gradient(x, params):
    c = params.get("clip_value", 1.0)
    if abs(x) <= c:
        return f"it lies inside the clip window |x| <= {c:g} (boundary included), so the upstream gradient passes"
    return f"it lies outside the clip window |x| <= {c:g}"


elementwise_specs(
    "ste_sign", "ste_sign",
    boundary=lambda p: [0.0, p["clip_value"], -p["clip_value"], 0.5 * p["clip_value"], -1.5 * p["clip_value"], 3.0],
    params_choices=[{"clip_value": 1.0}, {"clip_value": 0.5}, {"clip_value": 2.0}],
    why_value=_sign_why_value, why_gradient=_sign_why_gradient, label="your ste_sign",
)


# ============================================================================ more elementwise specs
def normal_neighbours(points: np.ndarray) -> np.ndarray:
    """The float neighbours of ``points`` on both sides, in their dtype, subnormals excluded.

    TensorFlow's CPU kernels flush subnormal numbers to zero, so at ``nextafter(0, 1)`` its
    ``x > 0`` is False while NumPy's (and the message's arithmetic) is True; the smallest
    normal number stands in for them.
    """
    dtype = points.dtype
    near = np.concatenate([np.nextafter(points, np.array(np.inf, dtype)),
                           np.nextafter(points, np.array(-np.inf, dtype))])
    tiny = np.finfo(dtype).tiny
    return np.where((near != 0) & (np.abs(near) < tiny), np.sign(near) * tiny, near).astype(dtype)


def make_cycling_cases(boundary: Callable[[dict], list], params_choices: list, scale: float = 2.0,
                       visible_params: Optional[list] = None,
                       sanitize: Optional[Callable[[np.ndarray, dict], np.ndarray]] = None):
    """Like :func:`make_cases`, but every parameter choice is exercised.

    Visible: one float32 case per entry of ``visible_params`` (default: the first choice) with
    upstream gradient 1, plus one more with the first parameters and upstream gradients other
    than 1 (so forgetting to multiply by the upstream gradient shows before grading).
    Hidden: one case per dtype and shape, the parameters cycling through ``params_choices``
    from a random start, so each choice appears. ``sanitize(x, params)`` may replace inputs
    whose reference value is ill-conditioned (e.g. near-ties that depend on the precision of
    an intermediate product).
    """
    visible_params = visible_params or params_choices[:1]
    fix = sanitize or (lambda x, params: x)

    def cases(rng, hidden):
        if not hidden:
            out = []
            for k, params in enumerate(list(visible_params) + [visible_params[0]]):
                x = fix(np.array(sorted(set(boundary(params))), dtype=np.float32), params)
                x = np.unique(x)  # sanitizing may have made duplicates
                if k < len(visible_params):
                    upstream = np.ones_like(x)
                else:
                    upstream = np.resize(np.array([2.0, 0.5, -1.0, 1.5], np.float32), x.shape)
                out.append({"x": x, "upstream": upstream, **params})
            return out
        out = []
        start = int(rng.integers(len(params_choices)))
        for i, (dtype, shape) in enumerate([(d, s) for d in HIDDEN_DTYPES for s in HIDDEN_SHAPES]):
            params = params_choices[(start + i) % len(params_choices)]
            points = np.array(boundary(params), dtype=np.float64).astype(dtype)
            near = normal_neighbours(points)
            x = _fill(rng, np.concatenate([points, near]).astype(np.float64), shape, scale).astype(dtype)
            x = fix(x, params)
            upstream = (rng.uniform(0.5, 1.5, size=shape) if i % 2 else np.ones(shape)).astype(dtype)
            out.append({"x": x, "upstream": upstream, **params})
        return out

    return cases


# ----------------------------------------------------------------------------- 03: ste_sign twice
def _sign_boundary(p):
    c = p["clip_value"]
    return [0.0, c, -c, 0.5 * c, -1.5 * c, 3.0]


# 0.7 and 1.3 are not float32 numbers: tf.cast(clip_value, x.dtype) rounds them through float32
# and leaves a float64 x = +-clip_value outside the window. The three float64 cases take three
# consecutive choices of this cycle, so one of the two always meets them.
_SIGN_CHOICES = [{"clip_value": 1.0}, {"clip_value": 0.7}, {"clip_value": 0.5}, {"clip_value": 1.3},
                 {"clip_value": 2.0}]


def _with_clip_edges(x: np.ndarray, params: dict) -> np.ndarray:
    """``x`` holding both edges +-clip_value (in its dtype): the boundary sample may have left them out."""
    c = np.asarray(params["clip_value"], x.dtype)
    flat = x.ravel().copy()
    free = [int(i) for i in np.flatnonzero((flat != 0) & (np.abs(flat) != c))]
    for edge in (c, -c):
        if not np.any(flat == edge) and free:
            flat[free.pop(0)] = edge
    return flat.reshape(x.shape)

for _name in ("ste_sign_stop_gradient", "ste_sign_custom_gradient"):
    # The stop_gradient idiom x + sg(q - x) cancels for huge |x| (ste_utils.estimators); inputs
    # drawn with a small scale keep that numerical caveat out of the grade.
    elementwise_specs(
        _name, "ste_sign", boundary=_sign_boundary, params_choices=_SIGN_CHOICES,
        why_value=_sign_why_value, why_gradient=_sign_why_gradient, label=f"your {_name}",
        cases=make_cycling_cases(_sign_boundary, _SIGN_CHOICES, scale=1.5, sanitize=_with_clip_edges),
    )


# ----------------------------------------------------------------------------- k-bit quantizers
def unambiguous_levels(x: np.ndarray, bits: int) -> np.ndarray:
    """Replace the inputs whose level depends on the precision of ``x * n`` (n = 2**bits - 1).

    ``round(x * n)`` with ``x * n`` rounded to ``x``'s dtype can land on a tie k + 1/2 that the
    exact product misses (or the reverse). A student who computes the product in a wider dtype
    is not wrong there, so such inputs are moved to the level k / n itself. Exact ties, such
    as x = 0.5 (x * n = n / 2 for every odd n), stay: every precision agrees on them.
    """
    n = 2 ** int(bits) - 1
    dtype = x.dtype
    clipped = np.clip(x, 0, 1).astype(dtype)
    in_dtype = np.round((clipped * dtype.type(n)).astype(np.float64))
    exact = np.round(clipped.astype(np.longdouble) * n).astype(np.float64)
    wide = np.round((clipped.astype(np.float64) * n))
    bad = (in_dtype != exact) | (in_dtype != wide)
    return np.where(bad, (exact / n).astype(dtype), x).astype(dtype)


def _level_why(x, bits):
    n = 2 ** int(bits) - 1
    if x < 0:
        return f"x < 0 is clipped to 0 (level 0 of {n})"
    if x > 1:
        return f"x > 1 is clipped to 1 (level {n} of {n})"
    product = x * n  # exact for float16/32 inputs; float64's own rounding for float64 inputs
    k = float(np.round(product))
    tie = product - np.floor(product) == 0.5
    near_tie = not tie and abs(product - np.floor(product) - 0.5) < 1e-4
    shown = f"{product:.17g}" if near_tie else f"{product:.6g}"
    rule = " (a tie: tf.round rounds half to even)" if tie else ""
    return f"x * {n} = {shown} rounds to {k:g}{rule}, and {k:g} / {n} is the level"


def _quantize_boundary(p):
    n = 2 ** int(p["bits"]) - 1
    return [0.0, 1.0, 0.5, -0.25, 1.25, 1.0 / n, (n - 1.0) / n, 0.5 / n, (n - 0.5) / n, 3.0, -2.0]


def _quantize_why_gradient(x, params):
    if 0 <= x <= 1:
        return "it lies in [0, 1] (both edges included), where the upstream gradient passes"
    return "it lies outside [0, 1], where the clipped straight-through gradient is 0"


_QUANTIZE_CHOICES = [{"bits": b} for b in range(1, 9)]

elementwise_specs(
    "quantize_ste", "quantize", boundary=_quantize_boundary,
    params_choices=_QUANTIZE_CHOICES,
    why_value=lambda x, p: _level_why(x, p["bits"]), why_gradient=_quantize_why_gradient,
    label="your quantize_ste",
    cases=make_cycling_cases(_quantize_boundary, _QUANTIZE_CHOICES, scale=1.0,
                             visible_params=[{"bits": 2}, {"bits": 1}],
                             sanitize=lambda x, p: unambiguous_levels(x, p["bits"])),
)


# ----------------------------------------------------------------------------- 06: 2-bit activation, chosen proxy
PROXY_RULES = {
    "identity": ("1 for every x", lambda x: True),
    "relu": ("1{x > 0} (0 at the kink x = 0)", lambda x: x > 0),
    "clipped_relu": ("1{0 < x <= 1} (0 at x = 0, 1 at x = 1)", lambda x: 0 < x <= 1),
    "hardtanh": ("1{|x| <= 1} (1 at x = -1 and x = 1)", lambda x: abs(x) <= 1),
}


def proxy_why(name: str, x: float) -> str:
    """Why the derivative of proxy ``name`` at ``x`` is what it is (for messages)."""
    rule, inside = PROXY_RULES[name]
    return f"the {name} proxy's derivative is {rule}, which is {1 if inside(x) else 0} here"


def _quantized_relu_boundary(p):
    return [0.0, 1.0, -1.0, 0.5, 1.0 / 3, 2.0 / 3, 1.0 / 6, 5.0 / 6, -0.5, 1.5, 3.0]


_PROXY_CHOICES = [{"proxy": name} for name in PROXY_RULES]

elementwise_specs(
    "quantized_relu", "quantized_relu", boundary=_quantized_relu_boundary,
    params_choices=_PROXY_CHOICES,
    why_value=lambda x, p: _level_why(x, 2),
    why_gradient=lambda x, p: proxy_why(p["proxy"], x),
    label="your ste_quantized_relu",
    cases=make_cycling_cases(_quantized_relu_boundary, _PROXY_CHOICES, scale=1.0,
                             visible_params=_PROXY_CHOICES,
                             sanitize=lambda x, p: unambiguous_levels(x, 2)),
)
