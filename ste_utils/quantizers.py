"""Quantizers with straight-through gradients, built on ``tf.custom_gradient``.

Each ``ste_*`` function returns the quantized value exactly in the forward pass and replaces the
quantizer's derivative (0 almost everywhere) by a pass-through in the backward pass. The plain
forward functions (``binarize``, ``heaviside``, ``quantize``, ``one_hot_argmax``) are exported
too: they are what the course shows failing to train.

All functions accept tensors of any shape, keep the input's floating-point dtype, and run
eagerly, inside ``tf.function`` and with ``jit_compile=True``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import tensorflow as tf

from ste_utils._validation import (
    as_float_tensor, check_axis, check_bits, check_clip_value, check_grad_scale,
    check_positive_parameter,
)
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


# ---------------------------------------------------------------- learned scales: LSQ, LSQ+, PACT; DoReFa
def lsq_levels(bits: int, signed: bool = True) -> tuple[int, int]:
    """LSQ's integer range (Q_N, Q_P): levels -Q_N .. Q_P.

    signed:   Q_N = 2**(bits-1), Q_P = 2**(bits-1) - 1   (bits >= 2: one bit gives Q_P = 0)
    unsigned: Q_N = 0,           Q_P = 2**bits - 1
    """
    if not isinstance(signed, (bool, np.bool_)):
        raise TypeError(f"signed must be True or False. Received: signed={signed!r}")
    bits = check_bits(bits, tf.float64)
    if signed and bits < 2:
        raise ValueError("signed LSQ needs bits >= 2 (bits=1 leaves Q_P = 2**0 - 1 = 0). "
                         f"Received: bits={bits}, signed=True")
    if signed:
        return 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def lsq_grad_scale(num_elements: int, bits: int, signed: bool = True) -> float:
    """LSQ's step-size gradient scale g = 1 / sqrt(N * Q_P) (Esser et al., 2020, section 2.2).

    N is the number of weights of the layer (for a weight quantizer) or of features per example
    (for an activation quantizer); Q_P as in :func:`lsq_levels`.

    Example:
        >>> lsq_grad_scale(64, 4)    # 1 / sqrt(64 * 7)
        0.0472455591261534
    """
    if isinstance(num_elements, bool) or not isinstance(num_elements, numbers.Integral):
        raise TypeError(f"num_elements must be a positive integer. Received: num_elements={num_elements!r}")
    if num_elements < 1:
        raise ValueError(f"num_elements must be >= 1. Received: num_elements={num_elements!r}")
    _, q_p = lsq_levels(bits, signed)
    return 1.0 / math.sqrt(int(num_elements) * q_p)


def _sum_to_shape(gradient, x, parameter):
    """Sum an elementwise gradient over the axes along which ``parameter`` was broadcast to x."""
    _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(x), s1=tf.shape(parameter))
    return tf.reshape(tf.reduce_sum(gradient, axis=axes), tf.shape(parameter))


def lsq_quantize(x, step, bits: int, signed: bool = True, grad_scale: float = 1.0):
    """Learned step size quantization, LSQ (Esser et al., ICLR 2020, arXiv:1902.08153).

    Forward:  q = clip(round(x / s), -Q_N, Q_P) * s     (round half to even, as tf.round)
              with (Q_N, Q_P) = (2**(b-1), 2**(b-1) - 1) signed, (0, 2**b - 1) unsigned.
    Backward: with v = x / s (computed in x's dtype) and g = grad_scale,
              dq/dx := 1{-Q_N <= v <= Q_P}                              (the STE, on round only)
              dq/ds := g * (round(v) - v)   if -Q_N <= v <= Q_P         (the paper's eq. 3)
                       g * (-Q_N)           if v < -Q_N
                       g * Q_P              if v > Q_P
              summed over the axes along which ``step`` was broadcast: dL/ds = sum(u * d) * g,
              d the bracket above and u the upstream gradient. Zeros are selects: outside the
              window dL/dx = 0, and where d = 0 (v an integer) u * d = 0, even for an infinite
              or NaN u (``tf.math.multiply_no_nan``, which also keeps Grappler from reordering
              the products, so every mode rounds alike).

    These are the gradients autodiff gives for ``s * ste_round(clip(x / s, -Q_N, Q_P))`` (the
    STE on the rounding only; ``tf.clip_by_value`` includes its bounds), written out so they
    hold exactly, not up to the rounding of autodiff's (u * s) / s. The grad scale changes the
    gradient of s only, as ``s * g + stop_gradient(s - s * g)`` would. Boundary convention: at
    v = -Q_N and v = Q_P exactly, dq/dx = 1 and dq/ds = round(v) - v = 0 (autodiff's values);
    the paper writes its windows with strict inequalities (-Q_N < v < Q_P), giving dq/dx = 0
    and dq/ds = -Q_N or Q_P at those two points only.

    Inside ``tf.function`` a constant step (a Python number) lets Grappler and XLA replace x / s
    by x * (1 / s), which can move v by one unit in the last place and flip a half-way
    rounding: pass a tensor or variable for bit-identical results in every mode.

    Args:
        x: floating-point tensor.
        step: the step size s > 0: a number, or a tensor/variable of x's dtype that broadcasts
            to x (a scalar, or one step per channel). Checked > 0 when eager.
        bits: integer bit width (2..16 signed, 1..16 unsigned; float16 <= 11, bfloat16 <= 8).
        signed: levels -Q_N..Q_P (True) or 0..Q_P (False).
        grad_scale: g > 0, e.g. :func:`lsq_grad_scale` (the paper's 1 / sqrt(N * Q_P)).

    Returns:
        The quantized tensor, in x's dtype and shape.

    Example:
        >>> lsq_quantize(tf.constant([-3.0, 0.4, 0.6, 9.0]), 0.5, bits=3).numpy()
        array([-2. ,  0.5,  0.5,  1.5], dtype=float32)
    """
    x = as_float_tensor(x, "x")
    check_bits(bits, x.dtype)
    step = check_positive_parameter(step, "step", x)
    return _learned_grid(x, step, None, lsq_levels(bits, signed), check_grad_scale(grad_scale))


def _learned_grid(x, step, offset, levels, g):
    """LSQ (``offset`` None) and LSQ+ (an offset tensor): the forward pass and the gradients of
    the STE on the rounding only, v = (x - offset) / s; see :func:`lsq_quantize`."""
    q_n, q_p = levels
    low, high = tf.constant(-q_n, x.dtype), tf.constant(q_p, x.dtype)
    scale = tf.constant(np.asarray(g, x.dtype.as_numpy_dtype))

    def forward_and_grad(x, s, b):
        v = x / s if b is None else (x - b) / s
        level = tf.clip_by_value(tf.round(v), low, high)

        def grad(upstream):
            inside = (v >= low) & (v <= high)
            d_step = tf.where(v < low, low, tf.where(v > high, high, tf.round(v) - v))
            grads = (pass_where(inside, upstream),
                     _sum_to_shape(tf.math.multiply_no_nan(upstream, d_step), x, s) * scale)
            if b is None:
                return grads
            return grads + (_sum_to_shape(pass_where(~inside, upstream), x, b) * scale,)

        return (level * s if b is None else level * s + b), grad

    if offset is None:
        return tf.custom_gradient(lambda x, s: forward_and_grad(x, s, None))(x, step)
    return tf.custom_gradient(forward_and_grad)(x, step, offset)


def lsq_plus_quantize(x, step, offset, bits: int, signed: bool = False, grad_scale: float = 1.0):
    """LSQ+: LSQ with a learned offset, for asymmetric activations (Bhalgat et al., CVPR
    Workshops 2020, arXiv:2004.09576).

    Forward:  q = clip(round((x - beta) / s), -Q_N, Q_P) * s + beta   (round half to even)
              with (Q_N, Q_P) as :func:`lsq_levels` (unsigned by default: levels 0..2**b - 1,
              shifted by beta, so a Swish output's negative part keeps levels of its own).
    Backward: the STE on the rounding only, as in :func:`lsq_quantize`, with v = (x - beta) / s:
              dq/dx    := 1{-Q_N <= v <= Q_P}
              dq/ds    := round(v) - v inside, -Q_N below, Q_P above     (times g)
              dq/dbeta := 1 - 1{-Q_N <= v <= Q_P}                       (times g)
              Inside the range beta cancels (s * (-1/s) + 1 = 0); where x is clipped the output
              is a fixed level plus beta. Both parameter gradients are summed over the axes
              along which ``step`` and ``offset`` were broadcast; the bounds are inside the range
              (autodiff's convention, as :func:`lsq_quantize`). The grad scale g multiplies the
              gradients of s and of beta here (LSQ's 1 / sqrt(N Q_P) is the usual choice).

    The gradients are what autodiff gives for
    ``s * ste_round(clip((x - beta) / s, -Q_N, Q_P)) + beta``, written out exactly.

    Args:
        x: floating-point tensor.
        step: s > 0, a number or a tensor/variable of x's dtype broadcasting to x.
        offset: beta, any finite number or tensor/variable of x's dtype broadcasting to x.
        bits: integer bit width (as :func:`lsq_quantize`).
        signed: levels -Q_N..Q_P (True) or 0..Q_P (False, the default: LSQ+'s activations).
        grad_scale: g > 0.

    Returns:
        The quantized tensor, in x's dtype and shape.

    Example:
        >>> lsq_plus_quantize(tf.constant([-1.0, -0.2, 0.3, 9.0]), 0.5, -0.25, bits=2).numpy()
        array([-0.25, -0.25,  0.25,  1.25], dtype=float32)
    """
    x = as_float_tensor(x, "x")
    check_bits(bits, x.dtype)
    step = check_positive_parameter(step, "step", x)
    offset = check_positive_parameter(offset, "offset", x, positive=False)
    return _learned_grid(x, step, offset, lsq_levels(bits, signed), check_grad_scale(grad_scale))


def dorefa_weight_quantize(w, bits: int):
    """DoReFa-Net's k-bit weight quantizer (Zhou et al., 2016, arXiv:1606.06160).

    Forward:  t = tanh(w),  m = max |t| over the whole tensor,  u = t / (2 m) + 1/2  in [0, 1],
              w_q = 2 * quantize_k(u) - 1,  quantize_k(u) = round(u * n) / n,  n = 2**k - 1,
              so the levels are -1, -1 + 2/n, ..., 1 and the largest |w| maps to +-1.
    Backward: the STE on quantize_k only (u lies in [0, 1], so :func:`ste_quantize`'s window
              passes everything): autodiff differentiates tanh, the division and the max, as
              the authors' code (tensorpack, ``examples/DoReFa-Net/dorefa.py``) does:
              dw_q,i/dw_j = (1 - t_j**2) / m * [i == j]
                            - t_i / m**2 * sign(t_j) (1 - t_j**2) * [j attains the max]
              (TensorFlow splits the max's gradient equally among tied maxima).

    The tanh limits the influence of large weights before the maximum normalises the tensor to
    [-1, 1]. Their 1-bit weights use another rule (sign(w) times mean |w|): use :func:`ste_sign`
    with a scale for that; this function needs bits >= 2. An all-zero tensor has m = 0 and
    maps to 2 * quantize_k(1/2) - 1 (``tf.math.divide_no_nan``).

    Args:
        w: floating-point tensor (a layer's latent weights).
        bits: integer from 2 to 16 (float16 <= 11, bfloat16 <= 8).

    Returns:
        The quantized weights, in w's dtype and shape.

    Example:
        >>> dorefa_weight_quantize(tf.constant([-2.0, 0.1, 1.0]), bits=2).numpy()
        array([-1.        ,  0.33333337,  1.        ], dtype=float32)
    """
    w = as_float_tensor(w, "w")
    bits = check_bits(bits, w.dtype)
    if bits < 2:
        raise ValueError("dorefa_weight_quantize needs bits >= 2 (DoReFa's 1-bit weights are "
                         f"sign(w) * mean|w|: use ste_sign). Received: bits={bits}")
    t = tf.tanh(w)
    u = tf.math.divide_no_nan(t, 2 * tf.reduce_max(tf.abs(t))) + tf.constant(0.5, w.dtype)
    return 2 * ste_quantize(u, bits) - 1


def pact_quantize(x, alpha, bits: int):
    """PACT: a k-bit activation on [0, alpha] with a learned clipping level (Choi et al., 2018,
    arXiv:1805.06085).

    Forward:  y = clip(x, 0, alpha),  y_q = round(y * n / alpha) * alpha / n,  n = 2**bits - 1,
              computed as ``quantize(x / alpha, bits) * alpha``: level i = round(clip(x / alpha,
              0, 1) * n) (half to even, in x's dtype), y_q = (i / n correctly rounded) * alpha,
              so x >= alpha gives alpha exactly.
    Backward: dy_q/dx     := 1{0 <= x < alpha}   (the STE on the paper's eq. (1), x = alpha excluded)
              dy_q/dalpha := 1{x >= alpha}       (the paper's eq. 3), summed over the axes along
                                                  which ``alpha`` was broadcast.
              Both are selects (an infinite or NaN upstream where they are 0 gives 0).

    PACT treats y_q as y inside the window, so alpha gets no gradient there. Autodiff of the
    LSQ-style construction ``alpha / n * ste_round(clip(x, 0, alpha) * n / alpha)`` would also
    give alpha the quantization error (round(u) - u) / n, u = x n / alpha, for 0 <= x < alpha,
    and, since ``tf.clip_by_value`` passes its bound's gradient only strictly above it, at
    x = alpha exactly it would give dx = 1 and dalpha = 0 instead of 0 and 1. Autodiff of the
    paper's eq. (1), y = (|x| - |x - alpha| + alpha) / 2, with sign(0) = 0 splits it: 1/2 each.

    A constant alpha inside ``tf.function`` has the caveat of :func:`lsq_quantize` (x / alpha
    may become x * (1 / alpha)); pass a tensor or variable. The paper's L2 penalty on alpha is
    the caller's (e.g. a Keras regularizer).

    Args:
        x: floating-point tensor.
        alpha: clipping level > 0: a number, or a tensor/variable of x's dtype broadcasting to x.
        bits: integer from 1 to 16 (float16 <= 11, bfloat16 <= 8).

    Example:
        >>> pact_quantize(tf.constant([-1.0, 0.9, 2.5]), 2.0, bits=2).numpy()
        array([0.       , 0.6666667, 2.       ], dtype=float32)
    """
    x = as_float_tensor(x, "x")
    bits = check_bits(bits, x.dtype)
    alpha = check_positive_parameter(alpha, "alpha", x)

    @tf.custom_gradient
    def _pact_quantize(x, a):
        def grad(upstream):
            return (pass_where((x >= 0) & (x < a), upstream),
                    _sum_to_shape(pass_where(x >= a, upstream), x, a))

        return quantize(x / a, bits) * a, grad

    return _pact_quantize(x, alpha)


__all__ = [
    "binarize", "heaviside", "quantize", "one_hot_argmax",
    "ste_sign", "ste_heaviside", "ste_round", "ste_quantize", "ste_argmax",
    "lsq_levels", "lsq_grad_scale", "lsq_quantize", "lsq_plus_quantize", "pact_quantize",
    "dorefa_weight_quantize",
]
