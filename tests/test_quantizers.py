"""The straight-through quantizers against NumPy references written from the specification.

Every case runs eagerly, inside ``tf.function`` and with ``jit_compile=True`` (XLA), for
float16, float32, float64 and bfloat16, on scalars and 1-, 2- and 3-D tensors, with a random
upstream gradient. Values and gradients of ste_sign, ste_heaviside, ste_round and
ste_quantize are compared exactly (the forward values are exact by construction and the
gradient is the upstream times 0 or 1); ste_argmax's softmax gradient with a tolerance stated
per dtype.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import ste_utils
from ste_utils_testing import (
    BFLOAT16, DTYPES, DTYPES_BF16, MODES, SHAPES, around_zero, assert_same, clip_specials, dtype_id,
    eps, neighbours, run_cases, sample, seed_for, upstream_like, value_and_grad,
)


# ------------------------------------------------------------------ NumPy references (the spec)
def ref_sign(x):
    """+1 for x >= 0 (so 0 and -0 give +1), -1 otherwise."""
    return np.where(x >= 0, 1.0, -1.0).astype(x.dtype)


def ref_heaviside(x):
    """1 for x > 0, 0 otherwise (0 at 0)."""
    return np.where(x > 0, 1.0, 0.0).astype(x.dtype)


def ref_clip_window(x, clip_value):
    """1{|x| <= c}, boundary included, c = clip_value rounded to x's dtype (as Larq, which
    compares in x's dtype); all ones for clip_value=None."""
    if clip_value is None:
        return np.ones(x.shape, dtype=bool)
    return np.abs(x) <= np.asarray(clip_value, dtype=x.dtype)


def ref_quantize(x, bits):
    """round(clip(x, 0, 1) * n) / n, n = 2**bits - 1: product and round (half to even) in the
    dtype of x, the quotient the float nearest to the exact i / n."""
    n = 2 ** bits - 1
    dtype = x.dtype
    clipped = np.clip(x, dtype.type(0), dtype.type(1)).astype(dtype)
    level = np.round((clipped * dtype.type(n)).astype(dtype))
    return (level.astype(np.float64) / n).astype(dtype)


def ref_one_hot_argmax(logits, axis):
    """One-hot of NumPy's argmax (which returns the first of equal maxima)."""
    moved = np.moveaxis(logits.astype(np.float64), axis, -1)
    hot = np.eye(moved.shape[-1])[np.argmax(moved, axis=-1)]
    return np.moveaxis(hot, -1, axis).astype(logits.dtype)


def ref_softmax_vjp(logits, upstream, axis):
    """J^T g with J = diag(s) - s s^T the softmax Jacobian, in float64."""
    z = np.moveaxis(logits.astype(np.float64), axis, -1)
    g = np.moveaxis(upstream.astype(np.float64), axis, -1)
    s = np.exp(z - z.max(axis=-1, keepdims=True))
    s /= s.sum(axis=-1, keepdims=True)
    jac = np.einsum("...i,ij->...ij", s, np.eye(s.shape[-1])) - np.einsum("...i,...j->...ij", s, s)
    return np.moveaxis(np.einsum("...ij,...i->...j", jac, g), -1, axis)


def masked(upstream, window):
    """The upstream gradient where ``window`` holds, 0 elsewhere (exact in every dtype)."""
    return np.where(window, upstream, np.zeros_like(upstream)).astype(upstream.dtype)


def check_cases(cases, mode):
    """``cases``: (what, fn, x, upstream, expected value, expected gradient)."""
    for what, fn, x, up, value, grad in cases:
        ((y, (g,)),) = run_cases([(fn, [x], up)], mode)  # one small graph each: XLA compiles
        # a few small graphs faster than one big one
        assert y.dtype == np.dtype(x.dtype), f"{what}: output dtype {y.dtype}"
        assert g is not None, f"{what}: no gradient reaches x"
        assert_same(y, value, f"{what} value ({mode})")
        assert_same(g, grad, f"{what} gradient ({mode})")


