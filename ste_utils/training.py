"""Small models and a training loop for the digits data (seconds on a laptop CPU)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ste_utils.data import Split
from ste_utils.layers import BinaryDense, SteSign
from ste_utils.quantizers import binarize

MODEL_KINDS = ("float", "binary", "binary_no_ste")


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed``)."""
    keras.utils.set_random_seed(int(seed))


class _PlainBinaryDense(keras.layers.Dense):
    """Dense layer whose weights are binarized WITHOUT a straight-through estimator.

    Forward:  y = x @ binarize(W)    (+1 for w >= 0, -1 otherwise)
    Backward: none reaches W: ``binarize`` is a ``tf.where`` on a comparison, so TensorFlow
              returns ``None`` for dL/dW and an optimizer never changes W. This is the
              failing baseline of the course (chapters 2 and 3), not a layer to train.
    """

    def call(self, inputs):
        outputs = keras.ops.matmul(inputs, binarize(self.kernel))
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs


def make_mlp(kind: str = "float", hidden=(256, 256), n_inputs: int = 64, n_classes: int = 10,
             seed: int = 0) -> keras.Model:
    """A multilayer perceptron for 8x8 digits.

    ``"float"``: Dense -> BatchNorm -> tanh per hidden layer, then Dense logits.
    ``"binary"``: the BinaryNet recipe (Hubara et al., 2016): every weight matrix binarized
    with ``ste_sign``, hidden activations binarized with ``ste_sign``, BatchNorm before each
    sign; the first layer sees the real-valued pixels. Same sizes as the float twin.
    ``"binary_no_ste"``: the same network with every ``ste_sign`` replaced by the plain
    :func:`~ste_utils.quantizers.binarize` (no straight-through gradient). No weight matrix
    receives a gradient; only the last BatchNorm's scale and offset (2 x n_classes numbers)
    can learn. It shows why the STE is needed.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}. Received: kind={kind!r}")
    set_seed(seed)
    layers = [keras.Input((n_inputs,))]
    for i, units in enumerate(hidden):
        if kind == "float":
            layers += [keras.layers.Dense(units, use_bias=False), keras.layers.BatchNormalization(),
                       keras.layers.Activation("tanh")]
        elif kind == "binary":
            layers += [BinaryDense(units, use_bias=False), keras.layers.BatchNormalization(),
                       SteSign()]
        else:
            layers += [_PlainBinaryDense(units, use_bias=False, name=f"plain_binary_dense_{i}"),
                       keras.layers.BatchNormalization(), keras.layers.Activation(binarize)]
    if kind == "float":
        layers += [keras.layers.Dense(n_classes)]
    elif kind == "binary":
        layers += [BinaryDense(n_classes, use_bias=False), keras.layers.BatchNormalization()]
    else:
        layers += [_PlainBinaryDense(n_classes, use_bias=False, name="plain_binary_dense_out"),
                   keras.layers.BatchNormalization()]
    return keras.Sequential(layers, name=f"{kind}_mlp")


class WeightChange(keras.callbacks.Callback):
    """Record how far a variable moves in each training epoch.

    ``norms[e]`` = ||W_{e+1} - W_e||_F, with W_0 the value when training starts and W_e
    the value after epoch e. ``initial`` holds W_0 and ``final`` the value after the last epoch.
    A variable that receives no gradient (or a zero one, under Adam or SGD without weight
    decay) has all norms exactly 0.

    Args:
        variable: a ``keras.Variable`` (e.g. ``model.layers[0].kernel``).
    """

    def __init__(self, variable):
        super().__init__()
        if not hasattr(variable, "numpy"):
            raise TypeError("variable must be a Keras or TensorFlow variable. "
                            f"Received: variable={variable!r}")
        self.variable = variable
        self.initial = None
        self.final = None
        self.norms = []

    def on_train_begin(self, logs=None):
        self.initial = np.array(self.variable.numpy(), copy=True)
        self.final = self.initial
        self.norms = []

    def on_epoch_end(self, epoch, logs=None):
        current = np.array(self.variable.numpy(), copy=True)
        self.norms.append(float(np.linalg.norm(current - self.final)))
        self.final = current


def train(model: keras.Model, data: Split, epochs: int = 10, batch_size: int = 64,
          learning_rate: float = 1e-2, seed: int = 0, verbose: int = 0, callbacks=None) -> dict:
    """Train with Adam on softmax cross-entropy (logits); return the per-epoch history.

    The learning rate decays from ``learning_rate`` to 0 along a cosine over the run, which
    settles the sign flips of binarized weights in the last epochs.

    The history holds ``loss``, ``accuracy``, ``val_loss`` and ``val_accuracy`` (test split).
    ``callbacks`` (e.g. :class:`WeightChange`) are passed to ``model.fit``.
    """
    set_seed(seed)
    steps = epochs * int(np.ceil(len(data.x_train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                        validation_data=(data.x_test, data.y_test), shuffle=True, verbose=verbose,
                        callbacks=callbacks)
    return history.history


def batch_gradients(model: keras.Model, x, y) -> dict:
    """Gradients of the mean cross-entropy on one batch, per trainable variable.

    Returns ``{variable.path: gradient}`` where a gradient is a NumPy array, or ``None`` when
    TensorFlow finds no differentiable path from the loss to that variable (e.g. behind a plain
    ``tf.round`` or :func:`~ste_utils.quantizers.binarize`). The forward pass runs in training
    mode, so BatchNormalization uses (and updates its moving averages with) the batch statistics.

    Args:
        model: a Keras model producing logits.
        x: inputs of one batch.
        y: integer labels of the batch.
    """
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    return {v.path: (None if g is None else np.asarray(g)) for v, g in zip(variables, grads)}


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Share of ``x`` whose argmax prediction equals ``y``."""
    predictions = np.argmax(model.predict(x, verbose=0), axis=-1)
    return float(np.mean(predictions == np.asarray(y)))


__all__ = ["MODEL_KINDS", "set_seed", "make_mlp", "WeightChange", "train", "batch_gradients",
           "accuracy"]
