"""From a network trained with straight-through quantizers to a full-integer LiteRT model.

Training (chapter 7) keeps float latent weights and learned step sizes, and quantizes in the
forward pass with an STE in the backward pass. Deployment keeps only the forward pass:

1. :func:`freeze` rebuilds a trained :class:`QatDense` network with every range frozen into
   constants: ``tf.quantization.fake_quant_with_min_max_args`` on the input, on each kernel
   (symmetric, ``narrow_range``: levels -127..127 on the learned step), on each activation
   (asymmetric, [0, 255 s]) and on the logits; biases rounded to the int32 grid of step
   ``s_x s_W`` that TFLite stores them on. Its float forward pass is the integer model's,
   value for value (chapter 9 measures how nearly).
2. :func:`convert` exports it (``model.export``) and converts the SavedModel with
   ``TFLiteConverter.from_saved_model``, a representative dataset and ``TFLITE_BUILTINS_INT8``
   into int8 tensors and int8 ops only. The fake-quantization ops, and with them the STE (their
   registered gradient), do not survive: the converter reads their ranges and removes them.
3. :class:`Int8Model` runs the result with the LiteRT interpreter (``ai_edge_litert``), and
   :meth:`Int8Model.dense_layers` reads back each layer's integers for the NumPy reference
   :func:`ste_utils.integer.int8_dense`.

:func:`fold_batch_norm` folds an inference-mode batch norm into the dense layer before it, as
the converter does.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from ste_utils.integer import int8_dense, quantize_affine, quantize_multiplier
from ste_utils.layers import PACKAGE, LsqQuantize
from ste_utils.quantizers import lsq_grad_scale, lsq_levels, lsq_quantize


def _check_range(lo, hi, name: str) -> tuple[float, float]:
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= 0.0 <= hi and lo < hi):
        raise ValueError(f"{name} must be finite with min <= 0 <= max and min < max. "
                         f"Received: {name}=({lo!r}, {hi!r})")
    return lo, hi


@keras.saving.register_keras_serializable(package=PACKAGE)
class FakeQuant(keras.layers.Layer):
    """``tf.quantization.fake_quant_with_min_max_args`` with a frozen range.

    Forward:  the range nudged so that 0 is a level, then clip and round half up onto
              ``2**num_bits`` levels (``narrow_range``: one fewer, symmetric around 0).
    Backward: the clipped STE, 1{min <= x <= max} (the op's registered gradient).

    Args:
        min, max: the range (``min <= 0 <= max``).
        num_bits: 2..16.
        narrow_range: levels 1..2**b - 1 instead of 0..2**b - 1.
    """

    def __init__(self, min, max, num_bits=8, narrow_range=False, **kwargs):  # noqa: A002 (TF's names)
        super().__init__(**kwargs)
        self.min, self.max = _check_range(min, max, "(min, max)")
        self.num_bits, self.narrow_range = int(num_bits), bool(narrow_range)

    def call(self, inputs):
        return tf.quantization.fake_quant_with_min_max_args(
            inputs, min=self.min, max=self.max, num_bits=self.num_bits, narrow_range=self.narrow_range)

    def get_config(self):
        return {**super().get_config(), "min": self.min, "max": self.max, "num_bits": self.num_bits,
                "narrow_range": self.narrow_range}


@keras.saving.register_keras_serializable(package=PACKAGE)
class QatDense(keras.layers.Dense):
    """A dense layer with bias whose kernel LSQ quantizes (one learned step per layer).

    Forward:  x @ (s * clip(round(W / s), -Q_N, Q_P)) + b
    Backward: :func:`ste_utils.lsq_quantize` (the STE on the rounding; LSQ's eq. 3 for s, with
              the gradient scale 1 / sqrt(N Q_P)). Init: s = 2 mean|W| / sqrt(Q_P) (Esser et al.).

    Args:
        units: outputs.
        bits: weight bits, 2..8 (levels -2**(b-1)..2**(b-1) - 1, inside int8's -127..127).
    """

    def __init__(self, units, bits=8, **kwargs):
        kwargs.pop("use_bias", None)
        super().__init__(units, use_bias=True, **kwargs)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
            raise ValueError(f"bits must be an integer from 2 to 8. Received: bits={bits!r}")
        self.bits = bits

    def build(self, input_shape):
        super().build(input_shape)
        _, q_p = lsq_levels(self.bits, signed=True)
        init = 2.0 * float(np.mean(np.abs(self.kernel.numpy()))) / math.sqrt(q_p)
        self.step = self.add_weight(name="step", shape=(), initializer=keras.initializers.Constant(init),
                                    constraint=lambda s: tf.maximum(s, 1e-6))
        self._grad_scale = lsq_grad_scale(int(np.prod(self.kernel.shape)), self.bits)

    def quantized_kernel(self):
        return lsq_quantize(self.kernel, self.step, self.bits, grad_scale=self._grad_scale)

    def call(self, inputs):
        return tf.matmul(inputs, self.quantized_kernel()) + self.bias

    def get_config(self):
        config = super().get_config()
        config.pop("use_bias", None)
        return {**config, "bits": self.bits}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrozenDense(keras.layers.Layer):
    """The exported dense layer: ``x @ fake_quant(W) + b`` with the kernel's range frozen.

    The kernel is fake-quantized symmetrically (``narrow_range``, 8 bits): one range
    ``[-127 s, 127 s]`` (per tensor) or one per output column (per channel, ``s`` a vector), so
    the converter stores it as int8 with zero point 0 and the scale(s) ``s``.
    """

    def __init__(self, kernel, bias, scale, **kwargs):
        super().__init__(**kwargs)
        self.kernel_value = np.asarray(kernel, np.float32)
        self.bias_value = np.asarray(bias, np.float32)
        self.scale = np.asarray(scale, np.float32)
        if self.scale.ndim not in (0, 1) or np.any(self.scale <= 0):
            raise ValueError(f"scale must be one step > 0 or one per output column. Received: scale={scale!r}")

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=self.kernel_value.shape,
                                      initializer=keras.initializers.Constant(self.kernel_value), trainable=False)
        self.bias = self.add_weight(name="bias", shape=self.bias_value.shape,
                                    initializer=keras.initializers.Constant(self.bias_value), trainable=False)

    def call(self, inputs):
        top = 127.0 * self.scale
        if self.scale.ndim == 0:
            w = tf.quantization.fake_quant_with_min_max_args(self.kernel, min=-float(top), max=float(top),
                                                             num_bits=8, narrow_range=True)
        else:
            w = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                self.kernel, tf.constant(-top), tf.constant(top), num_bits=8, narrow_range=True)
        return tf.matmul(inputs, w) + self.bias

    def get_config(self):
        return {**super().get_config(), "kernel": self.kernel_value.tolist(), "bias": self.bias_value.tolist(),
                "scale": self.scale.tolist()}


def make_qat_mlp(hidden: int = 32, weight_bits: int = 4, n_inputs: int = 64, n_classes: int = 10,
                 seed: int = 0) -> keras.Model:
    """The chapter's QAT network: 8-bit input grid, QatDense, 8-bit LSQ ReLU, QatDense (logits).

    The input (pixels in [0, 1]) is fake-quantized on [0, 1] (255 steps), as the int8 model's
    input will be; the hidden activation is unsigned 8-bit LSQ (which clips below 0: a ReLU).
    """
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((n_inputs,)), FakeQuant(0.0, 1.0, name="input_grid"),
                             QatDense(hidden, weight_bits, name="dense_1"),
                             LsqQuantize(8, signed=False, name="relu_8bit"),
                             QatDense(n_classes, weight_bits, name="logits")], name=f"qat_mlp_w{weight_bits}")


def nudged_range(lo: float, hi: float, num_bits: int = 8) -> tuple[float, float, float, int]:
    """TensorFlow's fake-quantization nudge (its ``Nudge``, in float32): ``(min', max', scale, z)``.

    ``scale = (hi - lo) / (2**b - 1)``; the zero point ``-lo / scale`` rounded half away from
    zero into 0..2**b - 1; ``z`` is that zero point as int8 stores it (minus ``2**(b-1)``).
    """
    lo, hi = _check_range(lo, hi, "(lo, hi)")
    q_max = np.float32(2 ** num_bits - 1)
    scale = (np.float32(hi) - np.float32(lo)) / q_max
    zero_from_min = np.float32(0.0) - np.float32(lo) / scale
    zero = int(min(max(np.floor(zero_from_min + np.float32(0.5)), 0), q_max))  # >= 0: half up = away from 0
    return float(-zero * scale), float((q_max - zero) * scale), float(scale), zero - 2 ** (num_bits - 1)


def freeze(model: keras.Model, calibration: np.ndarray, per_channel: bool = False) -> keras.Model:
    """The float forward pass of a trained :func:`make_qat_mlp` network with every range frozen.

    * input: ``FakeQuant`` as trained; kernels: each ``QatDense``'s quantized kernel, in a
      :class:`FrozenDense` with range ``[-127 s, 127 s]`` (its learned step ``s``; with
      ``per_channel``, one step per column: ``max|column| / 127``);
    * biases rounded to multiples of ``s_x s_W`` (what TFLite keeps as int32);
    * each 8-bit LSQ activation with step ``s``: ``FakeQuant(0, 255 s)``;
    * the logits: ``FakeQuant`` on the nudged [min, max] over ``calibration``'s logits.

    Args:
        model: the trained QAT network.
        calibration: inputs whose logits set the output range (the training images).
        per_channel: per-column kernel scales instead of the learned per-tensor step.

    Returns:
        A Keras model of FakeQuant and FrozenDense layers only (no STE left to train).
    """
    frozen, x_scale = [keras.Input(model.input_shape[1:])], None
    hidden = np.asarray(calibration, np.float32)
    for layer in model.layers:
        if isinstance(layer, FakeQuant):
            frozen.append(FakeQuant(layer.min, layer.max, layer.num_bits, layer.narrow_range, name=layer.name))
            x_scale = nudged_range(layer.min, layer.max, layer.num_bits)[2]
        elif isinstance(layer, QatDense):
            w = layer.quantized_kernel().numpy()
            step = float(layer.step.numpy())
            scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0 if per_channel else np.float32(step)
            if x_scale is None:
                raise ValueError(f"layer {layer.name!r} has no quantized input before it; "
                                 "put a FakeQuant or an 8-bit unsigned LsqQuantize in front")
            grid = x_scale * np.asarray(scale, np.float64)
            bias = np.round(layer.bias.numpy() / grid) * grid
            frozen.append(FrozenDense(w, bias, scale, name=layer.name))
            x_scale = None
        elif isinstance(layer, LsqQuantize):
            if layer.signed or layer.bits != 8:
                raise ValueError(f"only unsigned 8-bit activations export to int8. Received: layer "
                                 f"{layer.name!r} with bits={layer.bits}, signed={layer.signed}")
            step = float(layer.step.numpy())
            frozen.append(FakeQuant(0.0, 255.0 * step, 8, name=layer.name))
            x_scale = nudged_range(0.0, 255.0 * step)[2]
        else:
            raise ValueError(f"freeze knows FakeQuant, QatDense and LsqQuantize layers. "
                             f"Received: {type(layer).__name__} {layer.name!r}")
        hidden = layer(hidden, training=False).numpy()
    lo, hi = float(min(hidden.min(), 0.0)), float(max(hidden.max(), 0.0))
    frozen.append(FakeQuant(lo, hi, 8, name="output_grid"))
    return keras.Sequential(frozen, name=f"{model.name}_frozen")


def fold_batch_norm(kernel, bias, bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """Fold an inference-mode batch norm into the dense layer before it.

    ``BN(x W + b) = x W' + b'`` with ``W' = W * g``, ``b' = (b - mean) * g + beta`` and
    ``g = gamma / sqrt(var + eps)`` per output column (Jacob et al. 2018, section 3.2).
    """
    gamma = bn.gamma.numpy() if bn.scale else 1.0
    beta = bn.beta.numpy() if bn.center else 0.0
    g = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    kernel = np.asarray(kernel, np.float64)
    bias = np.zeros(kernel.shape[1]) if bias is None else np.asarray(bias, np.float64)
    return (kernel * g).astype(np.float32), ((bias - bn.moving_mean.numpy()) * g + beta).astype(np.float32)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the converter's and the interpreter's C++ logging (file descriptor 2), and hand
    back what they wrote if the body fails."""
    import sys

    sys.stderr.flush()
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # "Assets written to ..." of model.export
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except Exception as err:
            os.dup2(saved, 2)
            sink.seek(0)
            raise RuntimeError(f"{err}\n--- converter log ---\n"
                               f"{sink.read().decode(errors='replace')[-4000:]}") from err
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            logger.setLevel(level)


def convert(model: keras.Model, representative: np.ndarray, n_calibration: int = 200,
            per_channel: bool = True) -> bytes:
    """A Keras model as a full-integer TFLite flatbuffer (int8 inputs, outputs and ops).

    ``model.export`` writes a SavedModel; ``TFLiteConverter.from_saved_model`` converts it with
    ``Optimize.DEFAULT``, the first ``n_calibration`` rows of ``representative`` as the
    representative dataset (ranges of tensors without fake quantization) and
    ``TFLITE_BUILTINS_INT8`` only. ``per_channel=False`` asks for one weight scale per tensor
    where the converter chooses the scales itself (post-training quantization).
    """
    rows = np.asarray(representative, np.float32)[:n_calibration]
    if rows.ndim != 2 or len(rows) == 0:
        raise ValueError(f"representative must be a non-empty (n, features) array. Received shape {rows.shape}")
    with tempfile.TemporaryDirectory() as folder, _quiet_stderr():
        model.export(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([row[None, :]] for row in rows)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        converter._experimental_disable_per_channel = not per_channel  # noqa: SLF001 (TF's switch)
        return converter.convert()


def float_tflite(model: keras.Model) -> bytes:
    """The same model converted without quantization (float32 weights): the size to compare."""
    with tempfile.TemporaryDirectory() as folder, _quiet_stderr():
        model.export(folder, verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(folder).convert()


class Int8Model:
    """A full-integer flatbuffer run by the LiteRT interpreter.

    Args:
        content: the flatbuffer (:func:`convert`).
        reference_kernels: TFLite's reference kernels (``BUILTIN_REF``: the fixed-point
            arithmetic of :mod:`ste_utils.integer`) instead of the default optimized kernels
            with the XNNPACK delegate.
    """

    def __init__(self, content: bytes, reference_kernels: bool = False):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
        with _quiet_stderr():
            self.interpreter = Interpreter(model_content=content, experimental_op_resolver_type=resolver,
                                           num_threads=1)
            self.interpreter.allocate_tensors()
        self.content = content
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = 1

    @property
    def input_quantization(self) -> tuple[float, int]:
        return tuple(self.input["quantization"])

    @property
    def output_quantization(self) -> tuple[float, int]:
        return tuple(self.output["quantization"])

    def ops(self) -> list:
        """The operator names, in execution order."""
        return [op["op_name"] for op in self.interpreter._get_ops_details()]  # noqa: SLF001

    def tensors(self) -> list:
        """``(name, dtype, shape, number of scales)`` of every tensor."""
        return [(t["name"], np.dtype(t["dtype"]).name, tuple(int(d) for d in t["shape"]),
                 len(t["quantization_parameters"]["scales"])) for t in self.interpreter.get_tensor_details()]

    def quantize_input(self, x) -> np.ndarray:
        """Float inputs to the model's int8 input (TFLite's QUANTIZE: round half away from zero)."""
        scale, zero = self.input_quantization
        return quantize_affine(x, scale, zero)

    def run(self, q: np.ndarray) -> np.ndarray:
        """int8 inputs (batch, features) to int8 outputs, one example at a time."""
        q = np.asarray(q, np.int8)
        out = np.empty((len(q), int(self.output["shape"][-1])), np.int8)
        for i, row in enumerate(q):
            self.interpreter.set_tensor(self.input["index"], row[None, :])
            self.interpreter.invoke()
            out[i] = self.interpreter.get_tensor(self.output["index"])[0]
        return out

    def logits(self, x) -> np.ndarray:
        """Dequantized outputs for float inputs."""
        scale, zero = self.output_quantization
        return scale * (self.run(self.quantize_input(x)).astype(np.float64) - zero)

    def dense_layers(self) -> list:
        """Each FULLY_CONNECTED op's integers, in order: a dict with ``weights`` (int8, Keras's
        (n_in, n_out) layout), ``bias`` (int32), the input/weight/output scales and zero points,
        the real multipliers ``M = s_x s_W / s_y`` (one per output column) and the clamp."""
        tensors = {t["index"]: t for t in self.interpreter.get_tensor_details()}
        layers = []
        for op in self.interpreter._get_ops_details():  # noqa: SLF001
            if op["op_name"] != "FULLY_CONNECTED":
                continue
            x_t, w_t, b_t = (tensors[i] for i in op["inputs"][:3])
            y_t = tensors[op["outputs"][0]]
            s_x, z_x = x_t["quantization"]
            s_y, z_y = y_t["quantization"]
            s_w = np.asarray(w_t["quantization_parameters"]["scales"], np.float64)
            layers.append({
                "weights": self.interpreter.get_tensor(w_t["index"]).T.copy(),
                "bias": self.interpreter.get_tensor(b_t["index"]).astype(np.int32),
                "x_scale": s_x, "x_zero_point": int(z_x), "w_scales": s_w,
                "y_scale": s_y, "y_zero_point": int(z_y),
                # TFLite's GetQuantizedConvolutionMultipler: the product s_x s_W in float32, then
                # divided by s_y in double
                "multipliers": (np.float32(s_x) * s_w.astype(np.float32)).astype(np.float64) / np.float64(s_y)
                * np.ones(w_t["shape"][0])})
        return layers


def integer_forward(layers: list, q: np.ndarray, relu_after=None) -> np.ndarray:
    """Run :meth:`Int8Model.dense_layers` in NumPy with :func:`ste_utils.integer.int8_dense`.

    Each column uses its own ``(multiplier, shift)`` (per-channel scales); a ReLU between layers
    is the clamp's lower end raised to the output zero point (TFLite fuses it so).
    """
    relu_after = [True] * (len(layers) - 1) + [False] if relu_after is None else relu_after
    for layer, relu in zip(layers, relu_after):
        columns = []
        for j, m in enumerate(layer["multipliers"]):
            mult, shift = quantize_multiplier(float(m))
            columns.append(int8_dense(q, layer["x_zero_point"], layer["weights"][:, j:j + 1],
                                      layer["bias"][j:j + 1], mult, shift, layer["y_zero_point"],
                                      activation_min=layer["y_zero_point"] if relu else -128))
        q = np.concatenate(columns, axis=1)
    return q


def latency(predict, x: np.ndarray, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds per example of ``predict(x)`` (this machine's, one thread)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        predict(x)
        best = min(best, time.perf_counter() - start)
    return best / len(x)


__all__ = ["FakeQuant", "QatDense", "FrozenDense", "make_qat_mlp", "nudged_range", "freeze", "fold_batch_norm",
           "convert", "float_tflite", "Int8Model", "integer_forward", "latency"]
