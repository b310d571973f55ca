"""Integer-only inference of a quantized dense layer, as TensorFlow Lite's int8 kernels compute it.

Pure NumPy (no TensorFlow): the grader computes assignment 09's references with it, and chapter 9
checks it bit for bit against the LiteRT interpreter's reference kernels.

The scheme (Jacob et al., CVPR 2018, arXiv:1712.05877) represents a real tensor by int8 values
``q`` with a scale ``s`` and a zero point ``z``: ``r = s * (q - z)``. A dense layer
``y = x W + b`` then becomes, with int32 accumulation,

    acc_j = sum_i (q_x,i - z_x) * (q_W,ij - z_W)  +  q_b,j        q_b = round(b / (s_x s_W)), z_b = 0
    q_y,j = clamp(z_y + round(M * acc_j), -128, 127)              M = s_x s_W / s_y

and the one real number left, ``M``, is applied as an integer multiplication by a 31-bit
mantissa followed by a shift (:func:`quantize_multiplier`, :func:`multiply_by_quantized_multiplier`).
TFLite weights are symmetric (``z_W = 0``, levels -127..127: ``narrow_range``); activations are
asymmetric (any ``z`` in -128..127).

Rounding, exactly as TFLite's code (``tensorflow/lite/kernels/internal/common.h``):

* ``quantize_multiplier``: ``M = q * 2**shift`` with ``q`` in [0.5, 1) (``frexp``) and the
  mantissa ``round(q * 2**31)``, half away from zero (``std::round``);
* single rounding (``TFLITE_SINGLE_ROUNDING``, the build the LiteRT wheel runs):
  ``(x * multiplier + 2**(30 - shift)) >> (31 - shift)``, halves toward +inf;
* double rounding (gemmlowp's ``fixedpoint.h``, TFLite's other build):
  ``SaturatingRoundingDoublingHighMul(a, b)``: ``(a * b + nudge) / 2**31``, the division
  truncating toward zero, ``nudge = 2**30`` for ``a * b >= 0`` and ``1 - 2**30`` otherwise
  (so exact halves round up, toward +inf: -0.5 gives 0); ``a = b = -2**31`` saturates to
  ``2**31 - 1``;
* ``RoundingDivideByPOT(x, e)``: ``x / 2**e`` rounded to nearest, halves away from zero.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def _int_array(value, name: str, lo: int, hi: int) -> np.ndarray:
    """``value`` as an int64 array, refused when it is not integral or outside ``[lo, hi]``."""
    array = np.asarray(value)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers; got dtype {array.dtype}. Received: {name}={value!r:.80}")
    array = array.astype(np.int64)
    if array.size and (array.min() < lo or array.max() > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}]. Received: {name} in "
                         f"[{int(array.min())}, {int(array.max())}]")
    return array


def _int_scalar(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer. Received: {name}={value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}]. Received: {name}={value!r}")
    return int(value)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: a real factor as an int32 mantissa and a power of two.

    ``real_multiplier ~= multiplier * 2**(shift - 31)``, ``multiplier`` in [2**30, 2**31) (0 for 0).

    Args:
        real_multiplier: the factor ``M = s_x s_W / s_y``, finite and >= 0.

    Returns:
        ``(multiplier, shift)``: ints; ``shift`` > 0 is a left shift, < 0 a right shift.

    Example:
        >>> quantize_multiplier(0.5)
        (1073741824, 0)
        >>> quantize_multiplier(0.75)
        (1610612736, 0)
    """
    if isinstance(real_multiplier, (bool, np.bool_)) or not isinstance(real_multiplier, numbers.Real):
        raise TypeError(f"real_multiplier must be a number. Received: real_multiplier={real_multiplier!r}")
    m = float(real_multiplier)
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"real_multiplier must be finite and >= 0. Received: real_multiplier={real_multiplier!r}")
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)  # m = q * 2**shift, q in [0.5, 1)
    q_fixed = int(math.floor(q * 2.0 ** 31 + 0.5))  # std::round: q > 0, so half away from zero is half up
    if q_fixed == 2 ** 31:  # q rounded up to 1
        q_fixed //= 2
        shift += 1
    if shift < -31:  # below what a shift of an int32 can keep: the factor is 0
        return 0, 0
    if shift > 30:  # the single rounding's limit: saturate
        return INT32_MAX, 30
    return q_fixed, shift


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul``: ``round(a * b / 2**31)`` on int32.

    Halves round up (toward +inf); ``a = b = -2**31`` (the one overflow) gives ``2**31 - 1``.
    """
    a = _int_array(a, "a", INT32_MIN, INT32_MAX)
    b = _int_array(b, "b", INT32_MIN, INT32_MAX)
    ab = a * b  # |a * b| <= 2**62: exact in int64
    nudged = ab + np.where(ab >= 0, 2 ** 30, 1 - 2 ** 30)
    high = np.sign(nudged) * (np.abs(nudged) // 2 ** 31)  # C++ division: toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high).astype(np.int64)


def rounding_divide_by_pot(x, exponent: int) -> np.ndarray:
    """gemmlowp's ``RoundingDivideByPOT``: ``x / 2**exponent`` to nearest, halves away from zero."""
    x = _int_array(x, "x", INT32_MIN, INT32_MAX)
    exponent = _int_scalar(exponent, "exponent", 0, 31)
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier: int, shift: int, rounding: str = "single") -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier``: ``round(x * M)`` in integers, ``M`` as
    ``multiplier * 2**(shift - 31)``.

    ``rounding="single"`` (TFLite built with ``TFLITE_SINGLE_ROUNDING``, as the LiteRT and
    TensorFlow 2.21 wheels are: chapter 9 checks it against the interpreter): one 64-bit product
    and one rounding, halves up (toward +inf),

        (x * multiplier + 2**(30 - shift)) >> (31 - shift)        (arithmetic shift)

    ``rounding="double"`` (gemmlowp; TFLite's other build): ``x * 2**max(shift, 0)`` wrapping as
    int32, :func:`saturating_rounding_doubling_high_mul`, then :func:`rounding_divide_by_pot` by
    ``2**max(-shift, 0)``: two roundings (halves up, then halves away from zero), which can
    differ by one from the single rounding when the first rounding lands on a half.

    Args:
        x: int32 values (e.g. accumulators).
        multiplier, shift: from :func:`quantize_multiplier`.
        rounding: ``"single"`` or ``"double"``.

    Returns:
        int64 array of the rounded products, clamped to int32 (the caller adds the zero point).
    """
    multiplier = _int_scalar(multiplier, "multiplier", 0, INT32_MAX)
    shift = _int_scalar(shift, "shift", -31, 30)
    x = _int_array(x, "x", INT32_MIN, INT32_MAX)
    if rounding == "single":
        total = 31 - shift
        return np.clip((x * multiplier + (1 << (total - 1))) >> total, INT32_MIN, INT32_MAX)
    if rounding != "double":
        raise ValueError(f'rounding must be "single" or "double". Received: rounding={rounding!r}')
    left, right = max(shift, 0), max(-shift, 0)
    shifted = ((x << left) + 2 ** 31) % 2 ** 32 - 2 ** 31  # int32 wrap-around of the left shift
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def requantize(acc, multiplier: int, shift: int, zero_point: int,
               activation_min: int = INT8_MIN, activation_max: int = INT8_MAX, rounding: str = "single") -> np.ndarray:
    """int32 accumulators to int8 outputs: ``clamp(zero_point + round(acc * M), min, max)``.

    Args:
        acc: int32 accumulators.
        multiplier, shift: ``M`` from :func:`quantize_multiplier`.
        zero_point: the output's zero point, in -128..127.
        activation_min, activation_max: the clamp (a fused ReLU raises the minimum to ``zero_point``).
        rounding: as :func:`multiply_by_quantized_multiplier`.

    Returns:
        int8 array of ``acc``'s shape.
    """
    zero_point = _int_scalar(zero_point, "zero_point", INT8_MIN, INT8_MAX)
    lo = _int_scalar(activation_min, "activation_min", INT8_MIN, INT8_MAX)
    hi = _int_scalar(activation_max, "activation_max", lo, INT8_MAX)
    scaled = multiply_by_quantized_multiplier(acc, multiplier, shift, rounding) + zero_point
    return np.clip(scaled, lo, hi).astype(np.int8)


def int8_dense(x, x_zero_point: int, weights, bias, multiplier: int, shift: int, out_zero_point: int,
               activation_min: int = INT8_MIN, activation_max: int = INT8_MAX, rounding: str = "single") -> np.ndarray:
    """TFLite's int8 ``FULLY_CONNECTED`` (per-tensor, symmetric weights), in NumPy.

    ``acc = (x - x_zero_point) @ weights + bias`` in int32, then :func:`requantize`.

    Args:
        x: int8 inputs, shape (batch, n_in).
        x_zero_point: the inputs' zero point.
        weights: int8 weights, shape (n_in, n_out) (Keras's layout; TFLite stores the transpose).
        bias: int32 bias, shape (n_out,), on the scale ``s_x s_W`` (or None for none).
        multiplier, shift, out_zero_point, activation_min, activation_max, rounding: as :func:`requantize`.

    Returns:
        int8 outputs, shape (batch, n_out).

    Example:
        >>> m, e = quantize_multiplier(0.25)
        >>> int8_dense(np.array([[3, -1]], np.int8), -1, np.array([[2], [1]], np.int8),
        ...            np.array([1], np.int32), m, e, 0)
        array([[2]], dtype=int8)
    """
    x = _int_array(x, "x", INT8_MIN, INT8_MAX)
    w = _int_array(weights, "weights", -INT8_MAX, INT8_MAX)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"x must be (batch, n_in) and weights (n_in, n_out). "
                         f"Received: x.shape={x.shape}, weights.shape={w.shape}")
    b = np.zeros(w.shape[1], np.int64) if bias is None else _int_array(bias, "bias", INT32_MIN, INT32_MAX)
    if b.shape != (w.shape[1],):
        raise ValueError(f"bias must have shape ({w.shape[1]},). Received: bias.shape={b.shape}")
    x_zero_point = _int_scalar(x_zero_point, "x_zero_point", INT8_MIN, INT8_MAX)
    acc = (x - x_zero_point) @ w + b
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError(f"the int32 accumulator overflows: acc in [{acc.min()}, {acc.max()}]")
    return requantize(acc, multiplier, shift, out_zero_point, activation_min, activation_max, rounding)


def quantize_affine(r, scale: float, zero_point: int, narrow_range: bool = False) -> np.ndarray:
    """Real values to int8: ``clamp(round(r / scale) + zero_point)``, halves away from zero.

    As TFLite's ``QUANTIZE``: the division in float32 (``val / scale``), then ``std::round``;
    ``narrow_range`` keeps -127..127 (symmetric weights). The float32 division matters: the
    pixel 8/16 on the grid of 1/255 is 127.5 in float32 (level 128) but 127.499997 in float64.
    """
    if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0. Received: scale={scale!r}")
    zero_point = _int_scalar(zero_point, "zero_point", INT8_MIN, INT8_MAX)
    v = (np.asarray(r, np.float32) / np.float32(scale)).astype(np.float64)
    rounded = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return np.clip(rounded + zero_point, INT8_MIN + int(narrow_range), INT8_MAX).astype(np.int8)


def dequantize(q, scale: float, zero_point: int) -> np.ndarray:
    """int8 values to reals: ``scale * (q - zero_point)`` (float64)."""
    return float(scale) * (_int_array(q, "q", INT8_MIN, INT8_MAX) - int(zero_point)).astype(np.float64)


__all__ = ["quantize_multiplier", "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot",
           "multiply_by_quantized_multiplier", "requantize", "int8_dense", "quantize_affine", "dequantize"]
