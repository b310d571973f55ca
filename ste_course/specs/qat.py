"""Specs for assignment 07 (quantization-aware training: LSQ and PACT).

``lsq/value``, ``lsq/x_gradient``, ``lsq/step_gradient``
    ``lsq_quantize(x, step, bits, signed=True, grad_scale=1.0)``, LSQ (Esser et al., ICLR 2020):
    q = s * clip(round(x / s), -Q_N, Q_P); dq/dx = 1{-Q_N <= x/s <= Q_P}; dq/ds = g times
    -Q_N, round(v) - v or Q_P (their eq. 3, v = x / s, bounds inside the range as
    ``ste_utils.lsq_quantize``). The step is passed as one copy per element (so each element's
    step gradient is checked, and its message names x / s), or as one shared scalar (then its
    gradient is the sum over the elements).
``pact/quantize``
    ``pact_quantize(x, alpha, bits)``, PACT (Choi et al., 2018): the value, dy/dx = 1{0 <= x < alpha}
    and dy/dalpha = 1{x >= alpha}, alpha one copy per element.

Every step, clip level, grad scale and upstream gradient is a power of two, so x / s, its
products and autodiff's u * level - u * v are exact: a correct answer written with
``tf.custom_gradient`` and one written with the STE on the rounding only
(``s * ste_round(clip(x / s, -Q_N, Q_P))``, chapter 7) give the same bits, and a half-way
point x / s = k + 1/2 is exactly half-way whichever way it is computed.

Which side runs what: as in :mod:`ste_course.specs.elementwise` (``run`` in the student's
kernel; ``cases``, ``reference`` and the messages in the grader or the student's own kernel).
"""

from __future__ import annotations

import numpy as np

from ste_course.specs.base import Spec, register
from ste_course.specs.common import distinct, to_array
from ste_course.specs.elementwise import HIDDEN_DTYPES, HIDDEN_SHAPES, unambiguous_levels

STEPS = (0.0625, 0.125, 0.25, 0.5, 1.0, 2.0)
GRAD_SCALES = (1.0, 0.5, 0.25, 0.125)
UPSTREAMS = (1.0, 2.0, 0.5, -1.0, 0.25)
LSQ_LEVELS = ((2, True), (3, True), (4, True), (8, True), (1, False), (2, False), (4, False))


def levels(bits: int, signed: bool) -> tuple:
    """LSQ's (Q_N, Q_P) (as ``ste_utils.lsq_levels``, without importing it here)."""
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def _upstream(rng, shape, plain: bool, dtype) -> np.ndarray:
    if plain:
        return np.ones(shape, dtype)
    return rng.choice(UPSTREAMS, size=shape).astype(dtype)


# ----------------------------------------------------------------------------- LSQ cases
def _lsq_points(q_n: int, q_p: int) -> list:
    """x / s where bugs live: the clip bounds, just beyond them, half-way points (ties to even)."""
    return sorted({-q_n - 1.5, -q_n - 0.5, -float(q_n), -q_n + 0.5, -0.5, 0.0, 0.25, 0.5, 1.5, 2.5,
                   q_p - 0.5, float(q_p), q_p + 0.5, q_p + 1.0, 2.0 * q_p + 3.0})


def _lsq_x(rng, points, shape, s, dtype, q_n, q_p) -> np.ndarray:
    """x = v * s for the boundary points v, the float neighbours of the clip bounds, then random v."""
    size = int(np.prod(shape))
    # the clip bounds, one point beyond each, a half-way point that rounds to even, then the rest
    first = [float(q_p), -float(q_n), q_p + 0.5, -q_n - 1.5, 2.5 if q_p >= 3 else 0.5]
    v = np.concatenate([first, rng.permutation([p for p in points if p not in first])])
    edges = np.array([-q_n * s, q_p * s], dtype)
    near = np.concatenate([np.nextafter(edges, np.array(np.inf, dtype)), np.nextafter(edges, np.array(-np.inf, dtype))])
    near = near[np.abs(near) >= np.finfo(dtype).tiny]  # no subnormals (TensorFlow flushes them to zero)
    extra = rng.normal(0.0, (q_n + q_p) / 2 + 1, size=max(size, 1))
    extra = np.where(np.abs(extra) < 0.01, 0.0, extra)  # no subnormal x in float16
    x = np.concatenate([(v[:len(first)] * s).astype(dtype), near, (v[len(first):] * s).astype(dtype),
                        (extra * s).astype(dtype)])[:size]
    return rng.permutation(x).reshape(shape).astype(dtype)


