"""Quantizers with straight-through gradients, built on ``tf.custom_gradient``.

Each ``ste_*`` function returns the quantized value exactly in the forward pass and replaces the
quantizer's derivative (0 almost everywhere) by a pass-through in the backward pass. The plain
forward functions (``binarize``, ``heaviside``, ``quantize``, ``one_hot_argmax``) are exported
too: they are what the course shows failing to train.

All functions accept tensors of any shape, keep the input's floating-point dtype, and run
eagerly, inside ``tf.function`` and with ``jit_compile=True``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ste_utils._validation import as_float_tensor, check_axis, check_bits, check_clip_value
from ste_utils.proxies import pass_where


# ---------------------------------------------------------------- forward functions (no STE)
def binarize(x):
    """+1 for x >= 0, -1 otherwise (unlike ``tf.sign``, which maps 0 to 0).

    Scalar branches broadcast in ``tf.where``: two full-size ``ones_like`` tensors per call
    cost about 3 % of a binary MLP's training step (``bench/ste_overhead.py``).
    """
    x = as_float_tensor(x, "x")
    return tf.where(x >= 0, tf.constant(1, x.dtype), tf.constant(-1, x.dtype))


def heaviside(x):
    """1 for x > 0, 0 otherwise."""
    x = as_float_tensor(x, "x")
    return tf.cast(x > 0, x.dtype)


def _level_table(bits: int, dtype: tf.DType) -> tf.Tensor:
    """The levels i / n, i = 0..n, each the float of ``dtype`` nearest to the exact quotient.

    Divided in float64 by NumPy and rounded once to ``dtype``: n < 2**16, so no i / n lies
    within float64's rounding error of a midpoint between two floats of a narrower dtype.
    """
    n = 2 ** bits - 1
    return tf.constant((np.arange(n + 1, dtype=np.float64) / n).astype(dtype.as_numpy_dtype))


def quantize(x, bits: int):
    """k-bit uniform quantizer on [0, 1]: round(clip(x, 0, 1) * n) / n with n = 2**bits - 1.

    The integer level i = round(clip(x, 0, 1) * n) (half to even, product in the dtype of
    ``x``) indexes a table of the correctly rounded quotients i / n rather than dividing in the
    graph: Grappler (``tf.function``) and XLA rewrite a division by the constant n into a
    multiplication by 1/n, which is off by one unit in the last place for some levels (e.g.
    9/15 in float16), so the three execution modes would disagree. NaN stays NaN.
    """
    x = as_float_tensor(x, "x")
    bits = check_bits(bits, x.dtype)
    n = 2 ** bits - 1
    clipped = tf.clip_by_value(x, tf.zeros_like(x), tf.ones_like(x))
    index = tf.clip_by_value(tf.cast(tf.round(clipped * n), tf.int32), 0, n)
    levels = tf.gather(_level_table(bits, x.dtype), index)
    return tf.where(tf.math.is_nan(x), x, levels)


def one_hot_argmax(logits, axis: int = -1):
    """One-hot of the largest entry along ``axis``; ties go to the lowest index.

    ``tf.math.argmax`` (TF 2) documents that ties return the smallest index, while
    ``tf.compat.v1.argmax`` and the raw ``ArgMax`` op say the index on ties is not guaranteed;
    the rule is made explicit here, without relying on either: among equal maxima the first
    one wins. A slice containing NaN has no maximum that compares equal and maps to all zeros.
    """
    logits = as_float_tensor(logits, "logits")
    axis = check_axis(axis, logits.shape.rank)
    is_max = logits >= tf.reduce_max(logits, axis=axis, keepdims=True)
    first = tf.cumsum(tf.cast(is_max, tf.int32), axis=axis) == 1
    return tf.cast(is_max & first, logits.dtype)


def _clip_window(x, clip_value):
    """The boolean window |x| <= c, c the float of x's dtype nearest to ``clip_value`` (NumPy's
    rounding); None when ``clip_value`` is None (no window).

    Not ``tf.cast(clip_value, x.dtype)``: that makes a float32 constant first, so a float64
    x = 0.7 would be compared with 0.699999988 and the boundary x = clip_value left out.
    """
    if clip_value is None:
        return None
    c = tf.constant(np.asarray(clip_value, dtype=x.dtype.as_numpy_dtype))
    return tf.abs(x) <= c


# ---------------------------------------------------------------- straight-through quantizers
def ste_sign(x, clip_value=1.0):
    """Sign with a straight-through gradient clipped to |x| <= clip_value.

    Forward:  q(x) = +1 if x >= 0 else -1         (so q(0) = +1; note tf.sign(0) = 0)
    Backward: dq/dx := 1{|x| <= clip_value}        (boundary included; Hubara et al., 2016,
                                                    arXiv:1602.02830; Larq's ste_sign)
              clip_value=None gives dq/dx := 1. The window compares |x| with clip_value
              rounded to x's dtype (so a float64 x = 0.7 lies inside clip_value=0.7).
              TensorFlow's CPU kernels flush subnormal x to 0, so ste_sign(-1e-45) is +1.
              The window is a select: outside it the gradient is 0 even for an infinite or
              NaN upstream gradient (a product with a 0/1 mask would give NaN).

    Args:
        x: floating-point tensor of any shape.
        clip_value: float >= 0 or None.

    Returns:
        Tensor of +-1 in the dtype of ``x``.

    Example:
        >>> ste_sign(tf.constant([-2.0, 0.0, 0.5])).numpy()
        array([-1.,  1.,  1.], dtype=float32)
    """
    x = as_float_tensor(x, "x")
    clip_value = check_clip_value(clip_value)

    @tf.custom_gradient
    def _ste_sign(x):
        return binarize(x), lambda upstream: pass_where(_clip_window(x, clip_value), upstream)

    return _ste_sign(x)


def ste_heaviside(x, clip_value=1.0):
    """Heaviside step with a straight-through gradient clipped to |x| <= clip_value.

    Forward:  q(x) = 1{x > 0}
    Backward: dq/dx := 1{|x| <= clip_value}   (clip_value=None: 1)
    """
    x = as_float_tensor(x, "x")
    clip_value = check_clip_value(clip_value)

    @tf.custom_gradient
    def _ste_heaviside(x):
        return heaviside(x), lambda upstream: pass_where(_clip_window(x, clip_value), upstream)

    return _ste_heaviside(x)


def ste_round(x):
    """Round half to even (as ``tf.round``) with the identity gradient.

    Forward:  q(x) = round(x), ties to even: round(0.5) = 0, round(1.5) = 2
    Backward: dq/dx := 1   (Bengio et al., 2013, arXiv:1308.3432)
    """
    x = as_float_tensor(x, "x")

    @tf.custom_gradient
    def _ste_round(x):
        return tf.round(x), lambda upstream: upstream

    return _ste_round(x)


def ste_quantize(x, bits: int):
    """k-bit activation quantizer on [0, 1] with a clipped straight-through gradient (DoReFa-Net).

    Forward:  q(x) = round(clip(x, 0, 1) * n) / n,   n = 2**bits - 1
    Backward: dq/dx := 1{0 <= x <= 1}   (edges included; Zhou et al., 2016, arXiv:1606.06160)

    Exact levels: the integers 0..n must be exact in the dtype, so bits <= 11 for float16,
    <= 8 for bfloat16 and any of 1..16 for float32 and float64; a wider request raises.
    Each level i/n is then the correctly rounded float nearest to i/n.

    Args:
        x: floating-point tensor of any shape.
        bits: integer from 1 to 16.
    """
    x = as_float_tensor(x, "x")
    check_bits(bits, x.dtype)

    @tf.custom_gradient
    def _ste_quantize(x):
        inside = (x >= 0) & (x <= 1)
        return quantize(x, bits), lambda upstream: pass_where(inside, upstream)

    return _ste_quantize(x)


def ste_argmax(logits, axis: int = -1):
    """One-hot argmax forward, softmax gradient backward.

    Forward:  y = one_hot(argmax(logits)) along ``axis`` (ties: lowest index, see
              :func:`one_hot_argmax`)
    Backward: dL/dlogits := J_softmax^T g = s * (g - sum(g * s)),  s = softmax(logits),
              g the upstream gradient, the sum taken along ``axis``.
    """
    logits = as_float_tensor(logits, "logits")
    axis = check_axis(axis, logits.shape.rank)

    @tf.custom_gradient
    def _ste_argmax(logits):
        def grad(upstream):
            s = tf.nn.softmax(logits, axis=axis)
            return s * (upstream - tf.reduce_sum(upstream * s, axis=axis, keepdims=True))
        return one_hot_argmax(logits, axis), grad

    return _ste_argmax(logits)


__all__ = [
    "binarize", "heaviside", "quantize", "one_hot_argmax",
    "ste_sign", "ste_heaviside", "ste_round", "ste_quantize", "ste_argmax",
]
