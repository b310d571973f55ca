"""LSQ and PACT (learned quantization scales) against NumPy references written from the papers.

LSQ (Esser et al., 2020): q = clip(round(x/s), -Q_N, Q_P) s; dq/dx = 1 on [-Q_N, Q_P] (in v =
x/s, bounds included), dq/ds = round(v) - v inside, -Q_N below, Q_P above (eq. 3), times the
grad scale g. PACT (Choi et al., 2018): y_q = quantize(clip(x, 0, a)/a) a; dy_q/dx = 1 on [0, a),
dy_q/da = 1{x >= a}. Values and gradients are compared exactly, eagerly and in tf.function
(the parameters are passed as tensors, as a layer's variables are).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import ste_utils
from ste_utils_testing import (
    around_zero, assert_same, dtype_id, neighbours, run_cases, upstream_like,
)

FUNCTION_MODES = ("eager", "function")
FLOATS = (np.float16, np.float32, np.float64)


# ------------------------------------------------------------------ NumPy references (the papers)
def ref_levels(bits, signed):
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def ref_lsq(x, s, up, bits, signed, g):
    """Value, dL/dx and the elementwise u * dq/ds (before the sum and the grad scale)."""
    dt = x.dtype.type
    q_n, q_p = ref_levels(bits, signed)
    v = (x / s).astype(x.dtype)
    level = np.clip(np.round(v), -q_n, q_p).astype(x.dtype)
    inside = (v >= -q_n) & (v <= q_p)
    d_step = np.where(v < -q_n, dt(-q_n), np.where(v > q_p, dt(q_p), (np.round(v) - v).astype(x.dtype)))
    return ((level * s).astype(x.dtype), np.where(inside, up, dt(0)).astype(x.dtype),
            np.where(d_step == 0, dt(0), up * d_step).astype(x.dtype))


def ref_pact(x, a, up, bits):
    """Value, dL/dx and the elementwise dL/da (before the sum over broadcast axes)."""
    dt = x.dtype.type
    n = 2 ** bits - 1
    level = np.round((np.clip((x / a).astype(x.dtype), dt(0), dt(1)) * dt(n)).astype(x.dtype))
    value = ((level.astype(np.float64) / n).astype(x.dtype) * a).astype(x.dtype)
    return (value, np.where((x >= 0) & (x < a), up, dt(0)).astype(x.dtype),
            np.where(x >= a, up, dt(0)).astype(x.dtype))


def lsq_points(bits, signed, dtype):
    """v = x/s at the bounds -Q_N and Q_P and their neighbours, half-way points, 0, -0, far out
    (not +-tiny: x = v s and u * (round(v) - v) would be subnormal, which TensorFlow's CPU
    kernels flush to 0, so unsigned ranges take -1e-3 and 1e-3 around their lower bound 0)."""
    q_n, q_p = ref_levels(bits, signed)
    below_low = neighbours(-q_n, dtype) if q_n else (-1e-3, 1e-3)
    v = [0.0, -0.0, 0.5, -0.5, 1.5, q_p, *neighbours(q_p, dtype), q_p - 0.5, q_p + 0.5, q_p + 3,
         -q_n, *below_low, -q_n + 0.5, -q_n - 0.5, -q_n - 3]
    return np.asarray(v, np.float64).astype(dtype)


# ------------------------------------------------------------------ LSQ
@pytest.mark.parametrize("mode", FUNCTION_MODES)
@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
@pytest.mark.parametrize("bits,signed", [(2, True), (3, True), (4, True), (1, False), (3, False)])
def test_lsq_elementwise_step_value_and_gradients(bits, signed, dtype, mode):
    """One step per element (so no sum: every gradient entry is compared exactly). Power-of-two
    steps put x/s exactly on the bounds and half-way points; 0.3 and 0.7 put it near them."""
    v = lsq_points(bits, signed, dtype)
    steps = np.asarray([0.5, 0.25, 2.0, 1.0, 0.3, 0.7], dtype)
    s = np.tile(steps, v.size)
    x = (np.repeat(v, steps.size) * s).astype(dtype)
    up = upstream_like(x.shape, dtype, seed=bits)
    g = ste_utils.lsq_grad_scale(x.size, bits, signed) if bits == 3 else 1.0
    fn = lambda t, st: ste_utils.lsq_quantize(t, st, bits, signed=signed, grad_scale=g)  # noqa: E731
    ((y, (g_x, g_s)),) = run_cases([(fn, [x, s], up)], mode)
    value, d_x, d_s = ref_lsq(x, s, up, bits, signed, g)
    what = f"lsq_quantize(bits={bits}, signed={signed}, {dtype_id(dtype)}, {mode})"
    assert_same(y, value, f"{what} value")
    assert_same(g_x, d_x, f"{what} dL/dx")
    assert_same(g_s, (d_s * dtype(g)).astype(dtype), f"{what} dL/ds (eq. 3 times g)")


@pytest.mark.parametrize("mode", FUNCTION_MODES)
@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=dtype_id)
def test_lsq_scalar_and_per_channel_step_sum_eq3_times_grad_scale(dtype, mode):
    """A scalar step sums eq. 3 over every element, a per-channel step over the batch; dyadic
    inputs make every sum exact, so the comparison is exact; g = 1 / sqrt(N Q_P)."""
    rng = np.random.default_rng(5)
    x = (rng.integers(-40, 41, size=(6, 3)) / 8).astype(dtype)
    x[0] = [-2.0, 1.5, 0.25]                       # v = -4 (= -Q_N), 3 (= Q_P), 0.5 (half-way)
    up = (rng.integers(-8, 9, size=x.shape) / 4).astype(dtype)
    g = ste_utils.lsq_grad_scale(x.size, 3)
    assert g == 1 / np.sqrt(18 * 3)
    scalar = np.asarray(0.5, dtype)
    channel = np.asarray([0.5, 0.25, 1.0], dtype)
    fn = lambda t, st: ste_utils.lsq_quantize(t, st, 3, grad_scale=g)  # noqa: E731
    (y1, (gx1, gs1)), (y2, (gx2, gs2)) = run_cases([(fn, [x, scalar], up), (fn, [x, channel], up)], mode)
    for (y, gx, gs, s, axes) in ((y1, gx1, gs1, scalar, None), (y2, gx2, gs2, channel, 0)):
        value, d_x, d_s = ref_lsq(x, s, up, 3, True, g)
        assert_same(y, value, "value")
        assert_same(gx, d_x, "dL/dx")
        total = d_s.astype(np.float64).sum(axis=axes)          # exact: dyadic, few terms
        assert_same(gs, (total.astype(dtype) * dtype(g)).astype(dtype), f"dL/ds, step shape {s.shape}")


def test_lsq_boundaries_spelled_out():
    """bits=3 signed (levels -4..3), s = 0.5: x = -2 and 1.5 sit on the bounds (inside: dx = 1,
    ds = round(v) - v = 0), their neighbours outside get dx = 0 and ds = -4 or 3; x = 0.25 and
    0.75 are half-way (round half to even: 0 and 2)."""
    below, above = neighbours(1.5, np.float32)
    x = tf.constant([-2.0, np.nextafter(np.float32(-2), np.float32(-3)), 1.5, above, below,
                     0.25, 0.75, 0.0])
    s = tf.constant(0.5)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, s])
        y = ste_utils.lsq_quantize(x, s, 3)
        parts = [y[i] for i in range(8)]
    assert y.numpy().tolist() == [-2.0, -2.0, 1.5, 1.5, 1.5, 0.0, 1.0, 0.0]
    assert tape.gradient(y, x).numpy().tolist() == [1, 0, 1, 0, 1, 1, 1, 1]
    d_s = [float(tape.gradient(p, s)) for p in parts]
    v_below = float(np.float32(below) / np.float32(0.5))
    assert d_s == [0.0, -4.0, 0.0, 3.0, float(np.float32(3.0) - np.float32(v_below)), -0.5, 0.5, 0.0]


def test_lsq_matches_autodiff_of_the_ste_on_the_rounding():
    """Away from the two boundary points, autodiff of s_g * ste_round(clip(x / s_g)) with
    s_g = s g + sg(s - s g) gives the same value and, up to its own rounding, the same
    gradients: the library writes out what the STE placed on the rounding only implies."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(scale=2.0, size=(64,)).astype(np.float64))
    s = tf.constant(0.37, tf.float64)
    g = ste_utils.lsq_grad_scale(64, 4)
    up = tf.constant(rng.normal(size=(64,)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, s])
        s_g = s * g + tf.stop_gradient(s - s * g)
        by_autodiff = s_g * ste_utils.ste_round(tf.clip_by_value(x / s_g, -8.0, 7.0))
        ours = ste_utils.lsq_quantize(x, s, 4, grad_scale=g)
    assert_same(ours.numpy(), by_autodiff.numpy(), "value")
    for a, b in zip(tape.gradient(ours, [x, s], output_gradients=up),
                    tape.gradient(by_autodiff, [x, s], output_gradients=up)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)