def _lsq_case(x, s, bits, signed, g, upstream, shared=False) -> dict:
    step = np.asarray(s, x.dtype) if shared else np.full(x.shape, s, x.dtype)
    return {"x": x, "step": step, "bits": int(bits), "signed": bool(signed), "grad_scale": float(g),
            "upstream": upstream.astype(x.dtype)}


def _lsq_cases(rng, hidden):
    if not hidden:
        out = []
        for (bits, signed, s, g, plain) in ((3, True, 0.5, 1.0, True), (2, False, 0.25, 0.5, False)):
            q_n, q_p = levels(bits, signed)
            v = np.array(_lsq_points(q_n, q_p))
            x = (v * s).astype(np.float32)
            out.append(_lsq_case(x, s, bits, signed, g, _upstream(rng, x.shape, plain, np.float32)))
        # one step shared by every element (float64: the sum of the elements is exact enough)
        x = (np.array(_lsq_points(8, 7)) * 0.125).reshape(3, 5)
        out.append(_lsq_case(x, 0.125, 4, True, 0.25, np.ones(x.shape), shared=True))
        return out
    out = []
    start = int(rng.integers(len(LSQ_LEVELS)))
    for i, (dtype, shape) in enumerate([(d, s) for d in HIDDEN_DTYPES for s in HIDDEN_SHAPES]):
        bits, signed = LSQ_LEVELS[(start + i) % len(LSQ_LEVELS)]
        q_n, q_p = levels(bits, signed)
        s = STEPS[int(rng.integers(len(STEPS)))]
        g = GRAD_SCALES[int(rng.integers(len(GRAD_SCALES)))]
        x = _lsq_x(rng, _lsq_points(q_n, q_p), shape, s, np.dtype(dtype), q_n, q_p)
        out.append(_lsq_case(x, s, bits, signed, g, _upstream(rng, shape, i % 2 == 0, dtype)))
    # one shared step, float64 (LSQ's use: one step per layer; its gradient sums the elements)
    bits, signed = LSQ_LEVELS[start]
    q_n, q_p = levels(bits, signed)
    s = STEPS[int(rng.integers(len(STEPS)))]
    x = _lsq_x(rng, _lsq_points(q_n, q_p), (4, 5), s, np.dtype("float64"), q_n, q_p)
    out.append(_lsq_case(x, s, bits, signed, GRAD_SCALES[int(rng.integers(len(GRAD_SCALES)))],
                         _upstream(rng, x.shape, False, np.float64), shared=True))
    return out


# ----------------------------------------------------------------------------- LSQ runs and references
def _lsq_args(case):
    import tensorflow as tf

    return (tf.constant(case["x"]), tf.constant(case["step"]), case["bits"],
            {"signed": case["signed"], "grad_scale": case["grad_scale"]})


def _lsq_run(fn, case, output):
    import tensorflow as tf

    x, step, bits, kwargs = _lsq_args(case)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, step])
        q = fn(x, step, bits, **kwargs)
    if output == "value":
        return {"value": to_array(q, "lsq_quantize(...)")}
    wrt = x if output == "x_gradient" else step
    grad = tape.gradient(q, wrt, output_gradients=tf.constant(case["upstream"]))
    return {output: tf.zeros_like(wrt) if grad is None else grad}


def _lsq_reference(output):
    def reference(case):
        import ste_utils

        return _lsq_run(ste_utils.lsq_quantize, case, output)

    return reference


def _lsq_describe(case) -> str:
    x, step = np.asarray(case["x"]), np.asarray(case["step"])
    q_n, q_p = levels(case["bits"], case["signed"])
    kind = "signed" if case["signed"] else "unsigned"
    s = float(step.ravel()[0])
    shared = ", one step shared by every element" if step.shape == () else ""
    return (f"x of dtype {x.dtype.name} and shape {x.shape} ({case['bits']}-bit {kind}, Q_N = {q_n}, "
            f"Q_P = {q_p}, s = {s:g}, grad_scale = {case['grad_scale']:g}{shared})")


def _at(case, index):
    x = float(np.asarray(case["x"]).ravel()[index])
    s = float(np.asarray(case["step"]).ravel()[0])
    q_n, q_p = levels(case["bits"], case["signed"])
    return x, s, x / s, q_n, q_p


