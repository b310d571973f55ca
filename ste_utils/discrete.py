"""The straight-through estimator for discrete choices: stochastic binary units, Gumbel-softmax
and vector quantization.

Randomness is stateless: every sampler takes ``seed``, a shape-[2] integer (a pair of ints or
an int32/int64 tensor), and draws with ``tf.random.stateless_*``, so the same seed gives the
same sample in every run and execution mode. A batch of independent samples is one call on a
batch of parameters (e.g. ``tf.broadcast_to(p, [n])``), not n calls with n seeds.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from ste_utils._validation import as_float_tensor, check_axis
from ste_utils.proxies import pass_where
from ste_utils.quantizers import one_hot_argmax


# ---------------------------------------------------------------- shared pieces
def _check_seed(seed) -> tf.Tensor:
    """A stateless seed: shape [2], integer."""
    if isinstance(seed, (list, tuple)) and len(seed) == 2 and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seed):
        return tf.constant(seed, tf.int64)
    tensor = None
    if not isinstance(seed, (str, bytes, bool, float, numbers.Integral)) and seed is not None:
        try:
            tensor = tf.convert_to_tensor(seed)
        except (TypeError, ValueError):
            tensor = None
    if tensor is None or tensor.dtype not in (tf.int32, tf.int64) or tensor.shape != (2,):
        raise TypeError("seed must be a pair of integers (shape [2], int32 or int64), as "
                        f"tf.random.stateless_uniform takes. Received: seed={seed!r}")
    return tensor


def _check_probabilities(p, name: str, open_interval: bool = False) -> tf.Tensor:
    """A float tensor of probabilities, checked in [0, 1] (or (0, 1)) when eager."""
    p = as_float_tensor(p, name)
    if tf.executing_eagerly():
        array = p.numpy().astype(np.float64)
        ok = (array > 0) & (array < 1) if open_interval else (array >= 0) & (array <= 1)
        if not ok.all():
            interval = "(0, 1)" if open_interval else "[0, 1]"
            raise ValueError(f"{name} must lie in {interval}. Received: {name} with entries "
                             f"{np.array2string(array[~ok].ravel()[:6], separator=', ')}")
    return p


def _uniform(shape, seed, dtype) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=seed, dtype=dtype)


def _pass_through(x, result):
    """``result`` in the forward pass exactly, the identity gradient to ``x``, none to ``result``.

    The custom-gradient form of ``x + stop_gradient(result - x)`` (:func:`ste_utils.straight_through`),
    without that expression's rounding: the value is ``result`` bit for bit.
    """
    result = tf.stop_gradient(result)

    @tf.custom_gradient
    def _identity_backward(x):
        return tf.identity(result), lambda upstream: upstream

    return _identity_backward(x)


# ---------------------------------------------------------------- stochastic binary units
def stochastic_binary(p, seed):
    """A Bernoulli(p) sample in {0, 1} with the straight-through gradient 1 with respect to p.

    Forward:  b = 1{U < p},  U ~ Uniform[0, 1) drawn statelessly from ``seed``, so P(b = 1) = p
    Backward: db/dp := 1   (the straight-through estimator for stochastic binary neurons,
                            Bengio, Leonard and Courville, 2013, arXiv:1308.3432)

    E[b] = p, so d E[f(b)] / dp is what the gradient estimates; the straight-through value
    f'(b) is biased for a non-linear f (compare :func:`reinforce_gradient`).

    Args:
        p: floating-point tensor of probabilities in [0, 1] (checked when eager).
        seed: shape-[2] integer seed.

    Returns:
        A tensor of 0 and 1 in p's dtype and shape.

    Example:
        >>> stochastic_binary(tf.fill([5], 0.5), seed=(1, 2)).numpy()   # doctest: +SKIP
    """
    p = _check_probabilities(p, "p")
    seed = _check_seed(seed)

    @tf.custom_gradient
    def _stochastic_binary(p):
        sample = tf.cast(_uniform(tf.shape(p), seed, p.dtype) < p, p.dtype)
        return sample, lambda upstream: upstream

    return _stochastic_binary(p)


def hard_sigmoid(x):
    """BinaryNet's hard sigmoid: clip((x + 1) / 2, 0, 1) (Courbariaux, Hubara et al., 2016).

    Not Keras's ``hard_sigmoid`` (Keras 3: relu6(x + 3) / 6). Autodiff gives 1/2 on |x| <= 1
    (bounds included, ``tf.clip_by_value``, a select) and 0 outside.
    """
    x = as_float_tensor(x, "x")
    one = tf.ones_like(x)
    # Clip x itself (not (x + 1) / 2), so the gradient window is |x| <= 1 exactly: x = 1 + eps
    # would round to (x + 1) / 2 = 1 and pass. Same values.
    return (tf.clip_by_value(x, -one, one) + 1) * tf.constant(0.5, x.dtype)


def stochastic_sign(x, seed):
    """BinaryNet's stochastic binarization with a straight-through gradient.

    Forward:  +1 with probability hard_sigmoid(x) = clip((x + 1) / 2, 0, 1), else -1
              (U < hard_sigmoid(x), U ~ Uniform[0, 1) from ``seed``), so E[output] = clip(x, -1, 1)
    Backward: d/dx := 1{|x| <= 1}   (the clipped STE of Hubara et al., 2016, arXiv:1602.02830,
                                     as :func:`ste_utils.ste_sign`; a select)

    Args:
        x: floating-point tensor.
        seed: shape-[2] integer seed.
    """
    x = as_float_tensor(x, "x")
    seed = _check_seed(seed)
    one = tf.constant(1, x.dtype)

    @tf.custom_gradient
    def _stochastic_sign(x):
        plus = _uniform(tf.shape(x), seed, x.dtype) < hard_sigmoid(x)
        return (tf.where(plus, one, -one),
                lambda upstream: pass_where(tf.abs(x) <= one, upstream))

    return _stochastic_sign(x)


def reinforce_gradient(f_values, samples, p, baseline=0.0):
    """Per-sample score-function (REINFORCE) estimates of d E[f(b)] / dp for b ~ Bernoulli(p).

    Estimate:  (f(b) - c) * d log P(b; p) / dp = (f(b) - c) * (b - p) / (p (1 - p))
    with c = ``baseline``. Unbiased for any constant c (E[d log P / dp] = 0; Williams, 1992), and
    c near E[f(b)] lowers the variance. Average the returned estimates over the sample axis for
    the Monte-Carlo estimate; their variance over that axis is the estimator's variance (divide
    by the number of samples for the variance of the average).

    Args:
        f_values: f(b) for each sample, a float tensor.
        samples: the samples b in {0, 1}, same dtype, broadcasting with ``f_values``.
        p: the probabilities in (0, 1) (checked when eager), broadcasting with ``samples``.
        baseline: c, a number or a tensor broadcasting with ``f_values``.

    Returns:
        A tensor of estimates, the broadcast shape of the inputs; no gradient flows through it
        (it is an estimate to be applied, not a function to differentiate).

    Example:
        >>> p = tf.constant(0.3); b = stochastic_binary(tf.fill([10000], p), seed=(0, 1))
        >>> tf.reduce_mean(reinforce_gradient((b - 0.45) ** 2, b, p))   # ~ d/dp E[(b - .45)^2] = 0.1
    """
    f_values = as_float_tensor(f_values, "f_values")
    samples = as_float_tensor(samples, "samples")
    p = _check_probabilities(p, "p", open_interval=True)
    for name, t in (("samples", samples), ("p", p)):
        if t.dtype != f_values.dtype:
            raise TypeError(f"{name} must have the dtype of f_values. "
                            f"Received: {name}.dtype={t.dtype.name}, f_values.dtype={f_values.dtype.name}")
    if tf.executing_eagerly():
        values = samples.numpy()
        if not np.isin(values, (0, 1)).all():
            raise ValueError("samples must be 0 or 1. Received: samples with entries "
                             f"{np.array2string(values[~np.isin(values, (0, 1))].ravel()[:6], separator=', ')}")
    baseline = tf.cast(baseline, f_values.dtype) if isinstance(baseline, numbers.Real) else baseline
    score = (samples - p) / (p * (1 - p))
    return tf.stop_gradient((f_values - baseline) * score)


# ---------------------------------------------------------------- Gumbel-softmax
def gumbel_noise(shape, seed, dtype=tf.float32):
    """Standard Gumbel(0, 1) noise g = -log(-log U), U ~ Uniform[tiny, 1) from ``seed``.

    U starts at the smallest normal float of ``dtype`` (not 0), so g is finite: mean Euler's
    gamma ~ 0.5772, variance pi^2 / 6.
    """
    dtype = tf.as_dtype(dtype)
    if not dtype.is_floating:
        raise TypeError(f"dtype must be a floating-point dtype. Received: dtype={dtype.name}")
    seed = _check_seed(seed)
    tiny = np.finfo(dtype.as_numpy_dtype).tiny if dtype != tf.bfloat16 else 1.1754944e-38
    u = tf.random.stateless_uniform(shape, seed=seed, minval=float(tiny), maxval=1.0, dtype=dtype)
    return -tf.math.log(-tf.math.log(u))


def _check_temperature(temperature):
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        tensor = as_float_tensor(temperature, "temperature")
        if tf.executing_eagerly() and not (tensor.numpy() > 0).all():
            raise ValueError(f"temperature must be > 0. Received: temperature={tensor.numpy()!r}")
        return tensor
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0. Received: temperature={temperature!r}")
    return temperature


def gumbel_softmax_st(logits, temperature, seed, hard=True, axis=-1):
    """Gumbel-softmax sample, straight-through when ``hard`` (Jang, Gu and Poole, 2017,
    arXiv:1611.01144; Maddison, Mnih and Teh, 2017, arXiv:1611.00712).

    Forward:  y = softmax((logits + g) / tau) along ``axis``, g = :func:`gumbel_noise` from
              ``seed``; hard=True returns one_hot(argmax y) instead (exactly one-hot; ties to
              the lowest index, :func:`ste_utils.one_hot_argmax`), a sample of the categorical
              distribution softmax(logits) (the Gumbel-max trick), whatever tau.
    Backward: the gradient of y in both cases (hard: the straight-through estimator, written
              with ``tf.custom_gradient`` rather than y_hard - stop_gradient(y) + y, whose sum
              is not always exactly 0 or 1): d/dlogits = J^T u, J = (diag(y) - y y^T) / tau.

    Args:
        logits: floating-point tensor (unnormalised log-probabilities).
        temperature: tau > 0 (a number, or a float tensor for an annealing schedule).
        seed: shape-[2] integer seed.
        hard: return the one-hot sample (True) or the relaxed y (False).
        axis: the category axis.
    """
    logits = as_float_tensor(logits, "logits")
    axis = check_axis(axis, logits.shape.rank)
    temperature = _check_temperature(temperature)
    if not isinstance(hard, (bool, np.bool_)):
        raise TypeError(f"hard must be True or False. Received: hard={hard!r}")
    noise = gumbel_noise(tf.shape(logits), seed, logits.dtype)
    y = tf.nn.softmax((logits + noise) / tf.cast(temperature, logits.dtype), axis=axis)
    if not hard:
        return y
    return _pass_through(y, one_hot_argmax(y, axis))


# ---------------------------------------------------------------- vector quantization
class VQResult(NamedTuple):
    """What :func:`vector_quantize` returns."""

    z_q: tf.Tensor              # the chosen codes, straight-through to z_e
    indices: tf.Tensor          # int32, the code chosen for each vector
    codebook_loss: tf.Tensor    # mean (sg(z_e) - e)^2: moves the codes
    commitment_loss: tf.Tensor  # mean (z_e - sg(e))^2: moves the encoder


def vector_quantize(z_e, codebook):
    """Nearest-code vector quantization with VQ-VAE's gradients (van den Oord, Vinyals and
    Kavukcuoglu, 2017, arXiv:1711.00937).

    Forward:  k* = argmin_k ||z_e - e_k||^2 per vector (the last axis of z_e; distances summed
              from squared differences, so equal distances tie exactly and go to the lowest k),
              z_q = e_k* exactly.
    Backward: z_q passes its gradient straight to z_e (z_q = z_e + sg(e_k* - z_e), written with
              ``tf.custom_gradient`` so the value is e_k* bit for bit) and none to the codebook:
              what feeds only the result gets no gradient, so the codebook needs its own loss.
    Losses:   codebook_loss   = mean((sg(z_e) - e_k*)^2)  (gradient to the codebook only)
              commitment_loss = mean((z_e - sg(e_k*))^2)  (gradient to z_e only)
              Means over every element (as Sonnet's and the Keras example's VQ-VAE): the
              paper's squared norms divided by the code dimension D. The paper's total is
              codebook_loss + beta * commitment_loss, beta = 0.25; the caller (or
              :class:`ste_utils.layers.VectorQuantizer`) applies beta.

    Args:
        z_e: encoder outputs, float tensor of shape [..., D].
        codebook: float tensor of shape [K, D], same dtype.

    Returns:
        A :class:`VQResult` (z_q, indices, codebook_loss, commitment_loss).
    """
    z_e = as_float_tensor(z_e, "z_e")
    codebook = as_float_tensor(codebook, "codebook")
    if codebook.dtype != z_e.dtype:
        raise TypeError("codebook must have the dtype of z_e. "
                        f"Received: codebook.dtype={codebook.dtype.name}, z_e.dtype={z_e.dtype.name}")
    if codebook.shape.rank != 2 or z_e.shape.rank in (None, 0) or (
            z_e.shape[-1] is not None and codebook.shape[-1] is not None
            and z_e.shape[-1] != codebook.shape[-1]):
        raise ValueError("codebook must have shape [K, D] and z_e shape [..., D]. "
                         f"Received: codebook.shape={codebook.shape}, z_e.shape={z_e.shape}")
    distances = tf.reduce_sum(tf.square(tf.expand_dims(z_e, -2) - codebook), axis=-1)
    nearest = one_hot_argmax(-tf.stop_gradient(distances), axis=-1)
    indices = tf.argmax(nearest, axis=-1, output_type=tf.int32)
    chosen = tf.gather(codebook, indices)
    return VQResult(
        z_q=_pass_through(z_e, chosen),
        indices=indices,
        codebook_loss=tf.reduce_mean(tf.square(tf.stop_gradient(z_e) - chosen)),
        commitment_loss=tf.reduce_mean(tf.square(z_e - tf.stop_gradient(chosen))),
    )


__all__ = ["stochastic_binary", "hard_sigmoid", "stochastic_sign", "reinforce_gradient",
           "gumbel_noise", "gumbel_softmax_st", "VQResult", "vector_quantize"]
