"""Specs for assignment 07 (quantization-aware training: LSQ and PACT).

``lsq/value``, ``lsq/x_gradient``, ``lsq/step_gradient``
    ``lsq_quantize(x, step, bits, signed=True, grad_scale=1.0)``, LSQ (Esser et al., ICLR 2020):
    q = s * clip(round(x / s), -Q_N, Q_P); dq/dx = 1{-Q_N <= x/s <= Q_P}; dq/ds = g times
    -Q_N, round(v) - v or Q_P (their eq. 3, v = x / s, bounds inside the range as
    ``ste_utils.lsq_quantize``). The step is passed as one copy per element (so each element's
    step gradient is checked, and its message names x / s), or as one shared scalar (then its
    gradient is the sum over the elements).
    At x / s = -Q_N and x / s = Q_P exactly, both conventions are accepted for x and for s:
    autodiff's (dq/dx = 1, dq/ds = round(v) - v = 0) and the paper's printed eq. (3), whose
    strict inequalities give dq/dx = 0 and dq/ds = -Q_N or Q_P there (:func:`_lsq_compare`).
``pact/quantize``
    ``pact_quantize(x, alpha, bits)``, PACT (Choi et al., 2018): the value, dy/dx = 1{0 <= x < alpha}
    and dy/dalpha = 1{x >= alpha}, alpha one copy per element.
``fake_quant/value``, ``fake_quant/gradients``
    ``fake_quant(x, min_value, max_value, bits, narrow_range)``, the student's own
    ``tf.quantization.fake_quant_with_min_max_vars``: the range nudged so that 0 is a level
    (zero point rounded half away from zero), levels rounded half up; dy/dx = 1 inside the
    nudged range (bounds included), dmin and dmax the sums of the upstream gradient below and
    above it. The reference is TensorFlow's op as its kernel computes it in float32
    (``tensorflow/core/kernels/fake_quant_ops_functor.h``), reproduced in NumPy
    (:mod:`ste_course.references.qat`; equal to the op bit for bit); ranges are drawn per
    student with a power-of-two step, so every formula written in float32 gives the same bits.
    A function whose graph holds TensorFlow's fake-quantization ops (or a py_function hiding
    them) is refused.

Every step, clip level, grad scale and upstream gradient is a power of two, so x / s, its
products and autodiff's u * level - u * v are exact: a correct answer written with
``tf.custom_gradient`` and one written with the STE on the rounding only
(``s * ste_round(clip(x / s, -Q_N, Q_P))``, chapter 7) give the same bits, and a half-way
point x / s = k + 1/2 is exactly half-way whichever way it is computed.

Which side runs what: as in :mod:`ste_course.specs.elementwise` (``run`` in the student's
kernel; ``cases``, ``reference`` and the messages in the grader or the student's own kernel;
the references are NumPy, :mod:`ste_course.references.qat`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ste_course.evidence import encode_array
from ste_course.specs.base import NumpyReference, Spec, compare, get_spec, register, tolerance
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
        if v in (-q_n, q_p):
            why = (f"x/s = {v:g} is on a clip bound, where either the upstream gradient (both bounds included, "
                   f"autodiff's convention) or 0 (the paper's strict inequalities) is accepted")
        elif -q_n <= v <= q_p:
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
        why = (f"x/s = {v:g} is on the clip bound: either round(v) - v = 0 (the bound inside the range, as "
               f"autodiff of s * ste_round(clip(x/s, -Q_N, Q_P)) gives) or {v:g} (the paper's strict "
               f"inequalities) is accepted")
    else:
        k = float(np.round(v))
        tie = " (tf.round rounds half to even)" if v - np.floor(v) == 0.5 else ""
        why = f"inside the range dq/ds = round(x/s) - x/s = {k:g} - {v:.6g} (LSQ's eq. 3){tie}"
    return f"The step-size gradient at {where} should be {e} because {why}{_factors(case, index, output)}; yours is {g}."


def _paper_convention(case, output, expected) -> np.ndarray | None:
    """The expected ``output`` under the paper's printed eq. (3) (strict inequalities: on the
    bounds v = -Q_N and v = Q_P, dq/dx = 0 and dq/ds = -Q_N or Q_P), or None where it cannot
    differ from autodiff's (the value, or no input on a bound)."""
    if output == "value":
        return None
    x = np.asarray(case["x"])
    step = np.asarray(case["step"])
    v = (x / step).astype(np.float64)  # exact: power-of-two steps
    q_n, q_p = levels(case["bits"], case["signed"])
    bound = (v == -q_n) | (v == q_p)
    if not bound.any():
        return None
    u = np.asarray(case["upstream"]).astype(np.float64)
    exp = np.asarray(expected).astype(np.float64)
    if output == "x_gradient":
        return np.where(bound, 0.0, exp)
    paper = case["grad_scale"] * u * np.where(v == q_p, q_p, -q_n)
    if step.shape == ():  # one shared step: autodiff's sum has 0 for these elements
        return np.asarray(exp + paper[bound].sum())
    return np.where(bound, paper, exp)


