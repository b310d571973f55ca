"""Specs for assignment 09 (integer inference of a quantized dense layer, as TFLite computes it).

``deploy/quantize_multiplier``
    ``quantize_multiplier(real) -> (multiplier, shift)``: TFLite's ``QuantizeMultiplier``,
    ``real ~= multiplier * 2**(shift - 31)`` with the mantissa ``round(q * 2**31)`` (``frexp``,
    halves away from zero), 1.0 carried into the shift, 0 below ``2**-32``.
``deploy/requantize``
    ``requantize(acc, multiplier, shift, zero_point) -> int8``: single rounding
    ``(acc * multiplier + 2**(30 - shift)) >> (31 - shift)`` (halves up), plus the zero point,
    clamped to -128..127.
``deploy/dense``
    ``int8_dense(x, x_zero_point, weights, bias, multiplier, shift, out_zero_point) -> int8``:
    ``(x - x_zero_point) @ weights + bias`` accumulated in int32, then the requantization.

The references are ``ste_utils.integer`` (pure NumPy, through ``ste_course.references.deploy``), run by the grader; the student's code runs
in the sandbox on the drawn integers only. Cases hold the places where bugs live: exact halves
(positive and negative), the carry of a mantissa that rounds to ``2**31``, multipliers too small
to keep, saturation at -128 and 127, zero, inputs at -128 (whose products overflow int8 and
int16), and zero points that must be subtracted before the product.
"""

from __future__ import annotations

import math

import numpy as np

from ste_course.specs.base import NumpyReference, Spec, register
from ste_course.specs.common import distinct, to_array


def _reference():
    """``ste_utils.integer`` (NumPy only), loaded without TensorFlow; the grader's side only."""
    from ste_course.references import ste_utils_module

    return ste_utils_module("integer")


# ----------------------------------------------------------------------------- shared comparison
def _exact(explain):
    """A ``Spec.compare``: the same dtype, the same shape and every element equal; the first
    wrong element explained by ``explain(case, output, index, expected, got)``."""

    def compare(case, expected, got):
        messages = []
        for name, exp in expected.items():
            exp = np.asarray(exp)
            values, dtype = got[name]
            if dtype != exp.dtype.name:
                messages.append(f"The {name} should have dtype {exp.dtype.name}; yours has {dtype}.")
                continue
            if tuple(values.shape) != exp.shape:
                messages.append(f"The {name} should have shape {exp.shape}; yours has {tuple(values.shape)}.")
                continue
            wrong = np.flatnonzero(values.ravel() != exp.astype(np.float64).ravel())
            if wrong.size:
                i = int(wrong[0])
                tail = f" ({wrong.size} of {exp.size} values differ)" if wrong.size > 1 else ""
                messages.append(explain(case, name, i, int(exp.ravel()[i]), float(values.ravel()[i])) + tail)
        return messages

    return compare


def _int(g: float) -> str:
    return f"{int(g)}" if float(g).is_integer() else distinct(g, g)[1]


# ----------------------------------------------------------------------------- quantize_multiplier
def _multiplier_cases(rng, hidden):
    ties = [(k + 0.5) / 2 ** 31 for k in (2 ** 30, 2 ** 30 + 12345, 2 ** 31 - 2)]  # mantissas ending in .5
    fixed = [0.5, 0.75, 0.25, 1.0, 1.5, 0.0, 1.0 - 2.0 ** -40, 2.0 ** -20, 0.00515457, 2.0 ** -33]
    if not hidden:
        return [{"real": np.array(fixed + ties[:1], np.float64)}]
    e = rng.integers(-12, 2, size=12)
    tie_m = [ties[int(rng.integers(len(ties)))] * 2.0 ** int(s) for s in rng.integers(-10, 1, size=3)]
    edges = [2.0 ** -31, 2.0 ** -32, np.nextafter(2.0 ** -32, 0.0), 1.0 - 2.0 ** -33, 2.0 ** int(rng.integers(-9, 2))]
    reals = np.concatenate([fixed, ties, tie_m, edges, rng.uniform(0.5, 1.0, 12) * 2.0 ** e.astype(float)])
    return [{"real": rng.permutation(reals)}]


def _multiplier_run(fn, case):
    mults, shifts = [], []
    for r in case["real"]:
        out = fn(float(r))
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"quantize_multiplier({float(r)!r}) must return a tuple (multiplier, shift); "
                            f"it returned {type(out).__name__}")
        for v, what in zip(out, ("multiplier", "shift")):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"quantize_multiplier({float(r)!r}) returned a {what} of type "
                                f"{type(v).__name__}; return Python ints")
        mults.append(int(out[0]))
        shifts.append(int(out[1]))
    return {"multiplier": np.array(mults, np.int64), "shift": np.array(shifts, np.int64)}


_multiplier_reference = NumpyReference("deploy", "multiplier")