def test_lsq_grad_scale_changes_only_the_step_gradient():
    x = tf.constant([-3.0, 0.4, 0.6, 9.0])
    s = tf.constant(0.5)
    results = []
    for g in (1.0, 0.125):
        with tf.GradientTape() as tape:
            tape.watch([x, s])
            y = ste_utils.lsq_quantize(x, s, 3, grad_scale=g)
        results.append((y.numpy(), *[t.numpy() for t in tape.gradient(y, [x, s])]))
    (y1, gx1, gs1), (y2, gx2, gs2) = results
    assert_same(y1, y2, "value") and assert_same(gx1, gx2, "dL/dx")
    assert gs2 == gs1 * np.float32(0.125) and gs1 != 0


def test_lsq_non_finite_upstream_outside_gives_zero_to_x():
    x = tf.constant([10.0, 10.0, 10.0, 1.0])
    up = tf.constant([np.inf, -np.inf, np.nan, np.inf])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ste_utils.lsq_quantize(x, 0.5, 3)
    assert tape.gradient(y, x, output_gradients=up).numpy().tolist() == [0.0, 0.0, 0.0, np.inf]


@pytest.mark.parametrize("num_elements,bits,signed,expected", [
    (1, 2, True, 1.0), (64, 4, True, 1 / np.sqrt(64 * 7)), (10, 1, False, 1 / np.sqrt(10)),
    (100, 8, False, 1 / np.sqrt(100 * 255))])