def _lsq_compare(output):
    """Compare as :func:`ste_course.specs.base.compare` does, where an element on a clip bound may
    follow either convention (each element for itself; a shared step's sum follows one)."""
    def _compare(case, expected, got):
        spec = dataclasses.replace(get_spec(f"lsq/{output}"), compare=None)
        exp = expected[output]
        paper = _paper_convention(case, output, exp)
        if paper is not None and output in got and got[output][0].shape == paper.shape:
            dtype = np.asarray(exp).dtype
            rtol, atol = tolerance(dtype.name)
            take = np.isclose(got[output][0], paper, rtol=rtol, atol=atol)
            exp = np.where(take, paper.astype(dtype), np.asarray(exp)).astype(dtype)
        evidence = {"outputs": {k: encode_array(values, dtype) for k, (values, dtype) in got.items()}}
        return compare(spec, case, {output: exp}, evidence)

    return _compare


for _output, _summary in (("value", "forward values of your lsq_quantize"),
                          ("x_gradient", "gradients of your lsq_quantize with respect to x"),
                          ("step_gradient", "gradients of your lsq_quantize with respect to the step size (LSQ eq. 3)")):
    register(Spec(name=f"lsq/{_output}", summary=_summary, cases=_lsq_cases,
                  run=lambda fn, case, _o=_output: _lsq_run(fn, case, _o), reference=NumpyReference("qat", f"lsq_{_output}"),
                  describe=_lsq_describe, explain=_lsq_explain,
                  compare=None if _output == "value" else _lsq_compare(_output)))


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
            why = ("x = alpha itself is excluded from PACT's window 1{0 <= x < alpha} (the STE on its eq. (1)): there the "
                   "gradient goes to alpha")
        elif 0 <= x < a:
            why = "0 <= x < alpha: PACT's STE passes the gradient there"
        else:
            why = "x is outside [0, alpha), where the output is clipped (PACT's window is 1{0 <= x < alpha})"
        return f"The gradient with respect to x at {where} should be {e} because {why}{times}; yours is {g}."
    why = ("x >= alpha: the output is alpha itself, so dy/dalpha = 1 (eq. 3, x = alpha included)" if x >= a else
           "x < alpha: PACT treats the quantized output as clip(x, 0, alpha), which does not depend on "
           "alpha there (eq. 3)")
    return f"The gradient with respect to alpha at {where} should be {e} because {why}{times}; yours is {g}."


register(Spec(name="pact/quantize", summary="values and both gradients (x, alpha) of your pact_quantize",
              cases=_pact_cases, run=_pact_run, reference=NumpyReference("qat", "pact"), describe=_pact_describe,
              explain=_pact_explain))


# ----------------------------------------------------------------------------- fake quantization
FQ_BITS = (2, 3, 4, 8)
FQ_DELTAS = (0.5, 0.25, 0.125, 0.0625, 0.03125)
# Ops that would answer the part for the student: TensorFlow's fake quantization and its
# relatives, and Python functions run inside the graph (they could hide an eager call).
FQ_REFUSED_OPS = frozenset({
    "FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsGradient", "FakeQuantWithMinMaxArgs",
    "FakeQuantWithMinMaxArgsGradient", "FakeQuantWithMinMaxVarsPerChannel",
    "FakeQuantWithMinMaxVarsPerChannelGradient", "QuantizeAndDequantize", "QuantizeAndDequantizeV2",
    "QuantizeAndDequantizeV3", "QuantizeAndDequantizeV4", "QuantizeAndDequantizeV4Grad",
    "PyFunc", "PyFuncStateless", "EagerPyFunc"})


def fq_nudge(lo: float, hi: float, bits: int, narrow_range: bool) -> tuple:
    """TensorFlow's nudged range, in float32 as its kernel computes it: (nudged min, nudged max,
    step, zero point before rounding, nudged zero point)."""
    f = np.float32
    q_min, q_max = (1 if narrow_range else 0), 2 ** bits - 1
    scale = (f(hi) - f(lo)) / f(q_max - q_min)
    zero_from_min = f(q_min) - f(lo) / scale
    zero = q_min if zero_from_min < q_min else q_max if zero_from_min > q_max else float(
        np.sign(zero_from_min) * np.floor(abs(zero_from_min) + 0.5))
    return (float(f(q_min - zero) * scale), float(f(q_max - zero) * scale), float(scale),
            float(zero_from_min), zero)


