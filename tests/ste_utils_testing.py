"""Shared pieces of the ste_utils tests: execution modes, dtypes, shapes and input builders.

The NumPy references live in the test modules themselves, written from the specification
(not from the implementation). This module only runs a function the three ways the API
promises (eager, ``tf.function``, ``tf.function(jit_compile=True)``) and builds inputs that put
the points where bugs live (0, -0, the clip boundaries and their float neighbours) first.
"""

from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import tensorflow as tf

MODES = ("eager", "function", "xla")
DTYPES = (np.float16, np.float32, np.float64)
BFLOAT16 = ml_dtypes.bfloat16
DTYPES_BF16 = DTYPES + (BFLOAT16,)
SHAPES = ((), (17,), (4, 6), (2, 3, 5))


def dtype_id(dtype) -> str:
    return np.dtype(dtype).name


def eps(dtype) -> float:
    """Machine epsilon of a NumPy (or ml_dtypes) float dtype."""
    return float(ml_dtypes.finfo(dtype).eps)


def compile_in_mode(body, mode: str):
    """``body`` itself (eager), or a fresh ``tf.function`` (traced, or compiled with XLA)."""
    if mode == "eager":
        return body
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    return tf.function(body, jit_compile=(mode == "xla"), autograph=False)


def run_cases(cases, mode: str):
    """Values and vector-Jacobian products of several functions in one trace/compilation.

    ``cases`` is a list of ``(fn, inputs, upstream)``; for each, ``y = fn(*inputs)`` and
    ``upstream^T dy/d input_i`` are computed. All cases share one ``tf.function`` (one XLA
    compilation), which keeps the suite fast while every case keeps its own shape, dtype and
    arguments. Returns a list of ``(y, [grad_i])`` with NumPy arrays; a gradient TensorFlow
    reports as ``None`` (no path to that input) is returned as ``None``.
    """
    sizes = [len(inputs) for _, inputs, _ in cases]
    missing = []

    def body(flat):
        out, k = [], 0
        missing.clear()  # filled when traced; a tf.function cannot return None
        with tf.GradientTape(persistent=True) as tape:
            ys = []
            for (fn, _, _), size in zip(cases, sizes):
                inputs = flat[k:k + size]
                k += size
                for t in inputs:
                    tape.watch(t)
                ys.append((fn(*inputs), inputs))
        for (y, inputs), upstream in zip(ys, flat[k:]):
            grads = [tape.gradient(y, t, output_gradients=upstream) for t in inputs]
            grads = [None if g is None else tf.convert_to_tensor(g) for g in grads]  # IndexedSlices
            missing.append([g is None for g in grads])
            out.append((y, [tf.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]))
        return out

    flat = [tf.constant(np.asarray(a)) for _, inputs, _ in cases for a in inputs]
    flat += [tf.constant(np.asarray(up)) for _, _, up in cases]
    results = compile_in_mode(body, mode)(flat)
    return [(y.numpy(), [None if gone else g.numpy() for g, gone in zip(grads, flags)])
            for (y, grads), flags in zip(results, missing)]


def value_and_grads(fn, inputs, upstream, mode: str):
    """``fn(*inputs)`` as a NumPy array and the list of its vector-Jacobian products."""
    return run_cases([(fn, inputs, upstream)], mode)[0]


def value_and_grad(fn, x, upstream, mode: str):
    """One-input version of :func:`value_and_grads`: (value, gradient or None)."""
    y, (g,) = value_and_grads(fn, [x], upstream, mode)
    return y, g


def seed_for(*key) -> int:
    """A seed derived from a test's parameters (stable across runs, unlike ``hash``)."""
    return zlib.crc32(repr(key).encode())


def sample(shape, dtype, low: float, high: float, specials=(), seed=0) -> np.ndarray:
    """Uniform values in [low, high) of ``dtype`` with ``specials`` in the first positions."""
    rng = np.random.default_rng(seed)
    flat = rng.uniform(low, high, size=int(np.prod(shape, dtype=int))).astype(dtype)
    specials = np.asarray(specials, dtype=dtype).ravel()
    k = min(flat.size, specials.size)
    flat[:k] = specials[:k]
    return flat.reshape(shape)


def upstream_like(shape, dtype, seed=1) -> np.ndarray:
    """A random upstream gradient (normal, no zeros), so a product with it is really tested."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=shape)
    g = np.where(np.abs(g) < 0.1, 0.1 + np.abs(g), g)
    return np.asarray(g).astype(dtype)


def neighbours(value, dtype):
    """The floats of ``dtype`` just below and just above ``value`` (np.nextafter)."""
    v = np.asarray(value, dtype=dtype)
    return (np.nextafter(v, np.asarray(-np.inf, dtype)), np.nextafter(v, np.asarray(np.inf, dtype)))


def around_zero(dtype):
    """The smallest normal floats -tiny and +tiny of ``dtype``: the neighbours of 0 as TensorFlow
    sees them. Its CPU kernels (and XLA's) flush float32/float64 subnormals to zero, so
    np.nextafter(0, -1) = -1e-45 compares as -0 >= 0 there (ste_sign gives +1); float16 and
    bfloat16 are computed through float32, where their subnormals are normal numbers."""
    tiny = float(ml_dtypes.finfo(dtype).tiny)
    return (-tiny, tiny)


def clip_specials(clip_value, dtype):
    """0, -0, +-clip_value and their neighbours in ``dtype``, and the neighbours of 0."""
    points = [0.0, -0.0, *around_zero(dtype)]
    if clip_value:
        for c in (clip_value, -clip_value):
            points += [c, *neighbours(c, dtype)]
    return np.asarray(points, dtype=np.float64).astype(dtype)


def assert_same(actual, expected, what=""):
    """Exact equality (0 == -0), shapes and dtypes included."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    same = (a == e) | (np.isnan(a) & np.isnan(e))
    if not same.all():
        bad = np.flatnonzero(~same.ravel())[:8]
        raise AssertionError(f"{what}: {int((~same).sum())} of {same.size} differ; at flat "
                             f"indices {bad.tolist()}: got {a.ravel()[bad].tolist()}, "
                             f"expected {e.ravel()[bad].tolist()}")
