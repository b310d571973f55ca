"""Argument checks shared by the public functions.

Every error names the argument and shows what was received, Keras style:
``ValueError("clip_value must be >= 0. Received: clip_value=-1")``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import tensorflow as tf

#: Largest bit width whose integer levels 0 .. 2**bits - 1 a float dtype holds exactly
#: (its significand precision: 11 bits for float16, 8 for bfloat16, 24 for float32, 53 for float64).
EXACT_LEVEL_BITS = {tf.float16: 11, tf.bfloat16: 8, tf.float32: 24, tf.float64: 53}


def as_float_tensor(value, name: str) -> tf.Tensor:
    """Convert ``value`` to a tensor and require a floating-point dtype."""
    try:
        tensor = tf.convert_to_tensor(value)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a floating-point tensor or array. Received: {name}={value!r}"
        ) from err
    if not tensor.dtype.is_floating:
        raise TypeError(
            f"{name} must have a floating-point dtype (float16, bfloat16, float32 or float64); "
            f"gradients do not flow through integers. Received: {name}.dtype={tensor.dtype.name}"
        )
    return tensor


def check_clip_value(clip_value):
    """``clip_value`` is ``None`` (no clipping) or a finite real number >= 0."""
    if clip_value is None:
        return None
    if isinstance(clip_value, bool) or not isinstance(clip_value, numbers.Real):
        raise TypeError(
            f"clip_value must be a number >= 0 or None. Received: clip_value={clip_value!r}"
        )
    if math.isnan(clip_value) or clip_value < 0:
        raise ValueError(f"clip_value must be >= 0. Received: clip_value={clip_value!r}")
    return float(clip_value)


def check_bits(bits, dtype: tf.DType) -> int:
    """``bits`` is an integer in 1..16 that ``dtype`` can represent level by level."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"bits must be an integer from 1 to 16. Received: bits={bits!r}")
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be from 1 to 16. Received: bits={bits!r}")
    limit = EXACT_LEVEL_BITS[dtype]
    if bits > limit:
        raise ValueError(
            f"bits={bits} needs {bits} bits of integer precision but {dtype.name} has {limit}; "
            f"use float32 or wider. Received: bits={bits}, x.dtype={dtype.name}"
        )
    return int(bits)


def check_axis(axis, rank, name: str = "axis") -> int:
    """``axis`` is an int in [-rank, rank) when the rank is known."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an integer. Received: {name}={axis!r}")
    if rank is not None and not -rank <= axis < rank:
        raise ValueError(
            f"{name} must be in [-{rank}, {rank}) for a tensor of rank {rank}. "
            f"Received: {name}={axis}"
        )
    return int(axis)


def _shown(array) -> str:
    """A received value, short: a scalar itself, an array's first few entries."""
    return repr(array.item()) if array.ndim == 0 else np.array2string(array.ravel()[:6], separator=", ")


def check_positive_parameter(value, name: str, x: tf.Tensor, positive: bool = True) -> tf.Tensor:
    """A scale parameter (LSQ's step, PACT's alpha) as a tensor in the dtype of ``x``.

    ``positive=False`` (LSQ+'s offset) asks only for finite values.

    A Python or NumPy number becomes the float of x's dtype nearest to it (NumPy's rounding, as
    the clip windows); a tensor or variable must already have x's dtype. Its shape must
    broadcast to x's without enlarging it (a scalar, or e.g. one value per channel). When its
    value is known (eager execution) it must be finite and > 0; inside ``tf.function`` it is not
    checked.
    """
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a {'positive ' if positive else ''}number or a floating-point "
                        f"tensor. Received: {name}={value!r}")
    if isinstance(value, (numbers.Real, np.ndarray, np.generic)):
        array = np.asarray(value)
        if not (array.dtype.kind == "f" or array.dtype.kind in "iu"):
            raise TypeError(f"{name} must be a positive number or a floating-point tensor. "
                            f"Received: {name}={value!r}")
        tensor = tf.constant(array.astype(x.dtype.as_numpy_dtype))
    else:
        tensor = as_float_tensor(value, name)
        if tensor.dtype != x.dtype:
            raise TypeError(f"{name} must have the dtype of x. "
                            f"Received: {name}.dtype={tensor.dtype.name}, x.dtype={x.dtype.name}")
    try:
        broadcast = tf.broadcast_static_shape(x.shape, tensor.shape)
    except ValueError:
        broadcast = None
    if broadcast is None or (x.shape.rank is not None and tensor.shape.rank is not None
                             and tensor.shape.rank > x.shape.rank) or (
            broadcast.is_fully_defined() and x.shape.is_fully_defined() and broadcast != x.shape):
        raise ValueError(f"{name} must broadcast to the shape of x without enlarging it. "
                         f"Received: {name}.shape={tensor.shape}, x.shape={x.shape}")
    if tf.executing_eagerly() and hasattr(tensor, "numpy"):
        array = tensor.numpy().astype(np.float64)
        bad = ~(np.isfinite(array) & ((array > 0) | (not positive)))
        if bad.any():
            raise ValueError(f"{name} must be finite{' and > 0' if positive else ''}. Received: {name}="
                             f"{_shown(array if array.ndim == 0 else array[bad])}")
    return tensor


def check_grad_scale(grad_scale) -> float:
    """``grad_scale`` is a finite real number > 0."""
    if isinstance(grad_scale, bool) or not isinstance(grad_scale, numbers.Real):
        raise TypeError(f"grad_scale must be a number > 0. Received: grad_scale={grad_scale!r}")
    if not (math.isfinite(grad_scale) and grad_scale > 0):
        raise ValueError(f"grad_scale must be finite and > 0. Received: grad_scale={grad_scale!r}")
    return float(grad_scale)
