"""Assignment 02's references, in NumPy: the gradients ``tf.GradientTape`` gives for plain
quantizers (``tf.round``, ``tf.sign``, ``tf.floor``) and for a small MLP built with them.

The MLP is float32 step for step as TensorFlow computes it, ``tf.tanh`` included
(:func:`eigen_tanh`): near saturation tanh'(z) = 1 - tanh(z)**2 cancels, so a tanh one unit in
the last place off would move a gradient far beyond the float32 tolerance.
"""

from __future__ import annotations

import numpy as np

from ste_course.references.elementwise import as_tensorflow_sees

# ----------------------------------------------------------------------------- tf_gradient
# d/dx of sum(fn(x)) for each operation of ste_course.specs.zero_gradient.OPERATIONS.
GRADIENTS = {
    "round": lambda x: np.zeros_like(x),        # no gradient (None), shown as 0
    "sign": lambda x: np.zeros_like(x),         # TensorFlow's SignGrad: zeros
    "floor": lambda x: np.zeros_like(x),        # no gradient (None), shown as 0
    "x_times_round": lambda x: np.round(x),     # product rule: 1 * round(x) + x * (None)
    "sign_plus_half_x": lambda x: np.full_like(x, 0.5),  # 0 from sign, 0.5 from 0.5 * x
}


def tf_gradient(case) -> dict:
    """The gradient of ``sum(fn(x))`` with respect to x, zeros where TensorFlow returns None."""
    return {"gradient": GRADIENTS[case["op"]](as_tensorflow_sees(case["x"]))}


# ----------------------------------------------------------------------------- the small MLP
# Eigen's float32 tanh (ptanh_float, EIGEN_FAST_MATH, no FMA: TensorFlow 2.21's x86-64 wheel):
# the [9, 8] rational approximation on the input clamped to [-c, c], where it reaches 1.
_TANH_CLAMP = np.float32(7.90738964080810547)
_TANH_ALPHA = np.array([1.394553628e-8, 2.102733560e-5, 3.520756727e-3, 1.340216100e-1], np.float32)
_TANH_BETA = np.array([8.015776984e-7, 3.326951409e-4, 2.597254514e-2, 4.673548340e-1, 1.0], np.float32)


def _horner(t: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """c_0 t^k + ... + c_k by Horner's rule, a multiply and an add each rounded to float32."""
    p = np.full_like(t, coefficients[0])
    for c in coefficients[1:]:
        p = p * t + c
    return p


def eigen_tanh(z: np.ndarray) -> np.ndarray:
    """``tf.tanh`` of float32 ``z`` bit for bit (checked on 400,000 inputs): with x = clip(z, -c, c),
    tanh(z) ~ (x + x^3 P(x^2)) / Q(x^2), P and Q of degree 3 and 4 (Eigen's ``ptanh_float``, as
    TensorFlow's x86-64 wheel computes it without FMA; a build that fuses the multiply-adds may
    differ in the last bit)."""
    x = np.clip(as_tensorflow_sees(np.asarray(z, np.float32)), -_TANH_CLAMP, _TANH_CLAMP)
    x2 = x * x
    return (x2 * x * _horner(x2, _TANH_ALPHA) + x) / _horner(x2, _TANH_BETA)


ACTIVATIONS = {"tanh": eigen_tanh, "sign": np.sign, "round": np.round}  # np.round: half to even, as tf.round
QUANTIZERS = ("sign", "round")


def _names(case) -> list:
    return [n for n in str(case["activations"]).split(",") if n]


def _params(case) -> list:
    """[(W1, b1), (W2, b2), ...] as float32 arrays."""
    return [(np.asarray(case[f"W{i}"], np.float32), np.asarray(case[f"b{i}"], np.float32))
            for i in range(1, len(_names(case)) + 2)]


def _forward(case):
    """The layer inputs h_0 = x, h_1, ... and the output: h_i = a_i(h_{i-1} @ W_i + b_i), no
    activation after the last layer."""
    names, inputs = _names(case), []
    h = np.asarray(case["x"], np.float32)
    for i, (W, b) in enumerate(_params(case)):
        inputs.append(h)
        h = h @ W + b
        if i < len(names):
            h = ACTIVATIONS[names[i]](h).astype(np.float32)
    return inputs, h


def _gradients(case):
    """(output, [(dL/dW_i, dL/db_i) or None]) for L = mean((out - y)**2), as the tape gives them.

    dL/dout = (1/N) * (2 (out - y)) (TensorFlow's MeanGrad and SquareGrad, in float32); then per
    layer dW = h^T d, db = sum_batch d, d <- (d W^T) * (1 - h^2) through tanh. tf.sign's
    gradient is 0 and tf.round has none, so every layer before the last quantizer gets None
    here (the tape gives zeros after tf.sign: the same flags and the same step).
    """
    names, params = _names(case), _params(case)
    inputs, out = _forward(case)
    y = np.asarray(case["y"], np.float32)
    d = np.float32(1.0 / y.size) * ((out - y) * np.float32(2.0))
    grads: list = [None] * len(params)
    for i in range(len(params) - 1, -1, -1):
        W, _ = params[i]
        grads[i] = (inputs[i].T @ d, d.sum(axis=0))
        if i == 0:
            break
        name = names[i - 1]  # the activation that produced inputs[i]
        if name in QUANTIZERS:
            break
        h = inputs[i]
        d = (d @ W.T) * (np.float32(1) - h * h)
    return out, grads


def forward(case) -> dict:
    """The MLP's output, float32."""
    return {"output": _forward(case)[1]}


def receives_gradient(case) -> dict:
    """(n_layers, 2) bools: does dL/dW_i, dL/db_i have a nonzero entry?"""
    flags = [g is not None and bool(np.any(g != 0)) for pair in _gradients(case)[1]
             for g in (pair if pair is not None else (None, None))]
    return {"receives gradient": np.array(flags, bool).reshape(-1, 2)}


def sgd_step(case) -> dict:
    """The parameters after W <- W - learning_rate * dL/dW (float32), unchanged without a gradient."""
    rate = np.float32(case["learning_rate"])
    out = {}
    for i, (pair, grads) in enumerate(zip(_params(case), _gradients(case)[1]), start=1):
        for name, old, g in zip((f"W{i}", f"b{i}"), pair, grads if grads is not None else (None, None)):
            out[name] = old if g is None else (old - rate * g).astype(old.dtype)
    return out
