"""ste_utils helpers: jacobian, plotting, data and the training helpers' argument checks."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import ste_utils  # noqa: E402
from ste_utils import data, plotting, training  # noqa: E402


# ------------------------------------------------------------------ jacobian
def test_jacobian_of_a_product_is_two_diagonals():
    a = np.asarray([1.0, -2.0, 0.5], np.float64)
    b = np.asarray([3.0, 0.25, -4.0], np.float64)
    d_a, d_b = ste_utils.jacobian(lambda u, v: u * v, a, b)
    assert isinstance(d_a, np.ndarray) and d_a.dtype == np.float64
    assert np.array_equal(d_a, np.diag(b)) and np.array_equal(d_b, np.diag(a))


def test_jacobian_shape_is_output_shape_plus_input_shape():
    """d(A @ M)[i, j] / dA[k, l] = delta_ik M[l, j]."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 3)).astype(np.float32)
    m = rng.normal(size=(3, 4)).astype(np.float32)
    (d_a,) = ste_utils.jacobian(lambda t: tf.matmul(t, tf.constant(m)), a)
    expected = np.einsum("ik,lj->ijkl", np.eye(2), m)
    assert d_a.shape == (2, 4, 2, 3)
    np.testing.assert_allclose(d_a, expected, rtol=0, atol=0)


def test_jacobian_of_an_unconnected_input_is_zeros():
    d_x, d_y = ste_utils.jacobian(lambda x, y: 2.0 * x, tf.constant([1.0, 2.0]), tf.constant([5.0]))
    assert np.array_equal(d_x, 2 * np.eye(2))
    assert d_y.shape == (2, 1) and not d_y.any()


def test_jacobian_rejects_integer_inputs():
    with pytest.raises(TypeError, match=re.escape("Received: inputs[1].dtype=int32")):
        ste_utils.jacobian(lambda x, y: x, tf.constant([1.0]), tf.constant([1]))


# ------------------------------------------------------------------ plotting
def test_forward_backward_turns_a_missing_gradient_into_zeros():
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    for fn in (ste_utils.binarize, tf.round, ste_utils.heaviside):
        y, dy = plotting.forward_backward(fn, x)
        assert dy.shape == x.shape and dy.dtype == np.float32 and not dy.any()
        assert np.array_equal(y, np.asarray(fn(tf.constant(x))))


def test_forward_backward_of_ste_sign():
    x = np.linspace(-2, 2, 9, dtype=np.float32)  # includes 0 and +-1
    y, dy = plotting.forward_backward(ste_utils.ste_sign, x)
    assert np.array_equal(y, np.where(x >= 0, 1, -1))
    assert np.array_equal(dy, np.abs(x) <= 1)


def test_plot_forward_backward_draws_labelled_panels():
    axes = plotting.plot_forward_backward(ste_utils.ste_sign, label="ste_sign")
    try:
        assert len(axes) == 2
        for ax in axes:
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
        (forward_line,), (backward_line,) = axes[0].get_lines(), axes[1].get_lines()
        x = forward_line.get_xdata()
        assert x.size == 801 and {0.0, -1.0, 1.0} <= set(x.tolist())
        y, dy = plotting.forward_backward(ste_utils.ste_sign, x)
        assert np.array_equal(forward_line.get_ydata(), y)
        assert np.array_equal(backward_line.get_ydata(), dy)
        assert forward_line.get_label() == "ste_sign"
    finally:
        plt.close("all")


def test_plot_curves_one_line_per_run():
    histories = {"float": {"loss": [1.0, 0.5, 0.25]}, "binary": {"loss": [2.0, 1.0, 0.8]}}
    ax = plotting.plot_curves(histories, key="loss")
    try:
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss"
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["float", "binary"]
        assert lines[1].get_xdata().tolist() == [1, 2, 3]
        assert lines[1].get_ydata().tolist() == [2.0, 1.0, 0.8]
    finally:
        plt.close("all")


# ------------------------------------------------------------------ data
def test_load_digits_shapes_range_and_labels():
    split = data.load_digits()
    assert split.x_train.shape == (1347, 64) and split.x_test.shape == (450, 64)
    assert split.y_train.shape == (1347,) and split.y_test.shape == (450,)
    for x in (split.x_train, split.x_test):
        assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
        assert np.array_equal(x * 16, np.round(x * 16))  # pixels 0..16 scaled by 1/16
    assert set(np.unique(split.y_train)) == set(range(10)) == set(np.unique(split.y_test))


def test_load_digits_is_stratified():
    split = data.load_digits(test_fraction=0.25)
    total = np.bincount(np.concatenate([split.y_train, split.y_test]), minlength=10)
    test = np.bincount(split.y_test, minlength=10)
    assert total.sum() == 1797
    assert (np.abs(test - 0.25 * total) <= 1).all(), (test, 0.25 * total)


def test_load_digits_is_seeded():
    a, b, c = data.load_digits(seed=0), data.load_digits(seed=0), data.load_digits(seed=1)
    for left, right in zip(a, b):
        assert np.array_equal(left, right)
    assert not np.array_equal(a.y_train, c.y_train)


def test_load_digits_fraction():
    split = data.load_digits(test_fraction=0.5)
    assert len(split.x_test) in (898, 899) and len(split.x_train) + len(split.x_test) == 1797


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, 0.0, 1.0])
def test_load_digits_bad_fraction(fraction):
    with pytest.raises(ValueError, match=re.escape(
            f"test_fraction must be in (0, 1). Received: test_fraction={fraction!r}")):
        data.load_digits(test_fraction=fraction)


# ------------------------------------------------------------------ training helpers
@pytest.mark.parametrize("kind", ["quantized", "", None, "Binary"])
def test_make_mlp_bad_kind(kind):
    with pytest.raises(ValueError, match=re.escape(f"Received: kind={kind!r}")):
        training.make_mlp(kind)
    with pytest.raises(ValueError, match=re.escape("kind must be one of")):
        training.make_mlp(kind)


@pytest.mark.parametrize("kind", ["float", "binary"])
def test_make_mlp_shapes(kind):
    model = training.make_mlp(kind, hidden=(16, 8))
    out = model(np.zeros((2, 64), np.float32))
    assert out.shape == (2, 10)
    kernels = [layer for layer in model.layers if hasattr(layer, "kernel")]
    assert [int(layer.kernel.shape[1]) for layer in kernels] == [16, 8, 10]
    binary = [isinstance(layer, ste_utils.BinaryDense) for layer in kernels]
    assert binary == ([kind == "binary"] * 3)


def test_accuracy_is_the_share_of_argmax_hits():
    model = training.make_mlp("float", hidden=(8,))
    x = np.random.default_rng(0).uniform(size=(20, 64)).astype(np.float32)
    predicted = np.argmax(model.predict(x, verbose=0), axis=1)
    y = predicted.copy()
    y[:5] = (y[:5] + 1) % 10
    assert training.accuracy(model, x, y) == 0.75
