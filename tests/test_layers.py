"""Keras layers over the quantizers: complete get_config, .keras round trip, BinaryDense maths."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

import ste_utils

# (class, constructor arguments other than the defaults)
LAYERS = [
    (ste_utils.SteSign, {"clip_value": 0.5}),
    (ste_utils.SteSign, {"clip_value": None}),
    (ste_utils.SteHeaviside, {"clip_value": 2.0}),
    (ste_utils.SteRound, {}),
    (ste_utils.SteQuantize, {"bits": 3}),
    (ste_utils.BinaryDense, {"units": 4, "binarize_inputs": False, "clip_value": 0.5}),
    (ste_utils.BinaryDense, {"units": 4, "binarize_inputs": True, "clip_value": 1.5}),
    (ste_utils.BinaryDense, {"units": 3, "binarize_inputs": True, "clip_value": None,
                             "use_bias": False}),
]
LAYERS += [
    (ste_utils.LsqQuantize, {"bits": 4}),
    (ste_utils.LsqQuantize, {"bits": 3, "signed": False, "init_step": 0.25, "grad_scale": 0.5}),
    (ste_utils.VectorQuantizer, {"num_codes": 5, "dim": 6, "beta": 0.5}),
    (ste_utils.LsqPlusQuantize, {"bits": 4}),
    (ste_utils.LsqPlusQuantize, {"bits": 3, "signed": True, "init_step": 0.25, "init_offset": -0.5,
                                 "grad_scale": 0.5}),
]
if hasattr(ste_utils, "SteActivation"):  # the proxy-choosing activation, where present
    LAYERS.append((ste_utils.SteActivation, {"bits": 2, "proxy": "relu"}))
IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in args.items()) or 'defaults'}"
       for cls, args in LAYERS]


def own_parameters(cls):
    """The constructor's named parameters (those of the class itself, not **kwargs)."""
    return [name for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


@pytest.mark.parametrize("cls,args", LAYERS, ids=IDS)
def test_get_config_is_complete(cls, args):
    layer = cls(**args)
    config = layer.get_config()
    for name in own_parameters(cls):
        assert name in config, f"{cls.__name__}.get_config() lacks {name!r}"
    for name, value in args.items():
        assert config[name] == value, f"{name}: {config[name]!r} != {value!r}"
    rebuilt = cls.from_config(config)
    assert type(rebuilt) is cls
    assert rebuilt.get_config() == config


def test_latent_clip_config_and_values():
    constraint = ste_utils.LatentClip(0.5)
    config = constraint.get_config()
    assert config == {"clip_value": 0.5}
    assert ste_utils.LatentClip.from_config(config).get_config() == config
    w = np.asarray([[-2.0, -0.5, -0.25], [0.0, 0.5, 3.0]], np.float32)
    assert np.array_equal(np.asarray(constraint(tf.constant(w))), np.clip(w, -0.5, 0.5))


def test_binary_dense_default_constraint_is_latent_clip():
    layer = ste_utils.BinaryDense(3, clip_value=0.75)
    assert isinstance(layer.kernel_constraint, ste_utils.LatentClip)
    assert layer.kernel_constraint.clip_value == 0.75
    assert ste_utils.BinaryDense(3, clip_value=None).kernel_constraint is None
    custom = keras.constraints.NonNeg()
    assert ste_utils.BinaryDense(3, kernel_constraint=custom).kernel_constraint is custom


def _model_around(layer, n_in=6, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((n_in,))
    hidden = keras.layers.Dense(n_in, name="before")(inputs)
    outputs = keras.layers.Dense(3, name="after")(layer(hidden))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("cls,args", LAYERS, ids=IDS)
def test_keras_save_load_round_trip(cls, args, tmp_path):
    """Saved and loaded without custom_objects (the classes are registered): same class, same
    config, same weights, identical outputs."""
    model = _model_around(cls(**args))
    x = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)
    before = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer, twin = model.layers[2], loaded.layers[2]
    assert type(twin) is cls
    assert twin.get_config() == layer.get_config()
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert np.array_equal(a, b)
    assert np.array_equal(loaded.predict(x, verbose=0), before)


def test_latent_clip_round_trip_in_a_dense_layer(tmp_path):
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Dense(2, kernel_constraint=ste_utils.LatentClip(0.25))])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    constraint = loaded.layers[0].kernel_constraint
    assert isinstance(constraint, ste_utils.LatentClip) and constraint.clip_value == 0.25


