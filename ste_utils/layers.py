"""Thin Keras 3 layers over the quantizer functions.

The functions in :mod:`ste_utils.quantizers` do the work; these classes only hold their
arguments, report them in ``get_config`` and register for ``.keras`` serialization.
"""

from __future__ import annotations

import functools
import math
import numbers

import keras
import tensorflow as tf

from ste_utils._validation import check_bits, check_clip_value, check_grad_scale
from ste_utils.discrete import vector_quantize
from ste_utils.estimators import ste
from ste_utils.proxies import get_proxy
from ste_utils.quantizers import (
    lsq_grad_scale, lsq_levels, lsq_plus_quantize, lsq_quantize, quantize, ste_heaviside,
    ste_quantize, ste_round, ste_sign,
)

PACKAGE = "ste_utils"


def require_tensorflow_backend(layer_name: str) -> None:
    """Fail fast when Keras runs on another backend: these layers call TensorFlow directly
    (``tf.custom_gradient``), which a JAX or PyTorch backend could neither trace nor train."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{layer_name} needs Keras's TensorFlow backend (ste_utils is built on "
            "tf.custom_gradient); set KERAS_BACKEND=tensorflow before importing keras. "
            f"Received: keras.backend.backend()={backend!r}"
        )


class _TensorFlowLayer(keras.layers.Layer):
    """A Keras layer that checks the backend when it is constructed."""

    def __init__(self, **kwargs):
        require_tensorflow_backend(type(self).__name__)
        super().__init__(**kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SteSign(_TensorFlowLayer):
    """Binary activation: :func:`ste_sign` (forward +-1, gradient 1{|x| <= clip_value})."""

    def __init__(self, clip_value=1.0, **kwargs):
        super().__init__(**kwargs)
        self.clip_value = check_clip_value(clip_value)

    def call(self, inputs):
        return ste_sign(inputs, clip_value=self.clip_value)

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SteHeaviside(_TensorFlowLayer):
    """Step activation: :func:`ste_heaviside` (forward 1{x > 0}, gradient 1{|x| <= clip_value})."""

    def __init__(self, clip_value=1.0, **kwargs):
        super().__init__(**kwargs)
        self.clip_value = check_clip_value(clip_value)

    def call(self, inputs):
        return ste_heaviside(inputs, clip_value=self.clip_value)

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SteRound(_TensorFlowLayer):
    """Rounding activation: :func:`ste_round` (forward round half to even, gradient 1)."""

    def call(self, inputs):
        return ste_round(inputs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SteQuantize(_TensorFlowLayer):
    """k-bit activation on [0, 1]: :func:`ste_quantize` (gradient 1 on [0, 1])."""

    def __init__(self, bits=2, **kwargs):
        super().__init__(**kwargs)
        self.bits = check_bits(bits, tf.float64)

    def call(self, inputs):
        return ste_quantize(inputs, self.bits)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SteActivation(_TensorFlowLayer):
    """k-bit activation on [0, 1] whose backward pass uses a chosen proxy's derivative.

    Forward:  q(x) = round(clip(x, 0, 1) * n) / n,   n = 2**bits - 1   (:func:`quantize`)
    Backward: dq/dx := p'(x) for the named proxy p (:mod:`ste_utils.proxies`): ``"identity"``
              (1), ``"relu"`` (1{x > 0}), ``"clipped_relu"`` (1{0 < x <= 1}) or ``"hardtanh"``
              (1{|x| <= 1}); built with :func:`ste_utils.ste`. The proxies compared by Yin et al.
              (2019, arXiv:1903.05662) for quantized ReLU activations.

    Args:
        bits: integer from 1 to 16.
        proxy: name of the proxy (a name, not a callable, so the layer serializes).

    Example:
        >>> layer = SteActivation(bits=2, proxy="relu")
        >>> layer(tf.constant([-0.5, 0.2, 0.5, 3.0])).numpy()
        array([0.        , 0.33333334, 0.6666667 , 1.        ], dtype=float32)
    """

    def __init__(self, bits=2, proxy="clipped_relu", **kwargs):
        super().__init__(**kwargs)
        self.bits = check_bits(bits, tf.float64)
        if not isinstance(proxy, str):
            raise TypeError("proxy must be the name of a proxy (callables do not serialize). "
                            f"Received: proxy={proxy!r}")
        get_proxy(proxy)  # raises for unknown names, listing the known ones
        self.proxy = proxy
        self._estimator = ste(functools.partial(quantize, bits=self.bits), proxy=proxy)

    def call(self, inputs):
        return self._estimator(inputs)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "proxy": self.proxy}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LatentClip(keras.constraints.Constraint):
    """Keep latent (real-valued) weights in [-clip_value, clip_value], as BinaryConnect does.

    Outside that window :func:`ste_sign` passes no gradient, so an unclipped latent weight could
    drift there and freeze.
    """

    def __init__(self, clip_value=1.0):
        clip_value = check_clip_value(clip_value)
        if clip_value is None:
            raise TypeError("clip_value must be a number >= 0. Received: clip_value=None")
        self.clip_value = clip_value

    def __call__(self, w):
        return keras.ops.clip(w, -self.clip_value, self.clip_value)

    def get_config(self):
        return {"clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BinaryDense(keras.layers.Dense):
    """Dense layer with binarized weights and, optionally, binarized inputs (BinaryNet).

    Forward:  y = ste_sign(x) @ ste_sign(W) + b   (inputs binarized when ``binarize_inputs``)
    Backward: straight through ``ste_sign`` to the latent float weights ``W`` (and to ``x``),
              clipped to |.| <= clip_value. Latent weights are kept in [-clip_value,
              clip_value] by :class:`LatentClip` unless another constraint is given.

    Args:
        units: output size.
        binarize_inputs: also binarize the inputs (the first layer of a network usually keeps
            real-valued inputs).
        clip_value: clip window of both ``ste_sign`` calls.
        **kwargs: passed to ``keras.layers.Dense``.
    """

    def __init__(self, units, binarize_inputs=False, clip_value=1.0, **kwargs):
        require_tensorflow_backend(type(self).__name__)
        clip_value = check_clip_value(clip_value)
        if kwargs.get("kernel_constraint") is None and clip_value is not None:
            kwargs["kernel_constraint"] = LatentClip(clip_value)
        super().__init__(units, **kwargs)
        self.binarize_inputs = bool(binarize_inputs)
        self.clip_value = clip_value

    def call(self, inputs, training=None):
        if self.binarize_inputs:
            inputs = ste_sign(inputs, clip_value=self.clip_value)
        outputs = keras.ops.matmul(inputs, ste_sign(self.kernel, clip_value=self.clip_value))
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        return {**super().get_config(), "binarize_inputs": self.binarize_inputs,
                "clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LsqQuantize(_TensorFlowLayer):
    """An activation quantizer with a learned step size: :func:`lsq_quantize` (LSQ, Esser et al.,
    2020, arXiv:1902.08153).

    Forward:  clip(round(x / s), -Q_N, Q_P) * s, with s the layer's trainable ``step``
    Backward: as :func:`lsq_quantize`; the step's gradient is scaled by g = 1 / sqrt(N * Q_P),
              N the number of features per example (the paper's N_F), unless ``grad_scale``
              is given.
    Init:     ``init_step`` if given, else on the first call 2 * mean(|x|) / sqrt(Q_P) over that
              first batch (the paper's initialisation). A non-trainable ``initialized`` flag
              records it, so a loaded model keeps its learned step.

    Args:
        bits: bit width (2..16 signed, 1..16 unsigned).
        signed: levels -Q_N..Q_P (True) or 0..Q_P (False, e.g. after a ReLU).
        init_step: initial step > 0, or None for the data-dependent initialisation.
        grad_scale: g > 0, or None for the paper's 1 / sqrt(N * Q_P).
    """

    def __init__(self, bits, signed=True, init_step=None, grad_scale=None, **kwargs):
        super().__init__(**kwargs)
        self.q_n, self.q_p = lsq_levels(bits, signed)
        self.bits, self.signed = int(bits), bool(signed)
        if init_step is not None:
            if isinstance(init_step, bool) or not isinstance(init_step, numbers.Real) or not (
                    math.isfinite(init_step) and init_step > 0):
                raise ValueError(f"init_step must be a finite number > 0 or None. "
                                 f"Received: init_step={init_step!r}")
            init_step = float(init_step)
        self.init_step = init_step
        self.grad_scale = None if grad_scale is None else check_grad_scale(grad_scale)

    def build(self, input_shape):
        features = math.prod(d for d in input_shape[1:] if d is not None) if len(input_shape) > 1 else 1
        self._scale = self.grad_scale or lsq_grad_scale(max(int(features), 1), self.bits, self.signed)
        self.step = self.add_weight(
            name="step", shape=(),
            initializer=keras.initializers.Constant(self.init_step or 1.0), trainable=True)
        self.initialized = self.add_weight(
            name="initialized", shape=(), dtype="bool",
            initializer=keras.initializers.Constant(self.init_step is not None), trainable=False)

    def call(self, inputs):
        if self.init_step is None:
            first = tf.cast(2.0 * tf.reduce_mean(tf.abs(tf.cast(inputs, self.step.dtype)))
                            / math.sqrt(self.q_p), self.step.dtype)
            first = tf.where(first > 0, first, tf.ones_like(first))  # all-zero first batch
            self.step.assign(tf.where(self.initialized, self.step, first))
            self.initialized.assign(True)
        step = tf.cast(self.step, inputs.dtype)
        return lsq_quantize(inputs, step, self.bits, signed=self.signed, grad_scale=self._scale)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "signed": self.signed,
                "init_step": self.init_step, "grad_scale": self.grad_scale}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LsqPlusQuantize(LsqQuantize):
    """An activation quantizer with a learned step and a learned offset: :func:`lsq_plus_quantize`
    (LSQ+, Bhalgat et al., 2020, arXiv:2004.09576).

    Forward:  clip(round((x - beta) / s), -Q_N, Q_P) * s + beta, with the layer's trainable
              ``step`` s and ``offset`` beta (unsigned levels by default)
    Backward: as :func:`lsq_plus_quantize`; both parameters' gradients are scaled by
              g = 1 / sqrt(N * Q_P) (N the features per example) unless ``grad_scale`` is given.
    Init:     ``init_step`` and ``init_offset`` if given; otherwise, on the first call, a min-max
              start over that first batch: beta = min(x), s = (max(x) - min(x)) / (Q_N + Q_P)
              (a simple start, not the paper's MSE-based initialisation). Both are given or
              neither. The ``initialized`` flag is saved with the model, as in
              :class:`LsqQuantize`.

    Args:
        bits: bit width (2..16 signed, 1..16 unsigned).
        signed: levels -Q_N..Q_P (True) or 0..Q_P (False, the default).
        init_step: initial step > 0, or None.
        init_offset: initial offset (any finite number), or None.
        grad_scale: g > 0, or None for 1 / sqrt(N * Q_P).
    """

    def __init__(self, bits, signed=False, init_step=None, init_offset=None, grad_scale=None, **kwargs):
        super().__init__(bits, signed=signed, init_step=init_step, grad_scale=grad_scale, **kwargs)
        if (init_step is None) != (init_offset is None):
            raise ValueError("init_step and init_offset are given together or not at all. "
                             f"Received: init_step={init_step!r}, init_offset={init_offset!r}")
        if init_offset is not None:
            if isinstance(init_offset, bool) or not isinstance(init_offset, numbers.Real) or not math.isfinite(
                    init_offset):
                raise ValueError(f"init_offset must be a finite number or None. Received: init_offset={init_offset!r}")
            init_offset = float(init_offset)
        self.init_offset = init_offset

    def build(self, input_shape):
        super().build(input_shape)
        self.offset = self.add_weight(
            name="offset", shape=(), initializer=keras.initializers.Constant(self.init_offset or 0.0),
            trainable=True)

    def call(self, inputs):
        if self.init_step is None:
            x = tf.cast(inputs, self.step.dtype)
            low, high = tf.reduce_min(x), tf.reduce_max(x)
            first_step = (high - low) / float(self.q_n + self.q_p)
            first_step = tf.where(first_step > 0, first_step, tf.ones_like(first_step))  # constant batch
            self.step.assign(tf.where(self.initialized, self.step, first_step))
            self.offset.assign(tf.where(self.initialized, self.offset, low))
            self.initialized.assign(True)
        step, offset = tf.cast(self.step, inputs.dtype), tf.cast(self.offset, inputs.dtype)
        return lsq_plus_quantize(inputs, step, offset, self.bits, signed=self.signed, grad_scale=self._scale)

    def get_config(self):
        return {**super().get_config(), "init_offset": self.init_offset}


@keras.saving.register_keras_serializable(package=PACKAGE)
class VectorQuantizer(_TensorFlowLayer):
    """VQ-VAE's quantizer: :func:`vector_quantize` with a trainable codebook and its losses
    (van den Oord et al., 2017, arXiv:1711.00937).

    Forward:  z_q = the nearest of ``num_codes`` codes of size ``dim`` to each input vector
              (last axis), passed straight through to the input in the backward pass.
    Losses:   adds codebook_loss + beta * commitment_loss with ``add_loss`` (the codebook
              learns only from codebook_loss; the encoder is pulled by the commitment term).

    Args:
        num_codes: K, the number of codes.
        dim: D, the size of a code (the inputs' last axis).
        beta: the commitment weight >= 0 (the paper's 0.25).
        codebook_initializer: a Keras initializer for the [K, D] codebook.
    """

    def __init__(self, num_codes, dim, beta=0.25, codebook_initializer="random_uniform", **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_codes", num_codes), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1. Received: {name}={value!r}")
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not (
                math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0. Received: beta={beta!r}")
        self.num_codes, self.dim, self.beta = int(num_codes), int(dim), float(beta)
        self.codebook_initializer = keras.initializers.get(codebook_initializer)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.dim:
            raise ValueError(f"VectorQuantizer(dim={self.dim}) needs inputs whose last axis is "
                             f"{self.dim}. Received: input_shape={tuple(input_shape)}")
        self.codebook = self.add_weight(name="codebook", shape=(self.num_codes, self.dim),
                                        initializer=self.codebook_initializer, trainable=True)

    def call(self, inputs):
        result = vector_quantize(inputs, tf.cast(self.codebook, inputs.dtype))
        self.add_loss(result.codebook_loss + self.beta * result.commitment_loss)
        return result.z_q

    def get_config(self):
        return {**super().get_config(), "num_codes": self.num_codes, "dim": self.dim,
                "beta": self.beta,
                "codebook_initializer": keras.initializers.serialize(self.codebook_initializer)}


__all__ = ["SteSign", "SteHeaviside", "SteRound", "SteQuantize", "SteActivation", "LatentClip",
           "BinaryDense", "LsqQuantize", "VectorQuantizer"]
