"""Jacobians, computed with ``tf.GradientTape.jacobian``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ste_utils._validation import as_float_tensor
from ste_utils.estimators import straight_through


def jacobian(fn, *inputs):
    """Jacobians of ``fn(*inputs)`` with respect to each input, as NumPy arrays.

    For an output of shape ``S`` and an input of shape ``T`` the Jacobian has shape ``S + T``;
    an input the output does not depend on gets zeros (never ``None``).

    Example:
        >>> jacobian(lambda x: 2.0 * x, tf.constant([1.0, 2.0]))[0]
        array([[2., 0.],
               [0., 2.]], dtype=float32)
    """
    tensors = [as_float_tensor(t, f"inputs[{i}]") for i, t in enumerate(inputs)]
    with tf.GradientTape(persistent=True) as tape:
        for t in tensors:
            tape.watch(t)
        out = fn(*tensors)
    blocks = [tape.jacobian(out, t, unconnected_gradients=tf.UnconnectedGradients.ZERO)
              for t in tensors]
    del tape
    return [b.numpy() for b in blocks]


def straight_through_jacobian(x, result):
    """The Jacobian of ``straight_through(x, result)`` with respect to ``[x, result]``.

    For vectors of length n it is the n x 2n matrix [d out/d x | d out/d result], which the
    stop-gradient argument says equals [I | 0].

    Returns:
        A NumPy array of shape (n, 2n), with x and result flattened.
    """
    x = tf.reshape(as_float_tensor(x, "x"), [-1])
    result = tf.reshape(as_float_tensor(result, "result"), [-1])
    d_x, d_result = jacobian(straight_through, x, result)
    return np.concatenate([d_x, d_result], axis=1)


__all__ = ["jacobian", "straight_through_jacobian"]
