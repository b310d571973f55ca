"""Assignment 01's references: the gradients ``tf.GradientTape`` gives for a dense layer and a
one-hidden-layer tanh network, written as the chain rule in float64, op for op as TensorFlow's
registered gradients compute them, and summed in the order TensorFlow's CPU kernels sum at these
sizes (:func:`matmul`, :func:`sum_rows`): the numbers are the tape's bit for bit, except where
TensorFlow's tanh (Eigen's vectorized approximation) and NumPy's (the C library's) differ in the
last bit, which then moves the network's gradients by a few units in their last place.

The network (float64, a batch of B rows)::

    z1  = x @ W1 + b1,   h = tanh(z1),   out = h @ W2 + b2,   L = mean((out - y)**2)

Backward, as the tape runs it::

    dL/dout = (1 / (B K)) * ((out - y) * 2)       MeanGrad (a division by B K), then SquareGrad
    dL/dW2  = h.T @ dL/dout                       MatMulGrad
    dL/db2  = sum over the batch of dL/dout       AddV2's broadcast gradient
    dL/dh   = dL/dout @ W2.T
    dL/dz1  = dL/dh * (1 - h * h)                 TanhGrad
    dL/dW1  = x.T @ dL/dz1,   dL/db1 = sum over the batch of dL/dz1
"""

from __future__ import annotations

import numpy as np

from ste_course.references.eigen import eigen_sum

PARAMS = ("W1", "b1", "W2", "b2")


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b as TensorFlow's MatMul gives it for small matrices: each entry summed left to
    right, every product and sum rounded (no fused multiply-add; BLAS, behind NumPy's ``@``,
    blocks and fuses, which moves the last bit)."""
    out = a[:, :1] * b[:1, :]
    for t in range(1, a.shape[1]):
        out = out + a[:, t:t + 1] * b[t:t + 1, :]
    return out


def sum_rows(a: np.ndarray) -> np.ndarray:
    """``tf.reduce_sum(a, axis=0)`` of a (B, M) matrix. M > 1: row after row. M = 1: a full
    reduction of the B values, in Eigen's order (:func:`ste_course.references.eigen.eigen_sum`)."""
    if a.shape[1] != 1:
        out = a[0]
        for row in a[1:]:
            out = out + row
        return out
    return np.array([eigen_sum(a[:, 0])])


def _dense_grads(x: np.ndarray, W: np.ndarray, upstream: np.ndarray) -> tuple:
    """Gradients of out = x @ W + b given dL/dout = upstream: (dL/dx, dL/dW, dL/db)."""
    return matmul(upstream, W.T), matmul(x.T, upstream), sum_rows(upstream)


def _network(case) -> tuple:
    """({"dL/dW1": ..., "dL/db1": ..., "dL/dW2": ..., "dL/db2": ...}, dL/dh) in float64."""
    x, y, W1, b1, W2, b2 = (np.asarray(case[k], np.float64) for k in ("x", "y", *PARAMS))
    h = np.tanh(matmul(x, W1) + b1)
    out = matmul(h, W2) + b2
    d_out = (1.0 / y.size) * ((out - y) * 2.0)
    d_h, d_W2, d_b2 = _dense_grads(h, W2, d_out)
    d_z1 = d_h * (1.0 - h * h)
    _, d_W1, d_b1 = _dense_grads(x, W1, d_z1)
    return {"dL/dW1": d_W1, "dL/db1": d_b1, "dL/dW2": d_W2, "dL/db2": d_b2}, d_h


def dense_backward(case) -> dict:
    """``backprop/dense_backward``: dL/dx = upstream @ W.T, dL/dW = x.T @ upstream,
    dL/db = upstream summed over the batch."""
    x, W, upstream = (np.asarray(case[k], np.float64) for k in ("x", "W", "upstream"))
    return dict(zip(("dL/dx", "dL/dW", "dL/db"), _dense_grads(x, W, upstream)))


def hidden_upstream(case) -> dict:
    """``backprop/hidden_upstream``: dL/dh = dL/dout @ W2.T, shape (B, H)."""
    return {"dL/dh": _network(case)[1]}


def backward(case) -> dict:
    """``backprop/backward``: the gradients of L with respect to W1, b1, W2 and b2."""
    return _network(case)[0]
