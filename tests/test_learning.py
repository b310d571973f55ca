"""Learning: a binarized MLP (binary weights and activations through ste_sign) learns the digits,
beside its float twin; without an STE the layers below a plain binarize never move.

Fixed seeds; 15 epochs each (about 6 s per model on 2 cores; the time is measured in bench/,
not here).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import ste_utils
from ste_utils.data import load_digits
from ste_utils.training import accuracy, make_mlp, train

EPOCHS = 15
THRESHOLD = 0.95


@pytest.fixture(scope="module")
def digits():
    return load_digits(test_fraction=0.25, seed=0)


def test_binary_mlp_and_its_float_twin_reach_95_percent(digits):
    results = {}
    for kind in ("binary", "float"):
        model = make_mlp(kind, seed=0)
        history = train(model, digits, epochs=EPOCHS, seed=0)
        assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert len(history["loss"]) == EPOCHS
        assert history["loss"][-1] < history["loss"][0], f"{kind}: the loss did not go down"
        results[kind] = (model, accuracy(model, digits.x_test, digits.y_test))
    for kind, (_, acc) in results.items():
        assert acc >= THRESHOLD, f"{kind} MLP: test accuracy {acc:.4f} < {THRESHOLD}"

    # The binary one really is binary: every weight matrix goes through ste_sign (BinaryDense),
    # and every hidden activation the next layer sees is +-1.
    binary = results["binary"][0]
    dense = [layer for layer in binary.layers if hasattr(layer, "kernel")]
    assert dense and all(isinstance(layer, ste_utils.BinaryDense) for layer in dense)
    signs = [layer for layer in binary.layers if isinstance(layer, ste_utils.SteSign)]
    assert len(signs) == 2
    probe = keras.Model(binary.inputs, [layer.output for layer in signs])
    for hidden in probe.predict(digits.x_test[:64], verbose=0):
        assert set(np.unique(hidden).tolist()) == {-1.0, 1.0}


def test_without_ste_the_first_layer_never_moves(digits):
    """Chapter 2: a plain binarize (tf.where on a comparison) passes no gradient, so the layers
    below it keep their initial weights however long the model trains; the layer above learns."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, use_bias=False, name="first"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Activation(ste_utils.binarize, name="binarize"),
        keras.layers.Dense(10, name="last"),
    ])
    first_before = model.get_layer("first").kernel.numpy().copy()
    gamma_before = model.get_layer("bn").gamma.numpy().copy()
    last_before = model.get_layer("last").kernel.numpy().copy()
    train(model, digits, epochs=2, seed=0)
    assert np.array_equal(model.get_layer("first").kernel.numpy(), first_before)
    assert np.array_equal(model.get_layer("bn").gamma.numpy(), gamma_before)
    assert not np.array_equal(model.get_layer("last").kernel.numpy(), last_before), \
        "the layer above the binarize should have learned (else the check above means nothing)"