def _level_rule(v, q_n, q_p) -> str:
    k = float(np.round(v))
    tie = " (a half-way point: tf.round rounds half to even)" if v - np.floor(v) == 0.5 else ""
    if v < -q_n:
        return f"x/s = {v:.6g} < -Q_N = {-q_n}: x is clipped to the lowest level -Q_N"
    if v > q_p:
        return f"x/s = {v:.6g} > Q_P = {q_p}: x is clipped to the top level Q_P"
    return f"round(x/s) = round({v:.6g}) = {k:g}{tie}, inside [-Q_N, Q_P] = [{-q_n}, {q_p}]"


def _factors(case, index, output) -> str:
    u = float(np.asarray(case["upstream"]).ravel()[index])
    parts = []
    if output == "step_gradient" and case["grad_scale"] != 1:
        parts.append(f"the grad scale g = {case['grad_scale']:g}")
    if u != 1:
        parts.append(f"the upstream gradient {u:g}")
    return (", times " + " and ".join(parts)) if parts else ""


def _lsq_explain(case, output, index, expected, got):
    e, g = distinct(expected, got)
    dtype = np.asarray(case["x"]).dtype.name
    if np.asarray(case["step"]).shape == () and output == "step_gradient":
        return (f"The step-size gradient of a step shared by all {np.asarray(case['x']).size} elements "
                f"({_lsq_describe(case)}) should be {e}, the sum over the elements of g * upstream * "
                f"dq/ds (eq. 3); yours is {g}.")
    x, s, v, q_n, q_p = _at(case, index)
    where = f"x = {x:.6g} (x/s = {v:.6g}, Q_N = {q_n}, Q_P = {q_p}, s = {s:g}, {dtype})"
    if output == "value":
        return f"The value at {where} should be {e}: {_level_rule(v, q_n, q_p)}, times s; yours is {g}."
    if output == "x_gradient":
        if -q_n <= v <= q_p:
            why = ("x/s lies inside [-Q_N, Q_P] (both bounds included), where the STE passes the "
                   "upstream gradient through the rounding")
        else:
            why = "x/s lies outside [-Q_N, Q_P]: x is clipped there, so a change of x changes nothing"
        return f"The gradient with respect to x at {where} should be {e} because {why}; yours is {g}."
    if v > q_p:
        why = f"x is clipped (x/s > Q_P): q = Q_P * s, so dq/ds = Q_P = {q_p}"
    elif v < -q_n:
        why = f"x is clipped (x/s < -Q_N): q = -Q_N * s, so dq/ds = -Q_N = {-q_n}"
    elif v in (-q_n, q_p):
        why = (f"x/s = {v:g} is on the clip bound, which is inside the range (tf.clip_by_value keeps its "
               f"bounds, as autodiff of s * ste_round(clip(x/s, -Q_N, Q_P)) does): dq/ds = round(v) - v = 0")
    else:
        k = float(np.round(v))
        tie = " (tf.round rounds half to even)" if v - np.floor(v) == 0.5 else ""
        why = f"inside the range dq/ds = round(x/s) - x/s = {k:g} - {v:.6g} (LSQ's eq. 3){tie}"
    return f"The step-size gradient at {where} should be {e} because {why}{_factors(case, index, output)}; yours is {g}."


for _output, _summary in (("value", "forward values of your lsq_quantize"),
                          ("x_gradient", "gradients of your lsq_quantize with respect to x"),
                          ("step_gradient", "gradients of your lsq_quantize with respect to the step size (LSQ eq. 3)")):
    register(Spec(name=f"lsq/{_output}", summary=_summary, cases=_lsq_cases,
                  run=lambda fn, case, _o=_output: _lsq_run(fn, case, _o), reference=_lsq_reference(_output),
                  describe=_lsq_describe, explain=_lsq_explain))


# ----------------------------------------------------------------------------- PACT
PACT_ALPHAS = (0.5, 1.0, 2.0, 4.0)


def _pact_x(rng, shape, alpha, bits, dtype, visible=False) -> np.ndarray:
    n = 2 ** bits - 1
    u = np.array([-1.0, -0.25, 0.0, 0.5 / n, 1.0 / n, 0.5, (n - 0.5) / n, 1.0, 1.5, 3.0])
    edges = np.array([0.0, alpha], dtype)
    near = np.concatenate([np.nextafter(edges, np.array(np.inf, dtype)), np.nextafter(edges, np.array(-np.inf, dtype))])
    near = near[np.abs(near) >= np.finfo(dtype).tiny]  # no subnormals (TensorFlow flushes them to zero)
    if visible:
        x = np.concatenate([(u * alpha).astype(dtype), near[:2]])
    else:
        size = int(np.prod(shape))
        extra = rng.uniform(-0.5, 1.5, size=size) * alpha
        x = rng.permutation(np.concatenate([(u * alpha).astype(dtype), near, extra.astype(dtype)])[:size])
        x = x.reshape(shape)
    # x / alpha is exact (alpha a power of two): move inputs whose level depends on precision
    return (unambiguous_levels((x / alpha).astype(dtype), bits) * alpha).astype(dtype)


