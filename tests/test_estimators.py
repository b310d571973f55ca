"""straight_through (the stop_gradient idiom) and its Jacobian, against NumPy references.

Forward: x + sg(result - x) equals ``result`` wherever that float expression does not cancel;
the references below say where it does (|x| >> |result|) and the tests check both sides.
Backward: d/dx is the identity (the upstream passes unchanged), d/d(result) is zero.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import ste_utils
from ste_utils_testing import (
    DTYPES_BF16, MODES, SHAPES, around_zero, assert_same, dtype_id, neighbours, run_cases, sample, seed_for,
    upstream_like, value_and_grad,
)

RESULTS = {
    "round": lambda x: np.round(x).astype(x.dtype),
    "sign": lambda x: np.where(x >= 0, 1.0, -1.0).astype(x.dtype),
    "heaviside": lambda x: np.where(x > 0, 1.0, 0.0).astype(x.dtype),
}


def no_gradient(g):
    """None (TensorFlow: no path, stop_gradient cuts it) or an all-zero array."""
    return g is None or not np.any(g)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
def test_straight_through_value_and_gradients(dtype, mode):
    """Every shape, three kinds of ``result``; |x| <= 4 so no cancellation: the value is
    ``result`` exactly, d/dx passes the random upstream unchanged, d/d(result) is zero."""
    for shape in SHAPES:
        for name, ref in RESULTS.items():
            seed = seed_for("st", shape, name, dtype_id(dtype))
            x = sample(shape, dtype, -4.0, 4.0, [0.0, -0.0, 0.5, -0.5, 1.5, 4.0, -4.0], seed=seed)
            r = ref(x)
            up = upstream_like(shape, dtype, seed=seed + 1)
            ((y, (g_x, g_r)),) = run_cases([(ste_utils.straight_through, [x, r], up)], mode)
            what = f"straight_through(x, {name}(x)), shape {shape} ({mode})"
            assert_same(y, r, what)
            assert_same(g_x, up, f"{what}: d/dx")
            assert no_gradient(g_r), f"{what}: d/d(result) = {g_r}"


@pytest.mark.parametrize("mode", ["eager", "xla"])
def test_straight_through_every_float16_input(mode):
    """All finite float16 x with result = sign(x): the value is x + (r - x) rounded in float16
    (NumPy's float16 arithmetic), which is exactly r for |x| <= 2048 and never r above."""
    every = np.arange(2 ** 16, dtype=np.uint16).view(np.float16)
    x = every[np.isfinite(every)]
    r = RESULTS["sign"](x)
    with np.errstate(over="ignore"):
        formula = (x + (r - x)).astype(np.float16)  # each operation rounded to float16
    y, _ = value_and_grad(lambda t: ste_utils.straight_through(t, tf.constant(r)), x,
                          np.ones_like(x), mode)
    assert_same(y, formula, "x + sg(sign(x) - x) in float16")
    small = np.abs(x) <= 2048  # 2048 + (1 - 2048) = 2048 - 2047 = 1: still exact
    assert_same(y[small], r[small], "exact up to |x| = 2048")
    assert (y[~small] != r[~small]).all(), "float16 spacing is 2 above 2048: +-1 cannot survive"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype,big", [(np.float16, 3000.0), (np.float32, 1e8)],
                         ids=["float16-3000", "float32-1e8"])
def test_documented_cancellation(dtype, big, mode):
    """x + (1 - x) = 0 for x = 3000 in float16 (spacing 2) and 1e8 in float32 (spacing 8); the
    gradient is unaffected; the custom_gradient quantizers stay exact at the same x."""
    x = np.asarray([big, 0.5], dtype)
    r = np.asarray([1.0, 1.0], dtype)
    up = upstream_like(x.shape, dtype)
    ((y, (g_x, g_r)), (sign, (g_sign,)), (hard, _), (sg_idiom, _), (cg_idiom, _)) = [
        run_cases([case], mode)[0] for case in [
            (ste_utils.straight_through, [x, r], up),
            (lambda t: ste_utils.ste_sign(t, clip_value=None), [x], up),
            (ste_utils.ste_heaviside, [x], up),
            (ste_utils.ste(ste_utils.binarize, idiom="stop_gradient"), [x], up),
            (ste_utils.ste(ste_utils.binarize, idiom="custom_gradient"), [x], up),
        ]]
    assert y.tolist() == [0.0, 1.0], "straight_through should cancel at x = big (documented)"
    assert_same(g_x, up, "gradient unaffected by the cancellation")
    assert no_gradient(g_r)
    assert sign.tolist() == [1.0, 1.0] and hard.tolist() == [1.0, 1.0]
    assert_same(g_sign, up, "ste_sign(clip_value=None) gradient")
    assert sg_idiom.tolist() == [0.0, 1.0], "ste(..., idiom='stop_gradient') inherits it"
    assert cg_idiom.tolist() == [1.0, 1.0], "ste(..., idiom='custom_gradient') is exact"