def _multiplier_explain(case, output, index, expected, got):
    r = float(case["real"][index])
    ref = _multiplier_reference({"real": np.array([r])})
    m, e = int(ref["multiplier"][0]), int(ref["shift"][0])
    q, exponent = np.frexp(r)
    if m == 0:
        why = "a multiplier of 0, or below 2**-32, cannot be kept by a shift of at most 31: TFLite returns (0, 0)"
    else:
        why = (f"frexp gives q = {float(q)!r} and exponent {int(exponent)}; the mantissa is round(q * 2**31) = "
               f"round({float(q) * 2 ** 31!r}), halves away from zero")
        if np.floor(float(q) * 2 ** 31 + 0.5) == 2 ** 31:
            why += ", which reaches 2**31: halve it and add 1 to the shift"
    return (f"For real_multiplier = {r!r} the {output} should be {expected} ({why}); yours is {_int(got)}. "
            f"The expected pair is ({m}, {e}).")


register(Spec(name="deploy/quantize_multiplier",
              summary="your quantize_multiplier (TFLite's QuantizeMultiplier: mantissa and shift)",
              cases=_multiplier_cases, run=_multiplier_run, reference=_multiplier_reference,
              describe=lambda case: f"{len(case['real'])} real multipliers",
              compare=_exact(_multiplier_explain)))