@pytest.mark.parametrize("cls,fn,args", [
    (ste_utils.SteSign, ste_utils.ste_sign, {"clip_value": 0.5}),
    (ste_utils.SteHeaviside, ste_utils.ste_heaviside, {"clip_value": 2.0}),
    (ste_utils.SteRound, ste_utils.ste_round, {}),
    (ste_utils.SteQuantize, ste_utils.ste_quantize, {"bits": 3}),
], ids=["SteSign", "SteHeaviside", "SteRound", "SteQuantize"])
def test_activation_layers_are_their_functions(cls, fn, args):
    x = tf.constant(np.linspace(-2.5, 2.5, 41, dtype=np.float32).reshape(1, -1))
    up = tf.constant(np.random.default_rng(2).normal(size=(1, 41)).astype(np.float32))
    layer = cls(**args)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_layer = layer(x)
        y_fn = fn(x, **args)
    assert np.array_equal(y_layer.numpy(), y_fn.numpy())
    assert np.array_equal(tape.gradient(y_layer, x, output_gradients=up).numpy(),
                          tape.gradient(y_fn, x, output_gradients=up).numpy())


# ------------------------------------------------------------------ BinaryDense maths
def _sign(a):
    return np.where(a >= 0, 1.0, -1.0)


@pytest.mark.parametrize("binarize_inputs", [False, True])
def test_binary_dense_uses_sign_of_the_latent_kernel(binarize_inputs):
    """y = s(x) @ sign(W) + b, with s = sign when inputs are binarized; the gradient reaches the
    latent kernel as x^T g masked by 1{|W| <= clip}, and x as g sign(W)^T masked by 1{|x| <=
    clip} (binarized inputs). Dyadic inputs make every float32 sum exact, so == is fair."""
    clip = 0.5
    rng = np.random.default_rng(3)
    x = (rng.integers(-8, 9, size=(5, 4)) / 8).astype(np.float32)     # includes 0, +-0.5
    x[0, :3] = [0.0, 0.5, -0.5]
    w = (rng.integers(-12, 13, size=(4, 3)) / 8).astype(np.float32)   # some |w| > clip
    w[:, 0] = [0.0, 0.5, -0.5, 1.5]
    b = np.asarray([0.25, -0.5, 1.0], np.float32)
    up = (rng.integers(-8, 9, size=(5, 3)) / 4).astype(np.float32)
    layer = ste_utils.BinaryDense(3, binarize_inputs=binarize_inputs, clip_value=clip)
    layer.build((None, 4))
    layer.set_weights([w, b])
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
    g_x, g_w, g_b = tape.gradient(y, [xt, layer.kernel, layer.bias], output_gradients=tf.constant(up))
    effective_x = _sign(x) if binarize_inputs else x
    assert np.array_equal(y.numpy(), effective_x @ _sign(w) + b)
    assert np.array_equal(g_w.numpy(), (effective_x.T @ up) * (np.abs(w) <= clip))
    assert np.array_equal(g_b.numpy(), up.sum(axis=0))
    x_window = (np.abs(x) <= clip) if binarize_inputs else np.ones_like(x)
    assert np.array_equal(g_x.numpy(), (up @ _sign(w).T) * x_window)
    assert np.any(g_w.numpy() != 0), "the latent kernel must receive a gradient"