def _fq_range(rng, bits: int, narrow_range: bool, kind: int) -> tuple:
    """(min, max) with a power-of-two step Delta, so the nudge is exact in float32. kind 0: the
    zero point a quarter off an integer; 1: exactly half-way (rounds away from zero); 2: min > 0
    (the zero point clamps to the lowest level); 3: max < 0 (to the highest)."""
    q_min, q_max = (1 if narrow_range else 0), 2 ** bits - 1
    n = q_max - q_min
    delta = FQ_DELTAS[int(rng.integers(len(FQ_DELTAS)))]
    if kind in (0, 1):
        z = int(rng.integers(0, n)) if n > 1 else 0
        f = 0.5 if kind == 1 else float(rng.choice([0.25, 0.75]))
        lo = -(z + f) * delta
    elif kind == 2:
        lo = float(rng.choice([0.25, 0.5, 1.5])) * delta
    else:
        lo = -(n + float(rng.choice([0.25, 0.5, 1.5]))) * delta
    return lo, lo + n * delta


def _fq_x(rng, lo, hi, bits, narrow_range, size) -> np.ndarray:
    """The nudged bounds, the given min and max, 0, half-way points (TensorFlow rounds them up),
    points beyond the range, then random points of the grid and between its levels."""
    n_lo, n_hi, delta, _, _ = fq_nudge(lo, hi, bits, narrow_range)
    levels_n = int(round((n_hi - n_lo) / delta))
    first = [n_lo, n_hi, lo, hi, 0.0, n_lo + 0.5 * delta, n_lo + 1.5 * delta, n_hi - 0.5 * delta,
             n_lo - delta, n_hi + 0.75 * delta, n_lo - 0.25 * delta, n_hi + 3 * delta]
    k = rng.integers(-3, levels_n + 4, size=max(size, 1))
    r = rng.choice([0.0, 0.25, 0.5, 0.75], size=k.size)
    x = np.concatenate([first, n_lo + (k + r) * delta])[:size] if size >= len(first) else np.asarray(first[:size])
    return np.asarray(x, np.float32)


def _fq_case(x, lo, hi, bits, narrow_range, upstream) -> dict:
    return {"x": x, "min": np.asarray(lo, np.float32), "max": np.asarray(hi, np.float32), "bits": int(bits),
            "narrow_range": bool(narrow_range), "upstream": upstream.astype(np.float32)}


def _fq_cases(rng, hidden):
    if not hidden:
        # 4 bits: [-0.9375, 0.9375] nudges to [-1, 0.875] (zero point 7.5 rounds away from 0, to 8);
        # narrow_range: [-0.78125, 0.96875] nudges to [-0.75, 1] (zero point 7.25 -> 7)
        out = []
        for lo, hi, narrow, plain in ((-0.9375, 0.9375, False, True), (-0.78125, 0.96875, True, False)):
            x = _fq_x(np.random.default_rng(0), lo, hi, 4, narrow, 24)
            out.append(_fq_case(x, lo, hi, 4, narrow, _upstream(rng, x.shape, plain, np.float32)))
        return out
    out = []
    kinds = rng.permutation([0, 1, 2, 3, 0, 1])
    shapes = ((40,), (6, 7), (2, 5, 4), (33,), (8, 5), (3, 3, 4))
    for i, (kind, shape) in enumerate(zip(kinds, shapes)):
        bits = FQ_BITS[(i + int(rng.integers(len(FQ_BITS)))) % len(FQ_BITS)]
        narrow = bool(i % 2)
        lo, hi = _fq_range(rng, bits, narrow, int(kind))
        x = rng.permutation(_fq_x(rng, lo, hi, bits, narrow, int(np.prod(shape)))).reshape(shape)
        out.append(_fq_case(x, lo, hi, bits, narrow, _upstream(rng, shape, i % 3 == 0, np.float32)))
    return out


def _graph_ops(concrete) -> set:
    graph = concrete.graph.as_graph_def()
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    return ops


FQ_GRADIENTS = ("x_gradient", "min_gradient", "max_gradient")


