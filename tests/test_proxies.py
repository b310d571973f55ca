"""Backward proxies and the ste(forward, proxy, idiom) factory, against NumPy references.

Conventions at the kinks (the spec): relu' = 1{x > 0} (0 at 0), clipped_relu' = 1{0 < x <= 1}
(0 at 0, 1 at 1), hardtanh' = 1{|x| <= 1} (1 at +-1), identity' = 1. They must hold for both
idioms (custom_gradient with the written-out derivative, stop_gradient through TensorFlow's
autodiff of the proxy) and for a callable proxy (autodiff), and the two idioms must give
identical gradients everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import ste_utils
from ste_utils_testing import (
    DTYPES, DTYPES_BF16, MODES, SHAPES, around_zero, assert_same, dtype_id, eps, neighbours,
    run_cases, sample, seed_for, upstream_like,
)

REF_PROXIES = {
    "identity": (lambda x: x, lambda x: np.ones(x.shape, bool)),
    "relu": (lambda x: np.maximum(x, 0), lambda x: x > 0),
    "clipped_relu": (lambda x: np.minimum(np.maximum(x, 0), 1), lambda x: (x > 0) & (x <= 1)),
    "hardtanh": (lambda x: np.clip(x, -1, 1), lambda x: np.abs(x) <= 1),
}

FORWARDS = {  # name: (TensorFlow forward, NumPy reference)
    "binarize": (ste_utils.binarize, lambda x: np.where(x >= 0, 1.0, -1.0).astype(x.dtype)),
    "round": (tf.round, lambda x: np.round(x)),
    "quantize2": (lambda t: ste_utils.quantize(t, 2),
                  lambda x: (np.round(np.clip(x, 0, 1) * x.dtype.type(3)).astype(np.float64) / 3
                             ).astype(x.dtype)),
}


def kink_points(dtype):
    """0, -0, +-1, the neighbours of +-1 and of 0, 0.5, +-2."""
    points = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, -2.0, *around_zero(dtype)]
    points += [*neighbours(1.0, dtype), *neighbours(-1.0, dtype)]
    return np.asarray(points, np.float64).astype(dtype)


def masked(upstream, window):
    return np.where(window, upstream, np.zeros_like(upstream)).astype(upstream.dtype)


def test_the_named_proxies():
    assert set(ste_utils.PROXIES) == set(REF_PROXIES)
    for proxy in ste_utils.PROXIES.values():
        assert isinstance(proxy, ste_utils.Proxy)
        assert callable(proxy.function) and callable(proxy.derivative)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
def test_proxy_functions_derivatives_and_autodiff_agree(dtype, mode):
    """p(x) and the written-out p'(x) match NumPy, and TensorFlow's autodiff of p gives the same
    p'(x), kinks included: the convention the stop_gradient idiom inherits."""
    x = np.concatenate([kink_points(dtype), sample((24,), dtype, -2.0, 2.0, seed=5)])
    up = upstream_like(x.shape, dtype, seed=6)
    for name, (ref_p, ref_dp) in REF_PROXIES.items():
        proxy = ste_utils.PROXIES[name]
        ((p, (g,)),) = run_cases([(proxy.function, [x], up)], mode)
        ((dp, _),) = run_cases([(proxy.derivative, [x], up)], mode)
        assert_same(p, ref_p(x).astype(dtype), f"{name}(x) ({mode})")
        assert_same(dp, ref_dp(x).astype(dtype), f"{name}'(x) ({mode})")
        assert_same(g, masked(up, ref_dp(x)), f"autodiff of {name} ({mode})")