# ----------------------------------------------------------------------------- requantize
def _tie_accumulators(rng, multiplier: int, shift: int, n: int) -> np.ndarray:
    """Accumulators whose product with M is exactly k + 1/2 (where such exist in int32)."""
    total = 31 - shift
    g = math.gcd(int(multiplier), 1 << total)
    half = 1 << (total - 1)
    if multiplier == 0 or half % g:
        return np.zeros(0, np.int64)
    # acc * m = half (mod 2**total): acc = (half / g) * inverse(m / g)  (mod 2**total / g)
    mod = (1 << total) // g
    base = (half // g) * pow(int(multiplier) // g, -1, mod) % mod if mod > 1 else 0
    acc = [base + int(k) * mod for k in rng.integers(-4, 4, size=n)]
    return np.array([a for a in acc if -(2 ** 31) <= a < 2 ** 31], np.int64)


def _requantize_case(rng, real, zero_point, n):
    integer = _reference()
    m, e = integer.quantize_multiplier(real)
    limit = min(2 ** 31 - 1, int(260 / real))  # accumulators up to about 2x the int8 range
    acc = rng.integers(-limit, limit, size=n).astype(np.int64)
    ties = _tie_accumulators(rng, m, e, 6)
    fixed = np.array([0, 1, -1, limit, -limit], np.int64)
    acc = rng.permutation(np.concatenate([fixed, ties, acc]))
    return {"acc": acc.astype(np.int32), "multiplier": int(m), "shift": int(e), "zero_point": int(zero_point)}


def _requantize_cases(rng, hidden):
    if not hidden:
        # M = 1/8: every acc that is 4 mod 8 is an exact half (acc = 20 -> 2.5 -> 3, -20 -> -2.5 -> -2)
        m, e = 2 ** 30, -2
        acc = np.array([0, 4, 12, 20, -4, -12, -20, 7, -7, 1016, 1020, 1100, -1030, -1040, -2000, 2 ** 31 - 1,
                        -(2 ** 31)], np.int32)
        return [{"acc": acc, "multiplier": m, "shift": e, "zero_point": 0},
                {"acc": acc, "multiplier": m, "shift": e, "zero_point": -128},
                _requantize_case(np.random.default_rng(1), 0.00515457, 5, 20)]
    reals = [float(rng.uniform(0.5, 1.0) * 2.0 ** int(s)) for s in rng.integers(-14, 1, size=3)]
    # multipliers with few significant bits, where exact halves exist among int32 accumulators
    reals += [(1 + int(a) / 8) * 2.0 ** -int(s) for a, s in zip(rng.integers(0, 8, 2), rng.integers(2, 9, 2))]
    reals.append(float(rng.uniform(1.0, 3.0)))  # a multiplier above 1: a left shift
    return [_requantize_case(rng, r, int(rng.integers(-128, 128)), 40) for r in reals]


def _requantize_run(fn, case):
    out = fn(np.array(case["acc"], copy=True), case["multiplier"], case["shift"], case["zero_point"])
    return {"output": to_array(out, "requantize(...)")}


_requantize_reference = NumpyReference("deploy", "requantize")


def _requantize_describe(case) -> str:
    return (f"{len(case['acc'])} accumulators with multiplier = {case['multiplier']}, shift = {case['shift']}, "
            f"zero_point = {case['zero_point']}")


def _rounding_story(acc: int, m: int, e: int, z: int) -> str:
    total = 31 - e
    exact = acc * m / 2.0 ** total
    rounded = (acc * m + (1 << (total - 1))) >> total
    half = (acc * m) % (1 << total) == 1 << (total - 1)
    why = (f"acc * M = {exact!r} is exactly half-way; TFLite's single rounding takes halves up "
           f"(toward +inf), to {rounded}" if half else f"acc * M = {exact:.6f} rounds to {rounded}")
    if rounded + z > 127 or rounded + z < -128:
        why += f"; plus the zero point {z} gives {rounded + z}, outside int8: clamp it to {127 if rounded + z > 0 else -128}"
    else:
        why += f"; plus the zero point {z}: {rounded + z}"
    return why


def _requantize_explain(case, output, index, expected, got):
    acc = int(case["acc"][index])
    story = _rounding_story(acc, case["multiplier"], case["shift"], case["zero_point"])
    return (f"For acc = {acc} ({_requantize_describe(case)}, M = multiplier * 2**(shift - 31)) the output "
            f"should be {expected}: {story}; yours is {_int(got)}.")


register(Spec(name="deploy/requantize",
              summary="your requantize (int32 accumulators to int8, fixed-point multiplier and shift)",
              cases=_requantize_cases, run=_requantize_run, reference=_requantize_reference,
              describe=_requantize_describe, compare=_exact(_requantize_explain)))


# ----------------------------------------------------------------------------- int8_dense
def _dense_case(rng, batch, n_in, n_out, x_zero_point, out_zero_point):
    integer = _reference()
    x = rng.integers(-128, 128, size=(batch, n_in)).astype(np.int8)
    x[0, :] = -128  # the most negative input: (x - z_x) * w leaves int8 and int16 alike
    x[-1, :] = 127
    w = rng.integers(-127, 128, size=(n_in, n_out)).astype(np.int8)
    w[:, 0] = 127
    bias = rng.integers(-20000, 20000, size=n_out).astype(np.int32)
    acc = (x.astype(np.int64) - x_zero_point) @ w.astype(np.int64) + bias
    spread = float(np.percentile(np.abs(acc - np.median(acc)), 80)) or 1.0
    m, e = integer.quantize_multiplier(100.0 / spread)  # most outputs inside int8, some saturated
    return {"x": x, "x_zero_point": int(x_zero_point), "weights": w, "bias": bias, "multiplier": int(m),
            "shift": int(e), "out_zero_point": int(out_zero_point)}


def _dense_cases(rng, hidden):
    if not hidden:
        return [_dense_case(np.random.default_rng(3), 4, 8, 3, -128, -5),
                _dense_case(np.random.default_rng(4), 3, 64, 10, 0, 20)]
    return [_dense_case(rng, int(rng.integers(2, 7)), int(n_in), int(rng.integers(1, 12)),
                        int(rng.integers(-128, 128)), int(rng.integers(-128, 128)))
            for n_in in (1, 17, 64, 200)]


def _dense_run(fn, case):
    out = fn(np.array(case["x"], copy=True), case["x_zero_point"], np.array(case["weights"], copy=True),
             np.array(case["bias"], copy=True), case["multiplier"], case["shift"], case["out_zero_point"])
    return {"output": to_array(out, "int8_dense(...)")}


_dense_reference = NumpyReference("deploy", "dense")


def _dense_describe(case) -> str:
    x, w = np.asarray(case["x"]), np.asarray(case["weights"])
    return (f"x of shape {x.shape} (x_zero_point = {case['x_zero_point']}), weights of shape {w.shape}, "
            f"multiplier = {case['multiplier']}, shift = {case['shift']}, out_zero_point = {case['out_zero_point']}")


def _dense_explain(case, output, index, expected, got):
    x, w = np.asarray(case["x"], np.int64), np.asarray(case["weights"], np.int64)
    i, j = divmod(index, w.shape[1])
    acc = int((x[i] - case["x_zero_point"]) @ w[:, j] + int(case["bias"][j]))
    wrapped = int(((x[i] - case["x_zero_point"]) * w[:, j]).astype(np.int8).astype(np.int64).sum())
    hint = (" Accumulate in int32 (or wider): the products of int8 values leave int8." if
            wrapped != acc - int(case["bias"][j]) else "")
    story = _rounding_story(acc, case["multiplier"], case["shift"], case["out_zero_point"])
    return (f"On {_dense_describe(case)}: output [{i}, {j}] should be {expected}. Its int32 accumulator is "
            f"sum_k (x[{i}, k] - x_zero_point) * weights[k, {j}] + bias[{j}] = {acc}; {story}; yours is "
            f"{_int(got)}.{hint}")


register(Spec(name="deploy/dense",
              summary="your int8_dense (int32 accumulation and requantization, as TFLite's FULLY_CONNECTED)",
              cases=_dense_cases, run=_dense_run, reference=_dense_reference, describe=_dense_describe,
              compare=_exact(_dense_explain)))
