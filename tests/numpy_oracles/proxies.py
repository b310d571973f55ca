"""Oracles of assignment 06's references: ``ste_utils.PROXIES``' derivatives, and a trained 2-bit
digits model exported as the assignment asks; :func:`rebuild_model` is the Keras model the
NumPy inference pass (``ste_course.references.proxies.digits_logits``) stands for."""

import functools

import numpy as np


def _derivative():
    import ste_utils

    return lambda name, x: ste_utils.PROXIES[name].derivative(x)


def rebuild_model(bits: int, proxy: str, weights: list):
    """The graded model in Keras, from ``ste_utils`` layers and the exported weights:
    Dense(H) -> BatchNormalization() -> ``ste_utils.SteActivation(bits, proxy)`` -> Dense(10)."""
    import keras

    from ste_utils import SteActivation

    hidden = int(weights[1].shape[0])
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hidden), keras.layers.BatchNormalization(),
                              SteActivation(bits=bits, proxy=proxy), keras.layers.Dense(10)])
    model.set_weights([np.asarray(w, np.float32) for w in weights])
    return model


@functools.lru_cache(maxsize=1)
def trained_export() -> dict:
    """Assignment 06's Part 4 answer, small: Dense(64) -> BN -> SteActivation(2, "relu") ->
    Dense(10) trained on ``training_digits()`` for 6 epochs, exported as plain data."""
    import keras

    import ste_utils
    from ste_utils.training import set_seed, train

    set_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64), keras.layers.BatchNormalization(),
                              ste_utils.SteActivation(bits=2, proxy="relu"), keras.layers.Dense(10)])
    train(model, ste_utils.data.training_digits(), epochs=6, learning_rate=1e-2)
    return {"bits": 2, "proxy": "relu", "weights": model.get_weights()}


ORACLES = {
    "proxies/derivative": _derivative,
    "digits_model/accuracy": trained_export,
}