def _fq_run(fn, case, outputs):
    """Values and the three gradients of ``fn(x, min, max, bits, narrow_range)``, computed in one
    ``tf.function`` whose graph is searched for the refused ops first."""
    import tensorflow as tf

    x, lo, hi, up = (tf.constant(case[k]) for k in ("x", "min", "max", "upstream"))

    def body(x, lo, hi, up):
        with tf.GradientTape() as tape:
            tape.watch([x, lo, hi])
            y = fn(x, lo, hi, case["bits"], case["narrow_range"])
        grads = tape.gradient(y, [x, lo, hi], output_gradients=up)
        return [y] + [tf.zeros_like(t) if g is None else g for g, t in zip(grads, (x, lo, hi))]

    concrete = tf.function(body, autograph=False).get_concrete_function(x, lo, hi, up)
    found = sorted(_graph_ops(concrete) & FQ_REFUSED_OPS)
    if found:
        raise RuntimeError(f"fake_quant runs TensorFlow's {', '.join(found)} op: this part must be your "
                           "own implementation of the nudge, the rounding and the gradients")
    y, d_x, d_lo, d_hi = concrete(x, lo, hi, up)
    result = {"value": to_array(y, "fake_quant(...)"), "x_gradient": d_x, "min_gradient": d_lo,
              "max_gradient": d_hi}
    return {k: result[k] for k in outputs}


def _fq_describe(case) -> str:
    x = np.asarray(case["x"])
    return (f"x of shape {x.shape} (min = {float(case['min']):g}, max = {float(case['max']):g}, "
            f"{case['bits']} bits, narrow_range={case['narrow_range']})")


def _fq_explain(case, output, index, expected, got):
    e, g = distinct(expected, got)
    lo, hi, bits, narrow = float(case["min"]), float(case["max"]), case["bits"], case["narrow_range"]
    n_lo, n_hi, delta, zero_from_min, zero = fq_nudge(lo, hi, bits, narrow)
    q_min = 1 if narrow else 0
    nudge = (f"the range [{lo:g}, {hi:g}] is nudged to [{n_lo:g}, {n_hi:g}] (step {delta:g}, levels "
             f"{q_min}..{2 ** bits - 1}{' with narrow_range' if narrow else ''}; zero point {q_min} - min/step = "
             f"{zero_from_min:g}, rounded half away from zero and kept in range: {zero:g})")
    x_all = np.asarray(case["x"]).astype(np.float64).ravel()
    u_all = np.asarray(case["upstream"]).astype(np.float64).ravel()
    if output == "min_gradient":
        below = x_all < n_lo
        return (f"The gradient with respect to min on {_fq_describe(case)} should be {e}, the sum of the upstream "
                f"gradients of the {int(below.sum())} inputs below the nudged minimum: {nudge}; yours is {g}.")
    if output == "max_gradient":
        above = x_all > n_hi
        return (f"The gradient with respect to max on {_fq_describe(case)} should be {e}, the sum of the upstream "
                f"gradients of the {int(above.sum())} inputs above the nudged maximum: {nudge}; yours is {g}.")
    x = float(x_all[index])
    where = f"x = {x:.6g} ({_fq_describe(case)})"
    if output == "value":
        c = min(max(x, n_lo), n_hi)
        t = (c - n_lo) / delta
        half = " (a half-way point: the op rounds half up, floor(t + 1/2), not to even)" if t - np.floor(t) == 0.5 else ""
        return (f"The value at {where} should be {e}: {nudge}; x clipped to it is {c:.6g}, "
                f"(x - nudged min) / step = {t:.6g} rounds to level {np.floor(t + 0.5):g}{half}; yours is {g}.")
    inside = n_lo <= x <= n_hi
    why = ("x lies inside the nudged range (both bounds included), where the gradient passes straight through"
           if inside else "x lies outside the nudged range, where the output is a constant level")
    u = float(u_all[index])
    times = f", times the upstream gradient {u:g}" if u != 1 else ""
    return f"The gradient with respect to x at {where} should be {e} because {why}: {nudge}{times}; yours is {g}."


register(Spec(name="fake_quant/value", summary="forward values of your fake_quant (the nudged range, half-up rounding)",
              cases=_fq_cases, run=lambda fn, case: _fq_run(fn, case, ("value",)),
              reference=NumpyReference("qat", "fake_quant_value"), describe=_fq_describe, explain=_fq_explain))
register(Spec(name="fake_quant/gradients", summary="gradients of your fake_quant with respect to x, min and max",
              cases=_fq_cases, run=lambda fn, case: _fq_run(fn, case, FQ_GRADIENTS),
              reference=NumpyReference("qat", "fake_quant_gradients"), describe=_fq_describe, explain=_fq_explain))