@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
@pytest.mark.parametrize("n", [1, 5])
def test_straight_through_jacobian_is_identity_then_zero(n, dtype):
    x = sample((n,), dtype, -3.0, 3.0, seed=n)
    r = np.round(x).astype(dtype)
    expected = np.concatenate([np.eye(n), np.zeros((n, n))], axis=1).astype(dtype)
    assert_same(ste_utils.straight_through_jacobian(x, r), expected, f"[I | 0], n={n}")


@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 1, 3)], ids=str)
def test_jacobian_of_straight_through_any_shape(shape):
    """tape.jacobian blocks have shape S + T: identity reshaped for x, zeros for result; the
    flattened helper gives the same numbers."""
    x = sample(shape, np.float32, -2.0, 2.0, seed=4)
    r = np.round(x)
    d_x, d_r = ste_utils.jacobian(ste_utils.straight_through, x, r)
    size = x.size
    assert_same(d_x, np.eye(size, dtype=np.float32).reshape(shape + shape), "d out/d x")
    assert_same(d_r, np.zeros(shape + shape, np.float32), "d out/d result")
    flat = ste_utils.straight_through_jacobian(x, r)
    assert_same(flat, np.concatenate([d_x.reshape(size, size), d_r.reshape(size, size)], axis=1),
                "flattened")


def test_jacobian_changes_when_the_estimator_is_broken():
    """The [I | 0] check can fail: without stop_gradient the blocks are [0 | I]."""
    x = np.asarray([0.3, -1.2], np.float32)
    r = np.round(x)
    d_x, d_r = ste_utils.jacobian(lambda a, b: a + (b - a), x, r)
    assert not np.array_equal(np.concatenate([d_x, d_r], axis=1),
                              ste_utils.straight_through_jacobian(x, r))


def test_docstring_example():
    y = ste_utils.straight_through(tf.constant([-0.4, 0.7]), tf.round(tf.constant([-0.4, 0.7])))
    assert y.numpy().tolist() == [0.0, 1.0]


# ------------------------------------------------------------------ non-finite upstream gradients
PROXY_WINDOWS = {  # where p'(x) = 1 (the spec, as in test_proxies)
    "identity": lambda x: np.ones(x.shape, bool),
    "relu": lambda x: x > 0,
    "clipped_relu": lambda x: (x > 0) & (x <= 1),
    "hardtanh": lambda x: np.abs(x) <= 1,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=dtype_id)
@pytest.mark.parametrize("idiom", ste_utils.IDIOMS)
def test_ste_non_finite_upstream_is_zero_where_the_proxy_is_flat(idiom, dtype, mode):
    """ste(round, proxy) with upstream inf, -inf, NaN at the kinks (0, +-1, their neighbours) and
    outside: 0 where p'(x) = 0, the upstream unchanged where p'(x) = 1, in both idioms (the
    written-out derivative is applied by a select; the proxy functions' own autodiff selects)."""
    points = np.asarray([0.0, -0.0, 1.0, -1.0, *neighbours(1.0, dtype), *neighbours(-1.0, dtype),
                         *around_zero(dtype), 0.5, 3.0, -3.0], np.float64).astype(dtype)
    x = np.repeat(points, 3)
    up = np.tile(np.asarray([np.inf, -np.inf, np.nan], dtype), points.size)
    cases = [(ste_utils.ste(tf.round, proxy=name, idiom=idiom), [x], up) for name in PROXY_WINDOWS]
    for (name, window), (y, (g,)) in zip(PROXY_WINDOWS.items(), run_cases(cases, mode)):
        what = f"ste(round, {name!r}, {idiom!r}) ({mode})"
        assert_same(y, np.round(x), what)
        assert_same(g, np.where(window(x), up, np.zeros_like(up)).astype(dtype), f"{what}: gradient")