def test_binary_dense_training_keeps_latent_weights_clipped_and_moves_them():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), ste_utils.BinaryDense(3, clip_value=0.5)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=10.0), loss="mse")
    before = model.layers[0].kernel.numpy().copy()
    x = np.random.default_rng(4).normal(size=(32, 4)).astype(np.float32)
    y = np.random.default_rng(5).normal(size=(32, 3)).astype(np.float32)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    after = model.layers[0].kernel.numpy()
    assert not np.array_equal(before, after)
    assert np.abs(after).max() <= 0.5


# ------------------------------------------------------------------ backend check


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("cls,args", LAYERS, ids=IDS)
def test_layers_refuse_another_keras_backend(cls, args, backend, monkeypatch):
    """The layers call TensorFlow directly: on another backend they fail when constructed, with
    a message naming the backend received, not later inside a trace."""
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    with pytest.raises(RuntimeError, match=rf"{cls.__name__} needs Keras's TensorFlow backend.*"
                                           rf"Received: keras\.backend\.backend\(\)='{backend}'"):
        cls(**args)
    monkeypatch.undo()
    assert isinstance(cls(**args), keras.layers.Layer)


def test_importing_ste_utils_sets_no_environment_variable():
    """Importing the library leaves the process environment alone (oneDNN and TF's log level are
    the entry points' business: Makefile, binder/start, ste-course, the sandbox)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KERAS_"))}
    code = ("import os; before = dict(os.environ); import ste_utils; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().splitlines()[-1]
    assert out == "[]", f"importing ste_utils changed the environment: {out}"


def test_lsq_quantize_keeps_its_learned_step_after_loading(tmp_path):
    """The data-dependent initialisation happens once: a loaded model (initialized flag saved)
    keeps its step when it first sees other data."""
    model = _model_around(ste_utils.LsqQuantize(4))
    x = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)
    model.predict(x, verbose=0)
    step = model.layers[2].step.numpy()
    model.save(tmp_path / "lsq.keras")
    loaded = keras.saving.load_model(tmp_path / "lsq.keras")
    loaded.predict(100 * x, verbose=0)
    assert loaded.layers[2].step.numpy() == step != 1.0


def test_lsq_plus_layer_min_max_start_values_gradients_and_loading(tmp_path):
    """First call: offset = min(x), step = (max - min) / (Q_N + Q_P); the output is
    lsq_plus_quantize's; both parameters get gradients; a loaded model keeps them."""
    model = _model_around(ste_utils.LsqPlusQuantize(2))
    x = np.random.default_rng(2).normal(size=(16, 6)).astype(np.float32)
    model.predict(x, verbose=0)
    layer = model.layers[2]
    hidden = model.layers[1](x).numpy()
    assert layer.offset.numpy() == hidden.min() and np.isclose(layer.step.numpy(), (hidden.max() - hidden.min()) / 3)
    wider = 2 * hidden                                   # beyond the first batch's range: clipped
    with tf.GradientTape() as tape:
        y = layer(wider)
        total = tf.reduce_sum(y)
    d_step, d_offset = tape.gradient(total, [layer.step, layer.offset])
    expected = ste_utils.lsq_plus_quantize(wider, layer.step.numpy(), layer.offset.numpy(), 2,
                                           grad_scale=ste_utils.lsq_grad_scale(hidden.shape[1], 2, signed=False))
    np.testing.assert_array_equal(y.numpy(), expected.numpy())
    assert float(d_step) != 0.0 and float(d_offset) != 0.0       # clipped inputs reach the offset
    model.save(tmp_path / "lsq_plus.keras")
    loaded = keras.saving.load_model(tmp_path / "lsq_plus.keras")
    loaded.predict(100 * x, verbose=0)
    assert loaded.layers[2].offset.numpy() == layer.offset.numpy()
    assert loaded.layers[2].step.numpy() == layer.step.numpy()
    with pytest.raises(ValueError, match="init_step and init_offset are given together"):
        ste_utils.LsqPlusQuantize(2, init_step=0.5)
    with pytest.raises(ValueError, match="init_offset must be a finite number or None. Received: init_offset=nan"):
        ste_utils.LsqPlusQuantize(2, init_step=0.5, init_offset=float("nan"))