def _pact_case(x, alpha, bits, upstream) -> dict:
    return {"x": x, "alpha": np.full(x.shape, alpha, x.dtype), "bits": int(bits), "upstream": upstream}


def _pact_cases(rng, hidden):
    if not hidden:
        out = []
        for alpha, bits, plain in ((2.0, 2, True), (1.0, 3, False)):
            x = _pact_x(rng, None, alpha, bits, np.dtype("float32"), visible=True)
            out.append(_pact_case(x, alpha, bits, _upstream(rng, x.shape, plain, np.float32)))
        return out
    out = []
    for i, (dtype, shape) in enumerate([(d, s) for d in HIDDEN_DTYPES for s in HIDDEN_SHAPES]):
        alpha = PACT_ALPHAS[int(rng.integers(len(PACT_ALPHAS)))]
        bits = int(rng.integers(1, 9))
        x = _pact_x(rng, shape, alpha, bits, np.dtype(dtype))
        out.append(_pact_case(x, alpha, bits, _upstream(rng, shape, i % 2 == 0, dtype)))
    return out


def _pact_run(fn, case):
    import tensorflow as tf

    x, alpha = tf.constant(case["x"]), tf.constant(case["alpha"])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, alpha])
        y = fn(x, alpha, case["bits"])
    up = tf.constant(case["upstream"])
    dx, da = (tape.gradient(y, t, output_gradients=up) for t in (x, alpha))
    return {"value": to_array(y, "pact_quantize(...)"), "x_gradient": tf.zeros_like(x) if dx is None else dx,
            "alpha_gradient": tf.zeros_like(alpha) if da is None else da}


def _pact_reference(case):
    import ste_utils

    return _pact_run(ste_utils.pact_quantize, case)


def _pact_describe(case) -> str:
    x = np.asarray(case["x"])
    return (f"x of dtype {x.dtype.name} and shape {x.shape} (alpha = {float(case['alpha'].ravel()[0]):g}, "
            f"bits = {case['bits']})")


def _pact_explain(case, output, index, expected, got):
    e, g = distinct(expected, got)
    x = float(np.asarray(case["x"]).ravel()[index])
    a = float(np.asarray(case["alpha"]).ravel()[0])
    n = 2 ** case["bits"] - 1
    u = float(np.asarray(case["upstream"]).ravel()[index])
    where = f"x = {x:.6g} (alpha = {a:g}, {case['bits']} bits, {np.asarray(case['x']).dtype.name})"
    times = f", times the upstream gradient {u:g}" if u != 1 else ""
    if output == "value":
        c = min(max(x, 0.0), a)
        k = float(np.round(c * n / a))
        return (f"The value at {where} should be {e}: clip(x, 0, alpha) = {c:.6g}, round({c:.6g} * {n} / "
                f"alpha) = {k:g} (half to even), times alpha / {n}; yours is {g}.")
    if output == "x_gradient":
        if x == a:
            why = ("x = alpha itself is excluded from PACT's window 1{0 <= x < alpha} (eq. 4): there the "
                   "gradient goes to alpha")
        elif 0 <= x < a:
            why = "0 <= x < alpha: PACT's STE passes the gradient there (eq. 4)"
        else:
            why = "x is outside [0, alpha), where the output is clipped (eq. 4: 1{0 <= x < alpha})"
        return f"The gradient with respect to x at {where} should be {e} because {why}{times}; yours is {g}."
    why = ("x >= alpha: the output is alpha itself, so dy/dalpha = 1 (eq. 3, x = alpha included)" if x >= a else
           "x < alpha: PACT treats the quantized output as clip(x, 0, alpha), which does not depend on "
           "alpha there (eq. 3)")
    return f"The gradient with respect to alpha at {where} should be {e} because {why}{times}; yours is {g}."


register(Spec(name="pact/quantize", summary="values and both gradients (x, alpha) of your pact_quantize",
              cases=_pact_cases, run=_pact_run, reference=_pact_reference, describe=_pact_describe,
              explain=_pact_explain))
