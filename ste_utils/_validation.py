"""Argument checks shared by the public functions.

Every error names the argument and shows what was received, Keras style:
``ValueError("clip_value must be >= 0. Received: clip_value=-1")``.
"""

from __future__ import annotations

import math
import numbers

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
