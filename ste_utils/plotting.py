"""Figures the course draws more than once: a quantizer's forward and backward passes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def value_and_grad(fn, x, upstream=None):
    """``fn(x)`` and the gradient TensorFlow computes for it, as tensors.

    The gradient is ``d fn / dx`` contracted with ``upstream`` (ones when None); unlike
    :func:`forward_backward`, a missing gradient stays ``None``, which is what the course shows.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return y, tape.gradient(y, x, output_gradients=upstream)


def forward_backward(fn, x):
    """Values ``fn(x)`` and elementwise gradients ``d fn / dx`` on a grid, as NumPy arrays.

    A gradient TensorFlow reports as ``None`` (no path from x) is returned as zeros.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    dy = tape.gradient(y, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return np.asarray(y), np.asarray(dy)


def plot_forward_backward(fn, x=None, axes=None, label=None, **plot_kwargs):
    """Plot ``fn`` (left) and its gradient as TensorFlow computes it (right).

    Args:
        fn: function of one float tensor, e.g. ``ste_sign`` or ``tf.round``.
        x: 1-D grid (default: 801 points on [-2, 2], which include 0 and +-1 exactly).
        axes: two matplotlib axes; new ones are made when None.
        label: legend label (default: the function's name).

    Returns:
        The two axes.
    """
    import matplotlib.pyplot as plt

    if x is None:
        x = np.linspace(-2.0, 2.0, 801, dtype=np.float32)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 3), constrained_layout=True)
    label = label or getattr(fn, "__name__", "f")
    y, dy = forward_backward(fn, x)
    axes[0].plot(x, y, label=label, **plot_kwargs)
    axes[1].plot(x, dy, label=label, **plot_kwargs)
    axes[0].set(title="forward pass", xlabel="x", ylabel="f(x)")
    axes[1].set(title="backward pass (gradient TensorFlow uses)", xlabel="x", ylabel="df/dx")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    return axes


def plot_curves(histories, key="loss", ax=None, ylabel=None):
    """Plot one metric per epoch for several training runs (``{name: history_dict}``)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3), constrained_layout=True)
    for name, history in histories.items():
        values = history[key]
        ax.plot(np.arange(1, len(values) + 1), values, marker="o", ms=3, label=name)
    ax.set(xlabel="epoch", ylabel=ylabel or key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


__all__ = ["value_and_grad", "forward_backward", "plot_forward_backward", "plot_curves"]