BINARY = {
    "ste_sign": (ste_utils.ste_sign, ref_sign),
    "ste_heaviside": (ste_utils.ste_heaviside, ref_heaviside),
}


# ------------------------------------------------------------------ ste_sign, ste_heaviside
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
@pytest.mark.parametrize("name", BINARY)
def test_binary_quantizer_shapes_dtypes_modes(name, dtype, mode):
    """Scalar, 1-, 2- and 3-D inputs in [-2, 2) with 0, -0, +-1 and their neighbours first."""
    fn, ref = BINARY[name]
    cases = []
    for shape in SHAPES:
        seed = seed_for(name, shape, dtype_id(dtype))
        x = sample(shape, dtype, -2.0, 2.0, clip_specials(1.0, dtype), seed=seed)
        up = upstream_like(shape, dtype, seed=seed + 1)
        cases.append((f"{name}{shape}", fn, x, up, ref(x), masked(up, ref_clip_window(x, 1.0))))
    check_cases(cases, mode)


# 0.7 and 0.3 are not floats of any dtype: the boundary is clip_value rounded to x's dtype
# (float64 x = 0.7 with clip_value=0.7 was once compared with float32's 0.699999988).
CLIP_VALUES = [None, 0.0, 0.5, 1.0, 2.0, 3, 0.7, 0.3]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
@pytest.mark.parametrize("name", BINARY)
def test_binary_quantizer_clip_boundaries(name, dtype, mode):
    """x = 0, -0, +-clip_value exactly (gradient 1) and the floats just outside (gradient 0),
    for clip_value None (identity gradient), 0 (only x = 0 passes), 0.5, 1, 2, the int 3, and
    0.7 and 0.3, whose boundary is the nearest float of the dtype."""
    fn, ref = BINARY[name]
    cases = []
    for clip_value in CLIP_VALUES:
        boundary = None if clip_value is None else float(np.asarray(clip_value, dtype))
        x = np.concatenate([clip_specials(boundary, dtype),
                            np.asarray([np.inf, -np.inf, 4.0, -4.0], dtype)]).astype(dtype)
        up = upstream_like(x.shape, dtype, seed=seed_for(name, clip_value, dtype_id(dtype)))
        cases.append((f"{name}(clip_value={clip_value})",
                      lambda t, c=clip_value: fn(t, clip_value=c), x, up, ref(x),
                      masked(up, ref_clip_window(x, clip_value))))
    check_cases(cases, mode)


@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
def test_clip_window_boundary_is_included_and_neighbours_are_not(dtype):
    """The window, spelled out point by point at clip_value = 1 (independent of ref_clip_window)."""
    below, above = neighbours(1.0, dtype)
    x = np.asarray([1.0, -1.0, below, -below, above, -above, 0.0], dtype)
    _, g = value_and_grad(ste_utils.ste_sign, x, np.ones_like(x), "eager")
    assert g.tolist() == [1, 1, 1, 1, 0, 0, 1]
    _, g = value_and_grad(ste_utils.ste_heaviside, x, np.ones_like(x), "eager")
    assert g.tolist() == [1, 1, 1, 1, 0, 0, 1]


@pytest.mark.parametrize("mode", MODES)
def test_float64_boundary_not_representable_in_float32(mode):
    """x = clip_value = 0.7 in float64 is inside the window (regression: the clip value went
    through a float32 constant, 0.699999988, and left the boundary out)."""
    x = np.asarray([0.7, -0.7, np.nextafter(0.7, 1.0), 0.3, np.nextafter(0.3, 1.0)], np.float64)
    for fn in (ste_utils.ste_sign, ste_utils.ste_heaviside):
        _, g = value_and_grad(lambda t: fn(t, clip_value=0.7), x[:3], np.ones(3), mode)
        assert g.tolist() == [1, 1, 0], fn.__name__
        _, g = value_and_grad(lambda t: fn(t, clip_value=0.3), x[3:], np.ones(2), mode)
        assert g.tolist() == [1, 0], fn.__name__