# Gradient of ste(tf.round, proxy) at the kinks, upstream 1 (the spec, written out).
KINK_X = [-2.0, "below -1", -1.0, -0.5, -0.0, 0.0, "tiny", 0.5, "below 1", 1.0, "above 1", 2.0]
KINK_GRAD = {
    "identity":     [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    "relu":         [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
    "clipped_relu": [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0],
    "hardtanh":     [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
}
KINDS = ["custom_gradient", "stop_gradient", "callable-custom_gradient", "callable-stop_gradient"]


def kink_x(dtype):
    named = {"below -1": neighbours(-1.0, dtype)[0], "below 1": neighbours(1.0, dtype)[0],
             "above 1": neighbours(1.0, dtype)[1], "tiny": around_zero(dtype)[1]}
    return np.asarray([named.get(v, v) for v in KINK_X], np.float64).astype(dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", KINK_GRAD)
def test_convention_at_every_kink(name, kind, mode):
    """Named proxies in both idioms, and the same formula passed as a callable (autodiff)."""
    idiom = kind.rsplit("-", 1)[-1]
    proxy = ste_utils.PROXIES[name].function if kind.startswith("callable") else name
    x = kink_x(np.float32)
    ((y, (g,)),) = run_cases([(ste_utils.ste(tf.round, proxy=proxy, idiom=idiom), [x],
                               np.ones_like(x))], mode)
    assert_same(y, np.round(x), f"forward of ste(tf.round, {name}, {kind})")
    assert g.astype(int).tolist() == KINK_GRAD[name], f"{name}, {kind} ({mode}): x = {x.tolist()}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
def test_ste_values_and_gradients_shapes_dtypes_modes(dtype, mode):
    """Every named proxy in both idioms; shapes and forward functions cycle over the cases."""
    combos = [(name, idiom) for name in REF_PROXIES for idiom in ste_utils.IDIOMS]
    for i, (name, idiom) in enumerate(combos):
        shape = SHAPES[i % len(SHAPES)]
        forward_name = list(FORWARDS)[i % len(FORWARDS)]
        forward, ref_forward = FORWARDS[forward_name]
        seed = seed_for("ste", name, idiom, dtype_id(dtype))
        x = sample(shape, dtype, -2.0, 2.0, kink_points(dtype), seed=seed)
        up = upstream_like(shape, dtype, seed=seed + 1)
        ((y, (g,)),) = run_cases([(ste_utils.ste(forward, proxy=name, idiom=idiom), [x], up)], mode)
        what = f"ste({forward_name}, {name}, {idiom}) on {shape} ({mode})"
        assert_same(y, ref_forward(x).astype(dtype), f"{what} value")
        assert_same(g, masked(up, REF_PROXIES[name][1](x)), f"{what} gradient")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("idiom", ste_utils.IDIOMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_callable_proxies_are_differentiated_by_autodiff(dtype, idiom, mode):
    """p(x) = x^2 / 2 has p'(x) = x, exact in floating point: gradient = upstream * x.
    p = tanh: gradient = upstream * (1 - tanh^2), within 4 eps of the dtype (relative)."""
    # Not +-tiny: upstream * tiny is subnormal, which TensorFlow flushes to zero on CPU.
    x = sample((3, 5), dtype, -2.0, 2.0, [p for p in kink_points(dtype) if abs(p) != around_zero(dtype)[1]],
               seed=9)
    up = upstream_like(x.shape, dtype, seed=10)
    ((y, (g,)),) = run_cases([(ste_utils.ste(tf.round, proxy=lambda t: t * t / 2, idiom=idiom),
                               [x], up)], mode)
    if idiom == "custom_gradient":
        assert_same(y, np.round(x), "forward (exact)")
    else:  # p + (round(x) - p), each operation rounded in the dtype: not always round(x) when
        # p = x^2/2 and round(x) have opposite signs (float16: x = -1.72 gives -1.999)
        p = (x * x / dtype(2)).astype(dtype)
        assert_same(y, (p + (np.round(x) - p)).astype(dtype), "forward p + (f - p)")
    assert_same(g, (up * x).astype(dtype), "d(x^2/2)/dx = x")
    ((_, (g,)),) = run_cases([(ste_utils.ste(tf.round, proxy=tf.tanh, idiom=idiom), [x], up)], mode)
    expected = up.astype(np.float64) * (1 - np.tanh(x.astype(np.float64)) ** 2)
    np.testing.assert_allclose(g.astype(np.float64), expected, rtol=4 * eps(dtype),
                               atol=4 * eps(dtype), err_msg=f"tanh proxy ({idiom}, {mode})")


IDENTICAL_PROXIES = {
    **{name: name for name in REF_PROXIES},
    "callable relu": lambda t: tf.nn.relu(t),
    "callable tanh": tf.tanh,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=dtype_id)
def test_idioms_give_identical_gradients_everywhere(dtype, mode):
    """float16: every finite value in [-3, 3]; float32: kinks, their neighbours and 4,000
    random values. Gradients bit for bit equal, values too (no cancellation for |x| <= 3)."""
    if dtype == np.float16:
        every = np.arange(2 ** 16, dtype=np.uint16).view(np.float16)
        x = every[np.isfinite(every) & (np.abs(every) <= 3)]
    else:
        x = np.concatenate([kink_points(dtype), sample((4000,), dtype, -3.0, 3.0, seed=11)])
    up = upstream_like(x.shape, dtype, seed=12)
    for i, (name, proxy) in enumerate(IDENTICAL_PROXIES.items()):
        forward_name = list(FORWARDS)[i % len(FORWARDS)]
        forward = FORWARDS[forward_name][0]
        ((y_cg, (g_cg,)),) = run_cases([(ste_utils.ste(forward, proxy, "custom_gradient"), [x], up)], mode)
        ((y_sg, (g_sg,)),) = run_cases([(ste_utils.ste(forward, proxy, "stop_gradient"), [x], up)], mode)
        assert_same(g_sg, g_cg, f"gradients of the two idioms, proxy {name} ({mode})")
        assert_same(y_sg, y_cg, f"values of the two idioms, forward {forward_name} ({mode})")


def test_estimator_is_named_after_its_parts():
    est = ste_utils.ste(tf.round, proxy="relu")
    assert est.__name__ == "ste_round_relu"
    assert "relu" in est.__doc__ and "custom_gradient" in est.__doc__
