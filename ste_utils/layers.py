"""Thin Keras 3 layers over the quantizer functions.

The functions in :mod:`ste_utils.quantizers` do the work; these classes only hold their
arguments, report them in ``get_config`` and register for ``.keras`` serialization.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from ste_utils._validation import check_bits, check_clip_value
from ste_utils.estimators import ste
from ste_utils.proxies import get_proxy
from ste_utils.quantizers import quantize, ste_heaviside, ste_quantize, ste_round, ste_sign

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


__all__ = ["SteSign", "SteHeaviside", "SteRound", "SteQuantize", "SteActivation", "LatentClip",
           "BinaryDense"]