def test_sign_of_zero_is_plus_one_unlike_tf_sign():
    x = tf.constant([0.0, -0.0])
    assert ste_utils.ste_sign(x).numpy().tolist() == [1.0, 1.0]
    assert tf.sign(x).numpy().tolist() == [0.0, 0.0]  # why ste_sign does not use tf.sign
    assert ste_utils.ste_heaviside(x).numpy().tolist() == [0.0, 0.0]


# ------------------------------------------------------------------ ste_round
ROUND_SPECIALS = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 0.0, -0.0, 1.0, -1.0]


def round_specials(dtype):
    near_half = [*neighbours(0.5, dtype), *neighbours(-0.5, dtype), *neighbours(2.5, dtype)]
    return np.asarray(ROUND_SPECIALS + [float(v) for v in near_half], np.float64).astype(dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
def test_ste_round_shapes_dtypes_modes(dtype, mode):
    """Ties (0.5, 1.5, 2.5, -0.5, ...) and their neighbours first; np.round is half to even."""
    cases = []
    for shape in SHAPES:
        seed = seed_for("round", shape, dtype_id(dtype))
        x = sample(shape, dtype, -4.0, 4.0, round_specials(dtype), seed=seed)
        up = upstream_like(shape, dtype, seed=seed + 1)
        cases.append((f"ste_round{shape}", ste_utils.ste_round, x, up, np.round(x).astype(dtype), up))
    check_cases(cases, mode)


@pytest.mark.parametrize("mode", MODES)
def test_ste_round_ties_go_to_even(mode):
    x = np.asarray([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5], np.float32)
    y, g = value_and_grad(ste_utils.ste_round, x, np.ones_like(x), mode)
    assert y.tolist() == [0, 2, 2, 0, -2, -2, 4]
    assert g.tolist() == [1] * 7


# ------------------------------------------------------------------ ste_quantize
def quantize_specials(bits, dtype):
    n = 2 ** bits - 1
    levels = np.arange(n + 1) / n
    midpoints = (np.arange(n) + 0.5) / n
    edges = [0.0, -0.0, 1.0, *around_zero(dtype), *neighbours(1.0, dtype), -0.25, 1.25]
    return np.concatenate([np.asarray(edges, np.float64), midpoints, levels]).astype(dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
def test_ste_quantize_shapes_dtypes_modes(dtype, mode):
    """Edges 0 and 1 and their neighbours, levels and midpoints first; bits 1, 2 and 3 (compiled
    modes: 1-3 on the 1-D input, 2 on the others, as each XLA compilation costs ~0.1 s)."""
    cases = []
    for shape in SHAPES:
        for bits in ((1, 2, 3) if mode == "eager" or shape == SHAPES[1] else (2,)):
            seed = seed_for("quantize", shape, bits, dtype_id(dtype))
            x = sample(shape, dtype, -0.5, 1.5, quantize_specials(bits, dtype), seed=seed)
            up = upstream_like(shape, dtype, seed=seed + 1)
            inside = (x.astype(np.float64) >= 0) & (x.astype(np.float64) <= 1)
            cases.append((f"ste_quantize{shape}, bits={bits}",
                          lambda t, b=bits: ste_utils.ste_quantize(t, b), x, up,
                          ref_quantize(x, bits), masked(up, inside)))
    check_cases(cases, mode)


@pytest.mark.parametrize("mode", MODES)
def test_ste_quantize_every_float16_value(mode):
    """All 15,000-odd float16 values in [-0.25, 1.25], bits 1 to 11 (compiled modes: 2, 4, 8,
    11): the product x * n rounds in float16 before tf.round, and every mode must agree with
    the reference bit for bit."""
    every = np.arange(2 ** 16, dtype=np.uint16).view(np.float16)
    x = every[np.isfinite(every) & (every >= -0.25) & (every <= 1.25)]
    inside = (x >= 0) & (x <= 1)
    cases = []
    for bits in (range(1, 12) if mode == "eager" else (2, 4, 8, 11)):
        up = upstream_like(x.shape, np.float16, seed=bits)
        cases.append((f"ste_quantize(float16, bits={bits})",
                      lambda t, b=bits: ste_utils.ste_quantize(t, b), x, up,
                      ref_quantize(x, bits), masked(up, inside)))
    check_cases(cases, mode)


def _bits_for(dtype, mode):
    """Every allowed width eagerly; 1, 2, 3, 4, 8, 11, 16 (those allowed) when compiled."""
    limit = {np.dtype(np.float16): 11, np.dtype(BFLOAT16): 8}.get(np.dtype(dtype), 16)
    widths = range(1, 17) if mode == "eager" else (1, 2, 3, 4, 8, 11, 16)
    return [b for b in widths if b <= limit]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
def test_ste_quantize_levels_are_exact(dtype, mode):
    """For every allowed bit width, level i/n comes out as the float of the dtype nearest to
    i/n (correctly rounded), the levels are fixed points, and no other value is produced."""
    cases, expected = [], []
    for bits in _bits_for(dtype, mode):
        n = 2 ** bits - 1
        exact = np.asarray([i / n for i in range(n + 1)], np.float64).astype(dtype)  # Python /
        inputs = np.concatenate([exact, np.linspace(-0.5, 1.5, 257).astype(dtype)])
        cases.append((lambda t, b=bits: ste_utils.ste_quantize(t, b), [inputs], np.ones_like(inputs)))
        expected.append((bits, exact))
    for (bits, exact), case in zip(expected, cases):
        ((y, _),) = run_cases([case], mode)
        n = 2 ** bits - 1
        assert_same(y[: n + 1], exact, f"levels of {bits}-bit {dtype_id(dtype)} ({mode})")
        assert np.isin(y, exact).all(), f"{bits} bits: values outside the levels: {y[~np.isin(y, exact)]}"


def test_ste_quantize_known_level_that_graph_division_got_wrong():
    """9/15 in float16 is 0.6001 (nearest), not 0.5996 (9 * fl(1/15)): dividing by the constant
    n in a graph gets rewritten into a multiplication by 1/n by Grappler and XLA."""
    x = tf.constant([0.6], tf.float16)
    for mode in MODES:
        y, _ = value_and_grad(lambda t: ste_utils.ste_quantize(t, 4), x, np.ones(1, np.float16), mode)
        assert y[0] == np.float16(9 / 15) == np.float16(0.6001), mode


@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
def test_ste_quantize_edges_of_unit_interval(dtype):
    lo_below, lo_above = around_zero(dtype)
    hi_below, hi_above = neighbours(1.0, dtype)
    x = np.asarray([0.0, 1.0, lo_below, lo_above, hi_below, hi_above], dtype)
    y, g = value_and_grad(lambda t: ste_utils.ste_quantize(t, 2), x, np.ones_like(x), "eager")
    assert y.astype(np.float64).tolist() == [0, 1, 0, 0, 1, 1]
    assert g.tolist() == [1, 1, 0, 1, 1, 0]


def test_ste_quantize_nan_stays_nan_and_infinities_clip():
    x = tf.constant([np.nan, np.inf, -np.inf])
    y = ste_utils.ste_quantize(x, 3).numpy()
    assert np.isnan(y[0]) and y[1:].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("bits", [0, 17, -1, 100])
def test_ste_quantize_bits_out_of_range_raise(bits):
    with pytest.raises(ValueError, match=rf"bits must be from 1 to 16\. Received: bits={bits}"):
        ste_utils.ste_quantize(tf.constant([0.5]), bits)


@pytest.mark.parametrize("dtype,bits", [(tf.float16, 12), (tf.float16, 16), (tf.bfloat16, 9)])
def test_ste_quantize_bits_beyond_the_dtype_raise(dtype, bits):
    with pytest.raises(ValueError, match=rf"Received: bits={bits}, x\.dtype={dtype.name}"):
        ste_utils.ste_quantize(tf.constant([0.5], dtype), bits)


def test_float16_accepts_up_to_11_bits():
    y = ste_utils.ste_quantize(tf.constant([1.0 / 3.0], tf.float16), 11).numpy()
    assert y[0] == np.float16(682 / 2047)


# ------------------------------------------------------------------ ste_argmax
ARGMAX_CASES = [((6,), -1), ((4, 5), 0), ((2, 3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -1)]
# Eagerly, every axis of every shape (an XLA compilation of ste_argmax costs ~0.3 s).
ARGMAX_EAGER_CASES = [((6,), 0), ((6,), -1), ((4, 5), 0), ((4, 5), 1), ((4, 5), -1), ((4, 5), -2),
                      ((2, 3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), 2), ((2, 3, 4), -1),
                      ((2, 3, 4), -2), ((2, 3, 4), -3)]
# Softmax gradient tolerance (absolute, |upstream| <= ~4): 8 eps of the dtype. float16's and
# bfloat16's softmax is computed in the narrow dtype; the reference in float64.
ARGMAX_ATOL = {dtype_id(d): 8 * eps(d) for d in DTYPES_BF16}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
def test_ste_argmax_ties_and_softmax_gradient(dtype, mode):
    """Logits from {0, 0.5, 1} so most slices tie (the lowest index must win, on every axis),
    and spread logits 3 N(0, 1); gradient = softmax Jacobian-vector product."""
    cases = []
    for shape, axis in (ARGMAX_EAGER_CASES if mode == "eager" else ARGMAX_CASES):
        rng = np.random.default_rng(seed_for("argmax", shape, axis, dtype_id(dtype)))
        logits = (rng.integers(0, 3, size=shape) * 0.5).astype(dtype)
        cases.append((f"ties {shape} axis={axis}", shape, axis, logits))
    logits = (3 * np.random.default_rng(7).normal(size=(5, 7))).astype(dtype)
    cases.append(("spread (5, 7) axis=-1", (5, 7), -1, logits))
    ups = [upstream_like(shape, dtype, seed=seed_for("up", shape, axis)) for _, shape, axis, _ in cases]
    for (what, _, axis, logits), up in zip(cases, ups):
        ((y, (g,)),) = run_cases([(lambda t: ste_utils.ste_argmax(t, axis=axis), [logits], up)], mode)
        assert_same(y, ref_one_hot_argmax(logits, axis), f"one-hot, {what} ({mode})")
        assert g is not None and g.dtype == np.dtype(dtype), what
        np.testing.assert_allclose(g.astype(np.float64), ref_softmax_vjp(logits, up, axis),
                                   rtol=0, atol=ARGMAX_ATOL[dtype_id(dtype)],
                                   err_msg=f"softmax gradient, {what} ({mode})")


def test_ste_argmax_explicit_ties():
    logits = tf.constant([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [5.0, 1.0, 5.0]])
    assert ste_utils.ste_argmax(logits).numpy().tolist() == [[0, 1, 0], [1, 0, 0], [1, 0, 0]]
    assert ste_utils.ste_argmax(logits, axis=0).numpy().tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 1]]


def test_ste_argmax_nan_slice_is_all_zeros():
    y = ste_utils.ste_argmax(tf.constant([[1.0, np.nan, 0.0], [0.0, 2.0, 1.0]])).numpy()
    assert y.tolist() == [[0, 0, 0], [0, 1, 0]]


# ------------------------------------------------------------------ huge inputs stay exact
@pytest.mark.parametrize("dtype,big", [(np.float16, 3000.0), (np.float32, 1e8), (np.float64, 1e17)],
                         ids=["float16", "float32", "float64"])
def test_custom_gradient_quantizers_are_exact_where_straight_through_cancels(dtype, big):
    x = np.asarray([big, -big, 0.25, -0.25], dtype)
    ones = np.ones_like(x)
    for mode in MODES:
        (sign, (g_sign,)), (sign_id, (g_id,)), (step, _), (rounded, (g_round,)), (level, _) = run_cases([
            (ste_utils.ste_sign, [x], ones),
            (lambda t: ste_utils.ste_sign(t, clip_value=None), [x], ones),
            (ste_utils.ste_heaviside, [x], ones),
            (ste_utils.ste_round, [x], ones),
            (lambda t: ste_utils.ste_quantize(t, 2), [x], ones)], mode)
        assert sign.tolist() == [1, -1, 1, -1] and g_sign.tolist() == [0, 0, 1, 1], mode
        assert sign_id.tolist() == [1, -1, 1, -1] and g_id.tolist() == [1, 1, 1, 1], mode
        assert step.tolist() == [1, 0, 1, 0], mode
        assert rounded.tolist() == [big, -big, 0, 0] and g_round.tolist() == [1] * 4, mode
        assert level.tolist() == [1, 0, float(dtype(1 / 3)), 0], mode


# ------------------------------------------------------------------ plain forwards: no STE
PLAIN = {
    "binarize": (ste_utils.binarize, ref_sign),
    "heaviside": (ste_utils.heaviside, ref_heaviside),
    "quantize": (lambda t: ste_utils.quantize(t, 3), lambda x: ref_quantize(x, 3)),
    "one_hot_argmax": (ste_utils.one_hot_argmax, lambda x: ref_one_hot_argmax(x, -1)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", PLAIN)
def test_plain_forward_functions_have_no_gradient(name, mode):
    """The same forward values, and TensorFlow's gradient is None (no path) or zero."""
    fn, ref = PLAIN[name]
    x = sample((4, 6), np.float32, -1.5, 1.5, clip_specials(1.0, np.float32), seed=3)
    y, g = value_and_grad(fn, x, upstream_like(x.shape, np.float32), mode)
    assert_same(y, ref(x), name)
    assert g is None or not np.any(g), f"{name} passes a gradient: {g}"


# ------------------------------------------------------------------ non-finite upstream gradients
NON_FINITE = (np.inf, -np.inf, np.nan)


def with_non_finite_upstream(x):
    """Each point of ``x`` three times, against an upstream gradient of inf, -inf and NaN."""
    x = np.repeat(x, len(NON_FINITE))
    return x, np.tile(np.asarray(NON_FINITE), x.size // len(NON_FINITE)).astype(x.dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES_BF16, ids=dtype_id)
def test_non_finite_upstream_is_zero_outside_the_window(dtype, mode):
    """Outside the window the gradient is 0 whatever the upstream (the function is flat there:
    a select, as Larq's tf.where; ``upstream * mask`` gave inf * 0 = NaN); inside, including the
    boundaries, the upstream passes unchanged (inf stays inf, NaN stays NaN)."""
    cases = []
    for name, (fn, ref) in BINARY.items():
        for clip_value in (1.0, 0.7, None):
            boundary = None if clip_value is None else float(np.asarray(clip_value, dtype))
            points = np.concatenate([clip_specials(boundary, dtype),
                                     np.asarray([3.0, -3.0, np.inf, -np.inf], dtype)]).astype(dtype)
            x, up = with_non_finite_upstream(points)
            cases.append((f"{name}(clip_value={clip_value})", lambda t, f=fn, c=clip_value: f(t, clip_value=c),
                          x, up, ref(x), masked(up, ref_clip_window(x, clip_value))))
    edges = [0.0, -0.0, 1.0, *around_zero(dtype), *neighbours(1.0, dtype), 0.5, -0.25, 1.25, np.inf]
    x, up = with_non_finite_upstream(np.asarray(edges, np.float64).astype(dtype))
    inside = (x.astype(np.float64) >= 0) & (x.astype(np.float64) <= 1)
    cases.append(("ste_quantize(bits=2)", lambda t: ste_utils.ste_quantize(t, 2), x, up,
                  ref_quantize(x, 2), masked(up, inside)))
    check_cases(cases, mode)


def test_non_finite_upstream_regression_points():
    """Spelled out: x = 2 (outside) with upstream inf, -inf, NaN gives 0, 0, 0; x = 1 gives them back."""
    x = tf.constant([2.0, 2.0, 2.0, 1.0, 1.0])
    up = tf.constant([np.inf, -np.inf, np.nan, np.inf, -np.inf])
    for fn in (ste_utils.ste_sign, ste_utils.ste_heaviside, lambda t: ste_utils.ste_quantize(t, 3)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        g = tape.gradient(y, x, output_gradients=up).numpy()
        assert g[:3].tolist() == [0.0, 0.0, 0.0] and g[3:].tolist() == [np.inf, -np.inf]
