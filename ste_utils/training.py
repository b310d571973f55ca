"""Small models and a training loop for the digits data (seconds on a laptop CPU)."""

from __future__ import annotations

import keras
import numpy as np

from ste_utils.data import Split
from ste_utils.layers import BinaryDense, SteSign

MODEL_KINDS = ("float", "binary")


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed``)."""
    keras.utils.set_random_seed(int(seed))


def make_mlp(kind: str = "float", hidden=(256, 256), n_inputs: int = 64, n_classes: int = 10,
             seed: int = 0) -> keras.Model:
    """A multilayer perceptron for 8x8 digits.

    ``"float"``: Dense -> BatchNorm -> tanh per hidden layer, then Dense logits.
    ``"binary"``: the BinaryNet recipe (Hubara et al., 2016): every weight matrix binarized
    with ``ste_sign``, hidden activations binarized with ``ste_sign``, BatchNorm before each
    sign; the first layer sees the real-valued pixels. Same sizes as the float twin.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}. Received: kind={kind!r}")
    set_seed(seed)
    layers = [keras.Input((n_inputs,))]
    for units in hidden:
        if kind == "float":
            layers += [keras.layers.Dense(units, use_bias=False), keras.layers.BatchNormalization(),
                       keras.layers.Activation("tanh")]
        else:
            layers += [BinaryDense(units, use_bias=False), keras.layers.BatchNormalization(),
                       SteSign()]
    if kind == "float":
        layers += [keras.layers.Dense(n_classes)]
    else:
        layers += [BinaryDense(n_classes, use_bias=False), keras.layers.BatchNormalization()]
    return keras.Sequential(layers, name=f"{kind}_mlp")


def train(model: keras.Model, data: Split, epochs: int = 10, batch_size: int = 64,
          learning_rate: float = 1e-2, seed: int = 0, verbose: int = 0) -> dict:
    """Train with Adam on softmax cross-entropy (logits); return the per-epoch history.

    The learning rate decays from ``learning_rate`` to 0 along a cosine over the run, which
    settles the sign flips of binarized weights in the last epochs.

    The history holds ``loss``, ``accuracy``, ``val_loss`` and ``val_accuracy`` (test split).
    """
    set_seed(seed)
    steps = epochs * int(np.ceil(len(data.x_train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                        validation_data=(data.x_test, data.y_test), shuffle=True, verbose=verbose)
    return history.history


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Share of ``x`` whose argmax prediction equals ``y``."""
    predictions = np.argmax(model.predict(x, verbose=0), axis=-1)
    return float(np.mean(predictions == np.asarray(y)))


__all__ = ["MODEL_KINDS", "set_seed", "make_mlp", "train", "accuracy"]
