"""References of assignment 07's specs (LSQ, PACT, fake quantization), in NumPy.

Each function takes a case of :mod:`ste_course.specs.qat` and returns what the checked
implementation gives in TensorFlow, in the case's dtypes and shapes:

* ``lsq_*``: ``ste_utils.lsq_quantize``, step for step in x's dtype (x / s, tf.round's half to
  even, the clip, the products); every step, grad scale and upstream gradient of the cases is a
  power of two, so each step is exact and the result is TensorFlow's bit for bit;
* ``pact``: ``ste_utils.pact_quantize``, ``quantize(x / alpha, bits) * alpha`` and two selects;
* ``fake_quant_*``: TensorFlow's ``FakeQuantWithMinMaxVars`` op and its gradient op, as their
  kernel (``tensorflow/core/kernels/fake_quant_ops_functor.h``, TensorFlow 2.21: the zero
  point subtracted before the rounding, no nudged min added after it) computes them in float32.
"""

from __future__ import annotations

import numpy as np

from ste_course.references.eigen import eigen_sum
from ste_course.references.elementwise import as_tensorflow_sees, pass_where, quantize


# ----------------------------------------------------------------------------- LSQ
def lsq_levels(bits: int, signed: bool) -> tuple:
    """LSQ's (Q_N, Q_P): (2**(b-1), 2**(b-1) - 1) signed, (0, 2**b - 1) unsigned."""
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def _lsq_v(case):
    """(x, v = x / s in x's dtype, the bounds -Q_N and Q_P in x's dtype)."""
    x = as_tensorflow_sees(case["x"])
    q_n, q_p = lsq_levels(case["bits"], case["signed"])
    return x, x / np.asarray(case["step"], x.dtype), x.dtype.type(-q_n), x.dtype.type(q_p)


def lsq_value(case) -> dict:
    """``lsq_quantize`` forward: q = clip(round(x / s), -Q_N, Q_P) * s (round half to even)."""
    x, v, low, high = _lsq_v(case)
    return {"value": (np.clip(np.round(v), low, high) * np.asarray(case["step"], x.dtype)).astype(x.dtype)}


def lsq_x_gradient(case) -> dict:
    """``lsq_quantize`` backward to x: dL/dx = u * 1{-Q_N <= x/s <= Q_P} (bounds included, a select)."""
    _, v, low, high = _lsq_v(case)
    return {"x_gradient": pass_where((v >= low) & (v <= high), case["upstream"])}


def lsq_step_gradient(case) -> dict:
    """``lsq_quantize`` backward to s (LSQ's eq. 3, bounds inside the range):
    dL/ds = g * sum(u * d), d = -Q_N below the range, Q_P above, round(v) - v inside; u * d is
    0 where d = 0 (``multiply_no_nan``); summed over the elements for a shared (scalar) step, in
    the order of TensorFlow's ``reduce_sum`` (:func:`ste_course.references.eigen.eigen_sum`)."""
    x, v, low, high = _lsq_v(case)
    u = np.asarray(case["upstream"], x.dtype)
    d = np.where(v < low, low, np.where(v > high, high, np.round(v) - v))
    grad = np.where(d == 0, x.dtype.type(0), u * d)
    step = np.asarray(case["step"])
    if step.shape != grad.shape:  # one step shared by every element
        grad = np.asarray(eigen_sum(grad))
    return {"step_gradient": (grad * np.asarray(case["grad_scale"], x.dtype)).astype(x.dtype)}


# ----------------------------------------------------------------------------- PACT
def pact(case) -> dict:
    """``pact_quantize``: y = quantize(x / alpha, bits) * alpha (levels i / n, half to even);
    dy/dx = 1{0 <= x < alpha}, dy/dalpha = 1{x >= alpha} (selects; alpha one copy per element)."""
    x = as_tensorflow_sees(case["x"])
    alpha = np.asarray(case["alpha"], x.dtype)
    u = case["upstream"]
    return {"value": quantize(x / alpha, case["bits"]) * alpha,
            "x_gradient": pass_where((x >= 0) & (x < alpha), u),
            "alpha_gradient": pass_where(x >= alpha, u)}