def test_lsq_grad_scale_formula(num_elements, bits, signed, expected):
    assert ste_utils.lsq_grad_scale(num_elements, bits, signed) == expected


@pytest.mark.parametrize("call,error,message", [
    (lambda: ste_utils.lsq_quantize([1.0], 0.0, 3), ValueError, r"step must be finite and > 0\. Received: step=0\.0"),
    (lambda: ste_utils.lsq_quantize([1.0], -0.5, 3), ValueError, r"Received: step=-0\.5"),
    (lambda: ste_utils.lsq_quantize([1.0], np.nan, 3), ValueError, r"Received: step=nan"),
    (lambda: ste_utils.lsq_quantize([1.0], np.inf, 3), ValueError, r"Received: step=inf"),
    (lambda: ste_utils.lsq_quantize([1.0, 2.0], tf.constant([0.5, -1.0]), 3), ValueError,
     r"Received: step=\[-1\.\]"),
    (lambda: ste_utils.lsq_quantize(tf.constant([1.0]), tf.constant(0.5, tf.float64), 3), TypeError,
     r"step\.dtype=float64, x\.dtype=float32"),
    (lambda: ste_utils.lsq_quantize(tf.zeros([2]), tf.ones([3]), 3), ValueError, r"step\.shape=\(3,\), x\.shape=\(2,\)"),
    (lambda: ste_utils.lsq_quantize(tf.zeros([2]), tf.ones([2, 2]), 3), ValueError, r"without enlarging"),
    (lambda: ste_utils.lsq_quantize([1.0], "0.5", 3), TypeError, r"Received: step='0\.5'"),
    (lambda: ste_utils.lsq_quantize([1.0], 0.5, 1), ValueError, r"signed LSQ needs bits >= 2.*Received: bits=1"),
    (lambda: ste_utils.lsq_quantize([1.0], 0.5, 17), ValueError, r"Received: bits=17"),
    (lambda: ste_utils.lsq_quantize([1.0], 0.5, 3, signed="yes"), TypeError, r"Received: signed='yes'"),
    (lambda: ste_utils.lsq_quantize([1.0], 0.5, 3, grad_scale=0.0), ValueError, r"Received: grad_scale=0\.0"),
    (lambda: ste_utils.lsq_quantize([1.0], 0.5, 3, grad_scale=True), TypeError, r"Received: grad_scale=True"),
    (lambda: ste_utils.lsq_quantize([1], 0.5, 3), TypeError, r"x\.dtype=int32"),
    (lambda: ste_utils.lsq_grad_scale(0, 3), ValueError, r"Received: num_elements=0"),
    (lambda: ste_utils.lsq_grad_scale(2.5, 3), TypeError, r"Received: num_elements=2\.5"),
    (lambda: ste_utils.pact_quantize([1.0], 0.0, 3), ValueError, r"alpha must be finite and > 0\. Received: alpha=0\.0"),
    (lambda: ste_utils.pact_quantize([1.0], -2, 3), ValueError, r"Received: alpha=-2\.0"),
    (lambda: ste_utils.pact_quantize([1.0], None, 3), TypeError, r"Received: alpha=None"),
    (lambda: ste_utils.pact_quantize([1.0], 2.0, 0), ValueError, r"Received: bits=0"),
    (lambda: ste_utils.pact_quantize(tf.constant([1.0], tf.float16), 2.0, 12), ValueError, r"Received: bits=12"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else v[:40])
def test_bad_arguments_say_what_was_received(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ------------------------------------------------------------------ PACT
def pact_points(alpha, bits, dtype):
    n = 2 ** bits - 1
    a = float(np.asarray(alpha, dtype))
    half = [(k + 0.5) * a / n for k in range(n)]
    return np.asarray([0.0, -0.0, *around_zero(dtype), a, *neighbours(a, dtype), 2 * a, -a, *half,
                       *[k * a / n for k in range(n + 1)]], np.float64).astype(dtype)


@pytest.mark.parametrize("mode", FUNCTION_MODES)
@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_pact_value_and_gradients(bits, dtype, mode):
    """x = 0, -0, alpha and their neighbours, levels and half-way points; alpha elementwise
    (exact comparison), then scalar (dL/dalpha = the sum of the upstream where x >= alpha)."""
    cases, refs = [], []
    for alpha in (2.0, 0.7):
        x = pact_points(alpha, bits, dtype)
        a = np.full(x.shape, alpha, dtype)
        up = upstream_like(x.shape, dtype, seed=bits)
        cases.append((lambda t, al: ste_utils.pact_quantize(t, al, bits), [x, a], up))
        refs.append(ref_pact(x, a, up, bits))
    for (y, (g_x, g_a)), (value, d_x, d_a) in zip(run_cases(cases, mode), refs):
        assert_same(y, value, f"pact value ({mode})")
        assert_same(g_x, d_x, f"pact dL/dx ({mode})")
        assert_same(g_a, d_a, f"pact dL/dalpha ({mode})")
    x = pact_points(2.0, bits, dtype)
    up = np.ones_like(x)
    ((_, (_, g_scalar)),) = run_cases([(lambda t, al: ste_utils.pact_quantize(t, al, bits),
                                        [x, np.asarray(2.0, dtype)], up)], mode)
    assert g_scalar.shape == () and g_scalar == (x >= 2).sum()


def test_pact_boundaries_spelled_out():
    """alpha = 2, 2 bits (levels 0, 2/3, 4/3, 2): x = alpha gives alpha, dx = 0, dalpha = 1;
    just below alpha dx = 1, dalpha = 0; x = 0 gives dx = 1; x < 0 nothing."""
    below, above = neighbours(2.0, np.float32)
    x = tf.constant([2.0, below, above, 0.0, -0.5, 1.0])
    a = tf.constant(2.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, a])
        y = ste_utils.pact_quantize(x, a, 2)
        rest = y[1:]
    assert y.numpy().tolist() == [2.0, 2.0, 2.0, 0.0, 0.0, np.float32(4 / 3)]
    assert tape.gradient(y, x).numpy().tolist() == [0, 1, 0, 1, 0, 1]
    assert float(tape.gradient(y, a)) == 2.0
    assert float(tape.gradient(rest, a)) == 1.0


def test_pact_non_finite_upstream():
    x = tf.constant([-1.0, -1.0, 0.5, 3.0])
    a = tf.constant(2.0)
    with tf.GradientTape() as tape:
        tape.watch([x, a])
        y = ste_utils.pact_quantize(x, a, 2)
    g_x, g_a = tape.gradient(y, [x, a], output_gradients=tf.constant([np.inf, np.nan, np.inf, 1.0]))
    assert g_x.numpy().tolist() == [0.0, 0.0, np.inf, 0.0] and float(g_a) == 1.0


# ------------------------------------------------------------------ LSQ+ (learned offset)
def ref_lsq_plus(x, s, b, up, bits, signed, g):
    """Value, dL/dx, elementwise u * dq/ds and u * dq/dbeta (before sums and the grad scale)."""
    dt = x.dtype.type
    q_n, q_p = ref_levels(bits, signed)
    v = ((x - b).astype(x.dtype) / s).astype(x.dtype)
    level = np.clip(np.round(v), -q_n, q_p).astype(x.dtype)
    inside = (v >= -q_n) & (v <= q_p)
    d_step = np.where(v < -q_n, dt(-q_n), np.where(v > q_p, dt(q_p), (np.round(v) - v).astype(x.dtype)))
    return ((level * s + b).astype(x.dtype), np.where(inside, up, dt(0)).astype(x.dtype),
            np.where(d_step == 0, dt(0), up * d_step).astype(x.dtype), np.where(inside, dt(0), up).astype(x.dtype))


@pytest.mark.parametrize("mode", FUNCTION_MODES)
@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
@pytest.mark.parametrize("bits,signed", [(2, False), (4, False), (3, True)])
def test_lsq_plus_elementwise_value_and_gradients(bits, signed, dtype, mode):
    """One step and one offset per element; dyadic steps and offset put (x - beta)/s exactly on
    the bounds (inside: dx = 1, ds = 0, dbeta = 0) and half-way points (ties to even)."""
    v = lsq_points(bits, signed, dtype)
    steps = np.asarray([0.5, 0.25, 2.0], dtype)
    s = np.tile(steps, v.size)
    b = np.full(s.shape, -0.375, dtype)
    x = (np.repeat(v, steps.size).astype(np.float64) * s + b).astype(dtype)
    up = upstream_like(x.shape, dtype, seed=bits)
    g = 0.25
    fn = lambda t, st, off: ste_utils.lsq_plus_quantize(t, st, off, bits, signed=signed, grad_scale=g)  # noqa: E731
    ((y, (g_x, g_s, g_b)),) = run_cases([(fn, [x, s, b], up)], mode)
    value, d_x, d_s, d_b = ref_lsq_plus(x, s, b, up, bits, signed, g)
    what = f"lsq_plus_quantize(bits={bits}, signed={signed}, {dtype_id(dtype)}, {mode})"
    assert_same(y, value, f"{what} value")
    assert_same(g_x, d_x, f"{what} dL/dx")
    assert_same(g_s, (d_s * dtype(g)).astype(dtype), f"{what} dL/ds")
    assert_same(g_b, (d_b * dtype(g)).astype(dtype), f"{what} dL/dbeta")


def test_lsq_plus_boundaries_spelled_out_and_zero_offset_is_lsq():
    """2 bits unsigned (levels 0..3), s = 0.5, beta = -0.25: x = -0.25 and 1.25 are the bounds
    (inside), -1 and 2 are clipped (dbeta = 1, ds = -Q_N = 0 and Q_P = 3); beta = 0 gives LSQ."""
    x = tf.constant([-1.0, -0.25, 0.0, 1.25, 2.0])
    s, b = tf.Variable(0.5), tf.Variable(-0.25)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        q = ste_utils.lsq_plus_quantize(x, s, b, 2)
    np.testing.assert_array_equal(q.numpy(), [-0.25, -0.25, -0.25, 1.25, 1.25])   # x = 0: v = 1/2 -> 0 (even)
    np.testing.assert_array_equal(tape.gradient(q, x).numpy(), [0, 1, 1, 1, 0])
    assert float(tape.gradient(q, b)) == 2.0                      # the two clipped inputs
    v = (x.numpy() + 0.25) / 0.5
    expected_s = np.where(v < 0, 0.0, np.where(v > 3, 3.0, np.round(v) - v)).sum()
    assert float(tape.gradient(q, s)) == expected_s
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        q0 = ste_utils.lsq_plus_quantize(x, s, 0.0, 3, signed=True)
        q1 = ste_utils.lsq_quantize(x, s, 3, signed=True)
    np.testing.assert_array_equal(q0.numpy(), q1.numpy())
    assert float(tape.gradient(q0, s)) == float(tape.gradient(q1, s))


def test_lsq_plus_per_channel_offset_sums_over_the_batch():
    rng = np.random.default_rng(3)
    x = (rng.integers(-24, 25, size=(5, 3)) / 8).astype(np.float64)
    up = (rng.integers(-4, 5, size=x.shape) / 4).astype(np.float64)
    s, b = np.asarray([0.5, 0.25, 1.0]), np.asarray([-0.5, 0.0, 0.25])
    ((_, (_, g_s, g_b)),) = run_cases([(lambda t, st, off: ste_utils.lsq_plus_quantize(t, st, off, 2),
                                        [x, s, b], up)], "eager")
    _, _, d_s, d_b = ref_lsq_plus(x, s, b, up, 2, False, 1.0)
    assert_same(g_s, d_s.sum(axis=0), "per-channel dL/ds")
    assert_same(g_b, d_b.sum(axis=0), "per-channel dL/dbeta")


@pytest.mark.parametrize("call,error,message", [
    (lambda: ste_utils.lsq_plus_quantize([1.0], 0.5, float("nan"), 2), ValueError, "offset must be finite. Received: offset=nan"),
    (lambda: ste_utils.lsq_plus_quantize([1.0], 0.5, "0", 2), TypeError, "offset must be a number"),
    (lambda: ste_utils.lsq_plus_quantize([1.0], -0.5, 0.0, 2), ValueError, "step must be finite and > 0"),
    (lambda: ste_utils.dorefa_weight_quantize([1.0], 1), ValueError, "bits >= 2"),
])
def test_lsq_plus_and_dorefa_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ------------------------------------------------------------------ DoReFa's weight quantizer
def ref_dorefa(w, up, bits):
    """Value and dL/dw (float64) of 2 quantize_k(tanh(w) / (2 max|tanh w|) + 1/2) - 1 with the
    STE on quantize_k and the max's gradient split equally among tied maxima."""
    n = 2 ** bits - 1
    t = np.tanh(w.astype(np.float64))
    m = np.abs(t).max()
    u = t / (2 * m) + 0.5
    value = 2 * np.round(u * n) / n - 1
    tied = np.abs(t) == m
    dm = np.where(tied, np.sign(t) * (1 - t ** 2), 0.0) / tied.sum()
    grad = up * (1 - t ** 2) / m - dm * np.sum(up * t) / m ** 2
    return value, grad


@pytest.mark.parametrize("mode", FUNCTION_MODES)
@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=dtype_id)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_dorefa_weight_value_and_gradient(bits, dtype, mode):
    """Random weights plus 0 (u = 1/2: a half-way level for odd n, ties to even) and a unique
    largest |w| (maps to +-1, and carries the max's gradient)."""
    rng = np.random.default_rng(bits)
    w = rng.normal(0, 0.7, 40)
    n = 2 ** bits - 1
    w[0], w[1] = 0.0, -2.5
    u = np.tanh(w) / (2 * np.abs(np.tanh(w)).max()) + 0.5
    w = np.where(np.abs(u * n - np.floor(u * n) - 0.5) < 1e-3, w + 0.05, w)   # no near-ties but 0
    w[0] = 0.0
    w = w.astype(dtype)
    up = upstream_like(w.shape, dtype, seed=bits)
    ((y, (g_w,)),) = run_cases([(lambda t: ste_utils.dorefa_weight_quantize(t, bits), [w], up)], mode)
    value, grad = ref_dorefa(w, up.astype(np.float64), bits)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(y, value, rtol=0, atol=tol)
    np.testing.assert_allclose(g_w, grad, rtol=tol * 10, atol=tol * 10)
    assert y[1] == -1.0 and np.round(n / 2) % 2 == 0
    np.testing.assert_allclose(y[0], 2 * np.round(n / 2) / n - 1, atol=tol)
    assert len(np.unique(y)) <= 2 ** bits and np.all(np.abs(y) <= 1)


def test_dorefa_tied_maxima_split_the_max_gradient_and_zeros_do_not_nan():
    w = np.asarray([1.0, -1.0, 0.25, -0.5])
    up = np.asarray([1.0, -2.0, 0.5, 1.0])
    ((y, (g_w,)),) = run_cases([(lambda t: ste_utils.dorefa_weight_quantize(t, 2), [w], up)], "eager")
    value, grad = ref_dorefa(w, up, 2)
    np.testing.assert_allclose(y, value, atol=1e-12)
    np.testing.assert_allclose(g_w, grad, atol=1e-12)
    zeros = ste_utils.dorefa_weight_quantize(tf.zeros(3), 3).numpy()
    np.testing.assert_allclose(zeros, np.full(3, 2 * 4 / 7 - 1), atol=1e-7)   # u = 1/2: 3.5 -> 4
