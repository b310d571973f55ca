"""The straight-through estimator for discrete choices: stochastic binary units, Gumbel-softmax,
vector quantization (with a moving-average codebook) and finite scalar quantization.

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
from ste_utils.quantizers import one_hot_argmax, ste_round


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
    Backward: db/dp := 1

    Which straight-through estimator this is depends on where p comes from. Bengio, Leonard and
    Courville (2013, arXiv:1308.3432) name "straight-through" the estimator that copies the
    gradient with respect to b to the *sigmoid's argument* a (db/da := 1, with p = sigmoid(a)).
    With ``p = tf.sigmoid(a)`` this function gives db/da = sigmoid'(a) instead: the variant that
    multiplies by the sigmoid's derivative (often called the sigmoid-adjusted straight-through
    estimator). Bengio et al.'s own estimator is this function applied to a probability that the
    caller passes straight through, e.g. ``stochastic_binary(straight_through(a, tf.sigmoid(a)),
    seed)`` (:func:`ste_utils.straight_through`).

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


def hard_sigmoid(x, slope=1.0):
    """BinaryNet's hard sigmoid, with Chung, Ahn and Bengio's slope:  clip((slope x + 1) / 2, 0, 1).

    Courbariaux, Hubara et al. (2016) use slope 1; Chung, Ahn and Bengio (2016, arXiv:1609.01704)
    use it as the backward proxy of a step function and raise the slope during training (the
    "slope annealing trick"), so that the proxy approaches the step. Not Keras's
    ``hard_sigmoid`` (Keras 3: relu6(x + 3) / 6).

    Forward:  clip((slope * x + 1) / 2, 0, 1), slope * x computed in x's dtype
    Backward: slope / 2 where |slope * x| <= 1 (bounds included, ``tf.clip_by_value``, a
              select), 0 outside

    Args:
        x: floating-point tensor.
        slope: a finite number > 0 (1 gives BinaryNet's hard sigmoid exactly).
    """
    x = as_float_tensor(x, "x")
    if isinstance(slope, bool) or not isinstance(slope, numbers.Real) or not (
            np.isfinite(slope) and slope > 0):
        raise ValueError(f"slope must be a finite number > 0. Received: slope={slope!r}")
    one = tf.ones_like(x)
    # Clip slope * x itself (not (slope * x + 1) / 2), so the gradient window is |slope x| <= 1
    # exactly: x = 1 + eps would round to (x + 1) / 2 = 1 and pass. Same values.
    scaled = x if slope == 1 else x * tf.constant(slope, x.dtype)
    return (tf.clip_by_value(scaled, -one, one) + 1) * tf.constant(0.5, x.dtype)


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


def _check_estimator_inputs(f_values, samples, p):
    """(f_values, samples, p) as float tensors of one dtype; samples 0 or 1 and p in (0, 1)
    (checked when eager)."""
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
    return f_values, samples, p


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
    f_values, samples, p = _check_estimator_inputs(f_values, samples, p)
    baseline = tf.cast(baseline, f_values.dtype) if isinstance(baseline, numbers.Real) else baseline
    score = (samples - p) / (p * (1 - p))
    return tf.stop_gradient((f_values - baseline) * score)


def optimal_baseline(f_values, samples, p, axis=0):
    """Bengio et al.'s variance-minimising baseline for :func:`reinforce_gradient`, per unit.

    For the estimate (f(b) - c_i) (b_i - p_i) / (p_i (1 - p_i)) of d E[f] / dp_i, the constant
    c_i that minimises its variance is

        c_i* = E[(b_i - p_i)^2 f(b)] / E[(b_i - p_i)^2]

    (Bengio, Leonard and Courville, 2013, arXiv:1308.3432; set the derivative of
    E[(f - c)^2 s_i^2] - (E[f s_i])^2 with respect to c to 0, s_i the score): the mean of f
    weighted by (b_i - p_i)^2, one baseline per unit. This function estimates it from samples:
    the weighted mean over ``axis``. Computed from the same samples the estimates use, it makes
    them slightly biased (O(1/n)); from an independent batch it keeps them unbiased.

    Args:
        f_values: f(b) per sample, shape [n] along ``axis`` (broadcasting against ``samples``,
            e.g. shape [n, 1] for samples of shape [n, units]).
        samples: the samples b in {0, 1}, e.g. shape [n, units].
        p: the probabilities in (0, 1), broadcasting with ``samples``.
        axis: the sample axis.

    Returns:
        c*, the weighted means: ``samples``' shape without ``axis`` (no gradient flows through it).

    Example:
        >>> c = optimal_baseline(f_other[:, None], b_other, p)       # an independent batch
        >>> g = reinforce_gradient(f[:, None], b, p, baseline=c)     # unbiased, lower variance
    """
    f_values, samples, p = _check_estimator_inputs(f_values, samples, p)
    axis = check_axis(axis, samples.shape.rank)
    weights = tf.square(samples - p)
    return tf.stop_gradient(tf.reduce_sum(weights * f_values, axis=axis) / tf.reduce_sum(weights, axis=axis))


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


# ---------------------------------------------------------------- the codebook: moving averages, dead codes
class EMACodebook(NamedTuple):
    """The state of a codebook learned by moving averages (VQ-VAE, appendix A.1).

    ``cluster_size`` N [K] and ``embed_sum`` m [K, D] are moving averages of how many encoder
    outputs chose each code and of their sum; the codes are m / N (:attr:`codebook`).
    """

    cluster_size: tf.Tensor
    embed_sum: tf.Tensor

    @property
    def codebook(self) -> tf.Tensor:
        return self.embed_sum / self.cluster_size[:, None]


def _flat_codebook_input(z_e, codes) -> tf.Tensor:
    """``z_e`` [..., D] as a [N, D] float tensor without gradient, checked against the codebook
    ``codes`` [K, D] (dtype and D)."""
    z_e = as_float_tensor(z_e, "z_e")
    if z_e.dtype != codes.dtype:
        raise TypeError("z_e must have the codebook's dtype. "
                        f"Received: z_e.dtype={z_e.dtype.name}, codebook dtype={codes.dtype.name}")
    dim = z_e.shape[-1] if z_e.shape.rank else None
    if z_e.shape.rank == 0 or (dim is not None and codes.shape[-1] is not None and dim != codes.shape[-1]):
        raise ValueError(f"z_e must have shape [..., D] with the codebook's D = {codes.shape[-1]}. "
                         f"Received: z_e.shape={z_e.shape}")
    return tf.stop_gradient(tf.reshape(z_e, [-1, tf.shape(z_e)[-1]]))


def ema_codebook(codebook) -> EMACodebook:
    """The moving-average state of ``codebook`` [K, D]: each code counts as one vector at itself
    (N = 1, m = e), so :attr:`EMACodebook.codebook` is ``codebook`` and no code divides by 0."""
    codebook = as_float_tensor(codebook, "codebook")
    if codebook.shape.rank != 2:
        raise ValueError(f"codebook must have shape [K, D]. Received: codebook.shape={codebook.shape}")
    return EMACodebook(tf.ones(tf.shape(codebook)[:1], codebook.dtype), tf.identity(codebook))


def _check_decay(decay):
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 <= decay < 1:
        raise ValueError(f"decay must be a number in [0, 1). Received: decay={decay!r}")
    return decay


def ema_codebook_update(state: EMACodebook, z_e, indices, decay=0.99) -> EMACodebook:
    """One moving-average step of VQ-VAE's codebook (van den Oord et al., 2017, appendix A.1),
    used instead of the codebook loss.

    With n_k the number of vectors of ``z_e`` whose code is k and s_k their sum:

        N_k <- decay N_k + (1 - decay) n_k,   m_k <- decay m_k + (1 - decay) s_k,   e_k = m_k / N_k

    (the paper uses decay = 0.99). Each code moves towards the mean of the vectors that chose
    it, a k-means step smoothed over batches. A code that nobody chooses has n_k = 0, s_k = 0:
    N_k and m_k shrink by the same factor and e_k does not move (a *dead code*; see
    :func:`restart_dead_codes`). No gradient is involved: the result is plain data.

    Args:
        state: the :class:`EMACodebook` before the step.
        z_e: encoder outputs [..., D] in the state's dtype.
        indices: the integer code of each vector, shape ``z_e.shape[:-1]`` (e.g.
            ``vector_quantize(z_e, state.codebook).indices``).
        decay: in [0, 1).

    Returns:
        The :class:`EMACodebook` after the step.
    """
    decay = _check_decay(decay)
    size, total = state.cluster_size, state.embed_sum
    flat = _flat_codebook_input(z_e, total)
    one_hot = tf.one_hot(tf.reshape(indices, [-1]), tf.shape(size)[0], dtype=flat.dtype)
    d = tf.constant(decay, flat.dtype)
    return EMACodebook(d * size + (1 - d) * tf.reduce_sum(one_hot, axis=0),
                       d * total + (1 - d) * tf.matmul(one_hot, flat, transpose_a=True))


def restart_dead_codes(state: EMACodebook, z_e, seed, threshold=0.01):
    """Move every dead code onto a randomly chosen encoder output: a common remedy for codes
    that are never chosen and so never learn (AudioCraft's EnCodec codebooks, for one, replace
    codes whose moving-average count falls below 2 by random vectors of the current batch).

    A code is dead when its moving-average count ``state.cluster_size`` is below ``threshold``
    (vectors per batch). Each dead code k becomes a vector of ``z_e`` drawn uniformly (with
    replacement, statelessly from ``seed``) and counts as one vector there (N_k = 1, m_k = that
    vector); live codes are unchanged.

    Args:
        state: an :class:`EMACodebook`.
        z_e: encoder outputs [..., D].
        seed: shape-[2] integer seed.
        threshold: a number >= 0.

    Returns:
        (new state, dead), ``dead`` the boolean mask [K] of the codes that were moved.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not threshold >= 0:
        raise ValueError(f"threshold must be a number >= 0. Received: threshold={threshold!r}")
    seed = _check_seed(seed)
    size, total = state.cluster_size, state.embed_sum
    flat = _flat_codebook_input(z_e, total)
    dead = size < tf.constant(threshold, size.dtype)
    picks = tf.random.stateless_uniform(tf.shape(size), seed=seed, minval=0,
                                        maxval=tf.shape(flat)[0], dtype=tf.int32)
    fresh = tf.gather(flat, picks)
    return (EMACodebook(tf.where(dead, tf.ones_like(size), size), tf.where(dead[:, None], fresh, total)),
            dead)


# ---------------------------------------------------------------- finite scalar quantization
FSQ_EPS = 1e-3


def _check_levels(levels, dim):
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__len__") or not len(levels) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 2 for v in levels):
        raise ValueError(f"levels must be a non-empty sequence of integers >= 2. Received: levels={levels!r}")
    if dim is not None and dim != len(levels):
        raise ValueError(f"levels must have one entry per channel (the last axis, {dim}). "
                         f"Received: levels={list(levels)!r}")
    return [int(v) for v in levels]


def fsq_quantize(z, levels):
    """Finite scalar quantization (Mentzer, Minnen, Agustsson and Tschannen, 2023,
    arXiv:2309.15505): round each channel to a few fixed values, with the STE of ``ste_round``.

    Forward:  channel d (the last axis) with L = levels[d], h = (L - 1)(1 - 1e-3) / 2,
              o = 1/2 for even L else 0:
                  bound(z) = h tanh(z + atanh(o / h)) - o     (in (-h - o, h - o), bound(0) = 0)
                  z_hat    = round(bound(z)) / floor(L / 2)
              so z_hat takes L values in [-1, 1] (odd L: -1, ..., 1 evenly; even L: from -1 to
              1 - 2/L). The codebook is implicit: the product of the channels' values,
              prod(levels) codes, none of them learned (so none is left behind untrained,
              though one may go unused).
    Backward: d z_hat / d z := bound'(z) / floor(L / 2): round passes its gradient straight
              through (:func:`ste_utils.ste_round`), tanh keeps its derivative.

    No codebook loss and no commitment loss: there is nothing to learn in the quantizer. (The
    paper's listing shifts by tan(o / h); atanh makes bound(0) = 0 exactly, the values differ
    slightly for even L.)

    Args:
        z: floating-point tensor [..., d].
        levels: d integers >= 2, the number of values of each channel.

    Returns:
        z_hat, z's shape and dtype.

    Example:
        >>> fsq_quantize(tf.constant([[-3.0, 0.2, 5.0]]), [3, 5, 4]).numpy()   # [[-1, 0, 0.5]]
    """
    z = as_float_tensor(z, "z")
    levels = _check_levels(levels, z.shape[-1] if z.shape.rank else None)
    if z.shape.rank == 0:
        raise ValueError(f"z must have a channel axis of {len(levels)}. Received: z.shape={z.shape}")
    L = np.asarray(levels, np.float64)
    half = (L - 1) * (1 - FSQ_EPS) / 2
    offset = np.where(L % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half)
    as_z = lambda v: tf.constant(v, z.dtype)  # noqa: E731
    bounded = tf.tanh(z + as_z(shift)) * as_z(half) - as_z(offset)
    return ste_round(bounded) / as_z(np.floor(L / 2))


def fsq_indices(z_hat, levels):
    """The index of each code of :func:`fsq_quantize`: channel d's value as a digit
    k_d = z_hat_d floor(L_d / 2) + floor(L_d / 2) in {0, ..., L_d - 1}, combined with the mixed
    radix of ``levels`` (index = k_0 + L_0 k_1 + L_0 L_1 k_2 + ...), int32 of shape z_hat.shape[:-1].
    """
    z_hat = as_float_tensor(z_hat, "z_hat")
    levels = _check_levels(levels, z_hat.shape[-1] if z_hat.shape.rank else None)
    half = np.floor(np.asarray(levels, np.float64) / 2)
    digits = tf.cast(tf.round(z_hat * tf.constant(half, z_hat.dtype)), tf.int32) + tf.constant(half.astype(np.int32))
    basis = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)
    return tf.reduce_sum(digits * tf.constant(basis), axis=-1)


__all__ = ["stochastic_binary", "hard_sigmoid", "stochastic_sign", "reinforce_gradient", "optimal_baseline",
           "gumbel_noise", "gumbel_softmax_st", "VQResult", "vector_quantize",
           "EMACodebook", "ema_codebook", "ema_codebook_update", "restart_dead_codes",
           "fsq_quantize", "fsq_indices"]