# ----------------------------------------------------------------------------- fake quantization
def std_round(value: np.float32) -> np.float32:
    """C's ``std::round``: half away from zero, exact for every float (not floor(x + 0.5),
    which rounds 0.49999997 up in float32)."""
    whole = np.trunc(value)
    return np.float32(whole + np.sign(value)) if abs(value - whole) >= 0.5 else np.float32(whole)


def nudge(lo, hi, bits: int, narrow_range: bool) -> tuple:
    """TensorFlow's ``Nudge`` in float32: (nudged min, nudged max, scale, inverse scale).

    scale = (max - min) / (q_max - q_min) and its inverse (q_max - q_min) / (max - min), each
    divided once; zero point q_min - min / scale, clamped to [q_min, q_max] and else rounded half
    away from zero; nudged min and max = (q_min - z) * scale and (q_max - z) * scale, with
    q_min = 1 under ``narrow_range`` (else 0) and q_max = 2**bits - 1.
    """
    f = np.float32
    q_min, q_max = f(1 if narrow_range else 0), f(2 ** bits - 1)
    scale = (f(hi) - f(lo)) / (q_max - q_min)
    inverse = (q_max - q_min) / (f(hi) - f(lo))
    zero_from_min = q_min - f(lo) / scale
    zero = q_min if zero_from_min < q_min else q_max if zero_from_min > q_max else std_round(zero_from_min)
    return (q_min - zero) * scale, (q_max - zero) * scale, scale, inverse


def _fq(case):
    """(x as float32, the range is [0, 0], nudged min, nudged max, scale, inverse scale)."""
    x = as_tensorflow_sees(np.asarray(case["x"], np.float32))
    empty = float(case["min"]) == 0 and float(case["max"]) == 0
    return (x, empty, *nudge(case["min"], case["max"], case["bits"], case["narrow_range"]))


def fake_quant_value(case) -> dict:
    """``fake_quant_with_min_max_vars`` forward, in float32 step for step as its kernel:
    c = min(max(x, nudged min), nudged max) - nudged min, z = floor(-nudged min * inverse + 1/2)
    and y = floor(c / scale - z + 1/2) * scale (0 everywhere when min = max = 0)."""
    x, empty, n_lo, n_hi, scale, inverse = _fq(case)
    if empty:
        return {"value": np.zeros_like(x)}
    half = np.float32(0.5)
    quant_zero = np.floor(-n_lo * inverse + half)
    shifted = np.maximum(np.minimum(x, n_hi), n_lo) - n_lo
    return {"value": (np.floor(shifted / scale - quant_zero + half) * scale).astype(np.float32)}


def fake_quant_gradients(case) -> dict:
    """``fake_quant_with_min_max_vars`` backward: dL/dx = u * 1{nudged min <= x <= nudged max};
    dL/dmin and dL/dmax the sums of u over the inputs below the nudged min and above the nudged
    max, in the order of TensorFlow's sum (:func:`ste_course.references.eigen.eigen_sum`); when
    min = max = 0, u itself to x and 0 to both."""
    x, empty, n_lo, n_hi, _, _ = _fq(case)
    u = np.asarray(case["upstream"], np.float32)
    zero = np.float32(0)
    if empty:
        return {"x_gradient": u.copy(), "min_gradient": np.asarray(zero), "max_gradient": np.asarray(zero)}
    return {"x_gradient": u * ((x >= n_lo) & (x <= n_hi)).astype(np.float32),
            "min_gradient": np.asarray(eigen_sum(u * (x < n_lo).astype(np.float32))),
            "max_gradient": np.asarray(eigen_sum(u * (x > n_hi).astype(np.float32)))}
