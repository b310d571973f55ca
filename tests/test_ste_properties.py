"""Property tests (hypothesis): forward values lie in the quantizer's set, gradients in {0, 1}
matching the documented window, the Jacobian of straight_through is [I | 0].

Eager mode (the other modes are covered case by case in test_quantizers.py). TensorFlow's first
call of a function is slow, so hypothesis gets no deadline. Subnormal inputs are left out where
a value is compared with a reference: TensorFlow's CPU kernels flush them to zero.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ste_utils
from ste_utils_testing import value_and_grad

SETTINGS = settings(deadline=None, max_examples=50)
WIDTHS = {np.float16: 16, np.float32: 32, np.float64: 64}


@st.composite
def float_arrays(draw, min_dims=0, max_dims=3, finite=False, subnormal=False, bound=None):
    dtype = draw(st.sampled_from(list(WIDTHS)))
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=5))
    elements = st.floats(width=WIDTHS[dtype], allow_nan=False, allow_infinity=not finite,
                         allow_subnormal=subnormal, min_value=None if bound is None else -bound,
                         max_value=bound)
    return draw(hnp.arrays(dtype, shape, elements=elements))


clip_values = st.none() | st.floats(0, 4) | st.sampled_from([0.0, 1.0, 0.5])


def gradient_with_ones(fn, x):
    return value_and_grad(fn, x, np.ones_like(x), "eager")


@SETTINGS
@given(x=float_arrays(), clip_value=clip_values)
def test_ste_sign_values_are_plus_minus_one_gradients_the_window(x, clip_value):
    y, g = gradient_with_ones(lambda t: ste_utils.ste_sign(t, clip_value=clip_value), x)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert set(np.unique(y).tolist()) <= {-1.0, 1.0}
    assert set(np.unique(g).tolist()) <= {0.0, 1.0}
    assert np.array_equal(y, np.where(x >= 0, 1, -1))
    clip = np.inf if clip_value is None else x.dtype.type(clip_value)
    assert np.array_equal(g, np.abs(x) <= clip)


@SETTINGS
@given(x=float_arrays(), clip_value=clip_values)
def test_ste_heaviside_values_are_zero_one(x, clip_value):
    y, g = gradient_with_ones(lambda t: ste_utils.ste_heaviside(t, clip_value=clip_value), x)
    assert set(np.unique(y).tolist()) <= {0.0, 1.0}
    assert set(np.unique(g).tolist()) <= {0.0, 1.0}
    assert np.array_equal(y, x > 0)
    clip = np.inf if clip_value is None else x.dtype.type(clip_value)
    assert np.array_equal(g, np.abs(x) <= clip)


@SETTINGS
@given(x=float_arrays(subnormal=True), data=st.data())
def test_ste_quantize_values_are_levels(x, data):
    limit = 11 if x.dtype == np.float16 else 16
    bits = data.draw(st.integers(1, limit), label="bits")
    n = 2 ** bits - 1
    levels = np.asarray([i / n for i in range(n + 1)]).astype(x.dtype)
    y, g = gradient_with_ones(lambda t: ste_utils.ste_quantize(t, bits), x)
    assert np.isin(y, levels).all(), y[~np.isin(y, levels)]
    assert set(np.unique(g).tolist()) <= {0.0, 1.0}


@SETTINGS
@given(x=float_arrays())
def test_ste_quantize_gradient_is_the_unit_interval(x):
    _, g = gradient_with_ones(lambda t: ste_utils.ste_quantize(t, 3), x)
    assert np.array_equal(g, (x >= 0) & (x <= 1))


@SETTINGS
@given(x=float_arrays(subnormal=True))
def test_ste_round_values_are_integers_gradient_one(x):
    y, g = gradient_with_ones(ste_utils.ste_round, x)
    assert np.array_equal(y, np.round(y))
    assert np.array_equal(y, np.round(x))  # a flushed subnormal rounds to 0 either way
    assert (g == 1).all()


@SETTINGS
@given(logits=float_arrays(min_dims=1, finite=True, bound=100), data=st.data())
def test_ste_argmax_is_one_hot_of_the_first_maximum(logits, data):
    axis = data.draw(st.integers(-logits.ndim, logits.ndim - 1), label="axis")
    y = ste_utils.ste_argmax(logits, axis=axis).numpy()
    assert set(np.unique(y).tolist()) <= {0.0, 1.0}
    assert (y.sum(axis=axis) == 1).all()
    first = np.argmax(logits, axis=axis)  # NumPy returns the first of equal maxima
    assert np.array_equal(np.argmax(y, axis=axis), first)


@settings(deadline=None, max_examples=20)  # tape.jacobian builds a pfor graph: ~0.2 s a call
@given(pair=st.integers(1, 6).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float32, n, elements=st.floats(-1e3, 1e3, width=32)),
    hnp.arrays(np.float32, n, elements=st.floats(-1e3, 1e3, width=32)))))
def test_straight_through_jacobian_is_identity_then_zero(pair):
    x, r = pair
    n = x.size
    expected = np.concatenate([np.eye(n), np.zeros((n, n))], axis=1)
    assert np.array_equal(ste_utils.straight_through_jacobian(x, r), expected)
    d_x, d_r = ste_utils.jacobian(ste_utils.straight_through, tf.constant(x), tf.constant(r))
    assert np.array_equal(d_x, np.eye(n)) and not d_r.any()


NUMPY_PROXIES = {"identity": lambda x: x, "relu": lambda x: np.maximum(x, 0),
                 "clipped_relu": lambda x: np.minimum(np.maximum(x, 0), 1),
                 "hardtanh": lambda x: np.clip(x, -1, 1)}
NUMPY_FORWARDS = {"binarize": lambda x: np.where(x >= 0, 1, -1).astype(x.dtype), "round": np.round}


@SETTINGS
@given(x=float_arrays(finite=True, bound=1e4), proxy=st.sampled_from(sorted(ste_utils.PROXIES)),
       forward=st.sampled_from(["binarize", "round"]))
def test_idioms_agree(x, proxy, forward):
    """Same gradient (upstream times 0 or 1); the custom_gradient value is forward(x) exactly,
    the stop_gradient value is p + (f - p) rounded in the dtype (NumPy), cancellation included."""
    fn = {"binarize": ste_utils.binarize, "round": tf.round}[forward]
    up = np.random.default_rng(x.size).normal(size=x.shape).astype(x.dtype)
    y_cg, g_cg = value_and_grad(ste_utils.ste(fn, proxy, "custom_gradient"), x, up, "eager")
    y_sg, g_sg = value_and_grad(ste_utils.ste(fn, proxy, "stop_gradient"), x, up, "eager")
    assert np.array_equal(g_cg, g_sg)
    assert np.array_equal(g_cg, np.where(g_cg == 0, 0, up))
    f = NUMPY_FORWARDS[forward](x)
    p = NUMPY_PROXIES[proxy](x).astype(x.dtype)
    assert np.array_equal(y_cg, f)
    assert np.array_equal(y_sg, (p + (f - p).astype(x.dtype)).astype(x.dtype))
