"""The STE for discrete choices (ste_utils.discrete) against NumPy references, plus the sampling
distributions with fixed seeds and stated statistical bounds.

Bounds: a mean of n independent samples of variance v lies within 5 sqrt(v / n) of its
expectation except with probability < 6e-7 (normal approximation); with fixed seeds the outcome
is deterministic, so the check is reproducible, and a wrong distribution (e.g. b = 1{U > p}, a
misplaced temperature) misses it by far more.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import ste_utils
from ste_utils_testing import assert_same, dtype_id, eps, neighbours, run_cases, upstream_like

MODES = ("eager", "function")
FLOATS = (np.float32, np.float64)
SEED = (12, 34)


def uniform(shape, dtype, seed=SEED, minval=0.0):
    """The uniform draws the samplers are specified on (tf.random.stateless_uniform)."""
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, dtype=dtype).numpy()


def within(mean, expected, variance, n, what):
    bound = 5 * np.sqrt(variance / n)
    assert np.all(np.abs(mean - expected) <= bound), \
        f"{what}: mean {mean} vs {expected}, more than 5 sigma ({bound})"


# ------------------------------------------------------------------ stochastic binary units
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
def test_stochastic_binary_is_bernoulli_of_its_uniform_with_identity_gradient(dtype, mode):
    p = np.asarray([0.0, 1.0, 0.5, 0.25, 0.75, 1e-3, 0.999, 0.3] * 4, dtype).reshape(4, 8)
    up = upstream_like(p.shape, dtype)
    ((b, (g,)),) = run_cases([(lambda t: ste_utils.stochastic_binary(t, SEED), [p], up)], mode)
    assert_same(b, (uniform(p.shape, dtype) < p).astype(dtype), "b = 1{U < p}")
    assert b[:, 0].tolist() == [0] * 4 and b[:, 1].tolist() == [1] * 4, "p = 0 and p = 1"
    assert_same(g, up, "db/dp = 1")


def test_stochastic_binary_mean_and_reproducibility():
    p = np.asarray([0.1, 0.5, 0.9, 0.02])
    n = 20000
    b = ste_utils.stochastic_binary(tf.broadcast_to(tf.constant(p), [n, 4]), seed=(7, 8)).numpy()
    within(b.mean(axis=0), p, p * (1 - p), n, "Bernoulli mean")
    again = ste_utils.stochastic_binary(tf.broadcast_to(tf.constant(p), [n, 4]), seed=(7, 8)).numpy()
    other = ste_utils.stochastic_binary(tf.broadcast_to(tf.constant(p), [n, 4]), seed=(7, 9)).numpy()
    assert np.array_equal(b, again) and not np.array_equal(b, other)


@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
def test_hard_sigmoid_values_and_gradient(dtype):
    below, above = neighbours(1.0, dtype)
    x = np.asarray([-2, -1, -above, -below, 0, 0.5, below, 1, above, 3, np.inf], dtype)
    ((y, (g,)),) = run_cases([(ste_utils.hard_sigmoid, [x], np.ones_like(x))], "eager")
    assert_same(y, np.clip((x + 1) / 2, 0, 1).astype(dtype), "clip((x + 1) / 2, 0, 1)")
    assert_same(g, np.where(np.abs(x) <= 1, 0.5, 0).astype(dtype), "1/2 on [-1, 1]")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
def test_stochastic_sign_values_and_clipped_gradient(dtype, mode):
    below, above = neighbours(1.0, dtype)
    points = np.asarray([-3, -1, -above, -below, 0, 0.3, below, 1, above, 2], dtype)
    x = np.concatenate([points, points, points])
    up = np.concatenate([upstream_like(points.shape, dtype), np.full(10, np.inf, dtype),
                         np.full(10, np.nan, dtype)])
    ((y, (g,)),) = run_cases([(lambda t: ste_utils.stochastic_sign(t, SEED), [x], up)], mode)
    prob = np.clip((x + 1) / 2, 0, 1).astype(dtype)
    assert_same(y, np.where(uniform(x.shape, dtype) < prob, 1, -1).astype(dtype), "+1 w.p. hard_sigmoid")
    assert_same(g, np.where(np.abs(x) <= 1, up, 0).astype(dtype), "1{|x| <= 1}, a select")


def test_stochastic_sign_mean_is_the_clipped_input():
    x = np.asarray([-2.0, -0.5, 0.0, 0.4, 0.9, 5.0])
    n = 20000
    y = ste_utils.stochastic_sign(tf.broadcast_to(tf.constant(x), [n, 6]), seed=(3, 4)).numpy()
    m = np.clip(x, -1, 1)
    within(y.mean(axis=0), m, 1 - m ** 2 + 1e-300, n, "E[stochastic_sign(x)] = clip(x, -1, 1)")


# ------------------------------------------------------------------ REINFORCE vs straight-through
def test_reinforce_gradient_formula():
    f = tf.constant([1.0, 2.0, -0.5, 3.0], tf.float64)
    b = tf.constant([1.0, 0.0, 1.0, 0.0], tf.float64)
    p = tf.constant([0.25, 0.25, 0.5, 0.8], tf.float64)
    got = ste_utils.reinforce_gradient(f, b, p, baseline=0.5).numpy()
    bn, pn, fn = b.numpy(), p.numpy(), f.numpy()
    assert_same(got, (fn - 0.5) * ((bn - pn) / (pn * (1 - pn))), "(f - c)(b - p)/(p(1 - p))")


def test_reinforce_is_unbiased_straight_through_is_biased():
    """f(b) = (b - 0.45)^2, p = 0.3: d E[f] / dp = f(1) - f(0) = 0.1. REINFORCE's average is
    within 5 sigma of 0.1, with and without a baseline (which lowers its variance); the
    straight-through estimate f'(b) = 2 (b - 0.45) averages 2 (p - 0.45) = -0.3: biased, even
    of the wrong sign, and far outside its own 5-sigma band around the truth."""
    n, p, truth = 50000, 0.3, 0.1
    pt = tf.fill([n], tf.constant(p, tf.float64))
    with tf.GradientTape() as tape:
        tape.watch(pt)
        b = ste_utils.stochastic_binary(pt, seed=(5, 6))
        f = (b - 0.45) ** 2
    st = tape.gradient(f, pt).numpy()
    plain = ste_utils.reinforce_gradient(f, b, pt).numpy()
    based = ste_utils.reinforce_gradient(f, b, pt, baseline=float(tf.reduce_mean(f))).numpy()
    within(plain.mean(), truth, plain.var(), n, "REINFORCE")
    within(based.mean(), truth, based.var(), n, "REINFORCE with a baseline")
    within(st.mean(), 2 * (p - 0.45), st.var(), n, "straight-through")
    assert abs(st.mean() - truth) > 50 * np.sqrt(st.var() / n), "the ST bias should be clear"
    assert based.var() < plain.var()


@pytest.mark.parametrize("call,error,message", [
    (lambda: ste_utils.stochastic_binary([0.5, 1.5], (1, 2)), ValueError, r"p must lie in \[0, 1\]\. Received: p with entries \[1\.5\]"),
    (lambda: ste_utils.stochastic_binary([0.5], (1, 2, 3)), TypeError, r"Received: seed=\(1, 2, 3\)"),
    (lambda: ste_utils.stochastic_binary([0.5], 7), TypeError, r"Received: seed=7"),
    (lambda: ste_utils.stochastic_binary([0.5], tf.constant([1.0, 2.0])), TypeError, r"seed must be a pair"),
    (lambda: ste_utils.stochastic_sign([1], (1, 2)), TypeError, r"x\.dtype=int32"),
    (lambda: ste_utils.reinforce_gradient([1.0], [1.0], [1.0]), ValueError, r"p must lie in \(0, 1\)"),
    (lambda: ste_utils.reinforce_gradient([1.0], [0.5], [0.5]), ValueError, r"samples must be 0 or 1\. Received: samples with entries \[0\.5\]"),
    (lambda: ste_utils.gumbel_softmax_st([[1.0, 2.0]], 0.0, (1, 2)), ValueError, r"Received: temperature=0\.0"),
    (lambda: ste_utils.gumbel_softmax_st([[1.0, 2.0]], 1.0, (1, 2), hard="yes"), TypeError, r"Received: hard='yes'"),
    (lambda: ste_utils.gumbel_softmax_st([[1.0, 2.0]], 1.0, (1, 2), axis=2), ValueError, r"Received: axis=2"),
    (lambda: ste_utils.vector_quantize(tf.zeros([4, 3]), tf.zeros([5, 2])), ValueError, r"codebook\.shape=\(5, 2\), z_e\.shape=\(4, 3\)"),
    (lambda: ste_utils.vector_quantize(tf.zeros([4, 2]), tf.zeros([5, 2], tf.float64)), TypeError, r"codebook\.dtype=float64"),
    (lambda: ste_utils.VectorQuantizer(0, 2), ValueError, r"Received: num_codes=0"),
    (lambda: ste_utils.VectorQuantizer(4, 2, beta=-1.0), ValueError, r"Received: beta=-1\.0"),
    (lambda: ste_utils.VectorQuantizer(4, 2)(tf.zeros([3, 5])), ValueError, r"Received: input_shape=\(3, 5\)"),
    (lambda: ste_utils.LsqQuantize(4, init_step=0.0), ValueError, r"Received: init_step=0\.0"),
    (lambda: ste_utils.LsqQuantize(1), ValueError, r"Received: bits=1, signed=True"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else v[:40])
def test_bad_arguments_say_what_was_received(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ------------------------------------------------------------------ Gumbel-softmax
def test_gumbel_noise_is_standard_gumbel():
    n = 100000
    g = ste_utils.gumbel_noise([n], seed=(9, 9), dtype=tf.float64).numpy()
    u = uniform([n], np.float64, seed=(9, 9), minval=np.finfo(np.float64).tiny)
    ref = -np.log(-np.log(u))
    # TensorFlow's and NumPy's log differ by an ulp; near g = 0 the outer log turns that into an
    # absolute (not relative) error of a few eps.
    assert (np.abs(g - ref) <= 4 * eps(np.float64) * (1 + np.abs(ref))).all(), "-log(-log U)"
    within(g.mean(), np.euler_gamma, np.pi ** 2 / 6, n, "Gumbel mean")
    assert np.isfinite(g).all()


def ref_softmax(z, axis=-1):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_gumbel_softmax_st_is_one_hot_with_the_softmax_gradient(tau, dtype, mode):
    """hard=True: exactly one-hot (ones and zeros, one 1 per row), the argmax of the relaxed y
    of the same seed; its gradient equals the relaxed sample's exactly, and both equal the
    softmax Jacobian J^T u / tau (NumPy, float64) within 8 eps of the dtype."""
    rng = np.random.default_rng(seed=int(tau * 10))
    logits = rng.normal(scale=2.0, size=(6, 5)).astype(dtype)
    up = upstream_like(logits.shape, dtype)
    (hard, (g_hard,)), (soft, (g_soft,)) = run_cases([
        (lambda t: ste_utils.gumbel_softmax_st(t, tau, SEED), [logits], up),
        (lambda t: ste_utils.gumbel_softmax_st(t, tau, SEED, hard=False), [logits], up)], mode)
    assert set(np.unique(hard).tolist()) <= {0.0, 1.0} and (hard.sum(axis=-1) == 1).all()
    assert_same(hard, np.eye(5, dtype=dtype)[np.argmax(soft, axis=-1)], "one_hot(argmax y)")
    assert_same(g_hard, g_soft, "straight-through gradient = the relaxed sample's")
    noise = ste_utils.gumbel_noise(logits.shape, SEED, dtype).numpy()
    y = ref_softmax((logits.astype(np.float64) + noise) / tau)
    np.testing.assert_allclose(soft, y, rtol=0, atol=8 * eps(dtype))
    u = up.astype(np.float64)
    vjp = y * (u - (u * y).sum(axis=-1, keepdims=True)) / tau
    np.testing.assert_allclose(g_hard, vjp, rtol=0, atol=8 * eps(dtype) * np.abs(u).max() / tau)


@pytest.mark.parametrize("tau", [0.3, 2.0])
def test_gumbel_softmax_st_samples_the_categorical_distribution(tau):
    """The Gumbel-max trick: the hard samples' category frequencies are softmax(logits), for any tau."""
    n = 20000
    logits = np.asarray([1.0, 0.0, -1.0, 2.0])
    hard = ste_utils.gumbel_softmax_st(tf.broadcast_to(tf.constant(logits), [n, 4]), tau, (1, 1)).numpy()
    probs = ref_softmax(logits)
    within(hard.mean(axis=0), probs, probs * (1 - probs), n, f"category frequencies, tau={tau}")


# ------------------------------------------------------------------ vector quantization
CODEBOOK = np.asarray([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
Z_E = np.asarray([[[0.5, 0.0], [0.25, 0.75]], [[0.75, 0.25], [0.5, 0.5]]])
# (0.5, 0): equidistant from codes 0 and 1 -> 0; (0.5, 0.5): from all three -> 0.


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
def test_vector_quantize_values_ties_and_where_the_gradients_go(dtype, mode):
    """z_q = e_k* exactly (ties to the lowest k); z_q's gradient reaches z_e unchanged and the
    codebook not at all; codebook_loss's reaches only the codebook (2 (e_k - z) / numel summed
    over the vectors choosing k) and commitment_loss's only z_e (2 (z - e_k) / numel). Dyadic
    values and numel = 8 make every number exact."""
    z, e = Z_E.astype(dtype), CODEBOOK.astype(dtype)
    up = (np.arange(8).reshape(2, 2, 2) / 4 - 1).astype(dtype)
    pick = [lambda a, c, i=i: ste_utils.vector_quantize(a, c)[i] for i in (0, 2, 3)]
    (z_q, (gz_q, gc_q)), (cb, (gz_cb, gc_cb)), (cm, (gz_cm, gc_cm)) = run_cases(
        [(pick[0], [z, e], up), (pick[1], [z, e], dtype(1)), (pick[2], [z, e], dtype(1))], mode)
    d = ((z[..., None, :] - e) ** 2).sum(axis=-1)
    idx = np.argmin(d, axis=-1)                                    # NumPy: first of equal minima
    assert idx.tolist() == [[0, 2], [1, 0]]
    indices = ste_utils.vector_quantize(z, e).indices.numpy()
    assert indices.dtype == np.int32 and indices.tolist() == idx.tolist()
    chosen = e[idx]
    assert_same(z_q, chosen, "z_q = e_k*")
    assert_same(gz_q, up, "d z_q / d z_e = identity (straight through)")
    assert gc_q is None or not gc_q.any(), "z_q must give the codebook no gradient"
    assert_same(cb, np.asarray(((z - chosen) ** 2).mean(), dtype), "codebook_loss")
    assert_same(cm, np.asarray(((z - chosen) ** 2).mean(), dtype), "commitment_loss")
    expected_codebook = np.zeros_like(e)
    np.add.at(expected_codebook, idx.ravel(), (2 * (chosen - z) / 8).reshape(-1, 2))
    assert_same(np.asarray(gc_cb), expected_codebook, "codebook_loss -> codebook")
    assert gz_cb is None or not gz_cb.any(), "codebook_loss must not move z_e"
    assert_same(gz_cm, (2 * (z - chosen) / 8).astype(dtype), "commitment_loss -> z_e")
    assert gc_cm is None or not gc_cm.any(), "commitment_loss must not move the codebook"


def test_vector_quantizer_layer_adds_the_losses_and_trains_only_used_codes():
    keras.utils.set_random_seed(0)
    layer = ste_utils.VectorQuantizer(num_codes=3, dim=2, beta=0.25)
    z = tf.constant(Z_E, tf.float32)
    layer.build(z.shape)
    layer.codebook.assign(np.asarray([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]], np.float32))
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = layer(z)
        loss = tf.add_n(layer.losses)
    result = ste_utils.vector_quantize(z, layer.codebook)
    assert_same(out.numpy(), result.z_q.numpy(), "the layer is vector_quantize's z_q")
    assert float(loss) == float(result.codebook_loss + 0.25 * result.commitment_loss)
    g_codebook = tape.gradient(loss, layer.codebook)
    assert not np.asarray(tf.convert_to_tensor(g_codebook))[2].any(), "code 2 is never chosen"
    assert np.asarray(tf.convert_to_tensor(g_codebook))[:2].any()


# ------------------------------------------------------------------ the LSQ layer
def test_lsq_layer_initialises_its_step_once_from_the_first_batch():
    x = np.random.default_rng(0).normal(size=(16, 10)).astype(np.float32)
    layer = ste_utils.LsqQuantize(4)
    y = layer(tf.constant(x))
    first = np.float32(2 * np.abs(x).astype(np.float32).mean() / np.sqrt(7))
    assert np.isclose(layer.step.numpy(), first, rtol=4 * eps(np.float32), atol=0)
    assert_same(y.numpy(), ste_utils.lsq_quantize(x, layer.step.numpy(), 4).numpy(), "value")
    layer(tf.constant(10 * x))
    assert layer.step.numpy() == np.float32(layer.step.numpy()) and np.isclose(layer.step.numpy(), first)
    fixed = ste_utils.LsqQuantize(3, signed=False, init_step=0.125)
    fixed(tf.constant(x))
    assert fixed.step.numpy() == 0.125


def test_lsq_layer_step_gradient_uses_the_papers_grad_scale():
    x = tf.constant(np.random.default_rng(1).normal(size=(8, 6)).astype(np.float32))
    layer = ste_utils.LsqQuantize(3, init_step=0.5)
    with tf.GradientTape(persistent=True) as tape:
        y_layer = layer(x)
        step = tf.identity(layer.step.value)
        y_fn = ste_utils.lsq_quantize(x, step, 3, grad_scale=ste_utils.lsq_grad_scale(6, 3))
    assert_same(y_layer.numpy(), y_fn.numpy(), "value")
    g_layer = tape.gradient(y_layer, layer.step.value if hasattr(layer.step, "value") else layer.step)
    assert g_layer is not None
    assert float(tape.gradient(y_fn, step)) == float(tape.gradient(y_layer, layer.trainable_variables[0]))


def test_lsq_layer_trains_its_step():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), ste_utils.LsqQuantize(3), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.default_rng(2).normal(size=(64, 4)).astype(np.float32)
    model.fit(x, x.sum(axis=1, keepdims=True), epochs=1, batch_size=64, verbose=0)
    step_after_init_and_one_step = model.layers[0].step.numpy()
    first = 2 * np.abs(x).mean() / np.sqrt(3)
    assert step_after_init_and_one_step != np.float32(first) and np.isclose(step_after_init_and_one_step, first, rtol=0.2)


# ------------------------------------------------------------------ slope, Bengio's ST, optimal baseline
@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
@pytest.mark.parametrize("slope", [1.0, 2.0, 5.0])
def test_hard_sigmoid_slope_window_bounds_included(slope, dtype):
    """Chung et al.'s slope: clip((a x + 1) / 2, 0, 1); gradient a/2 where |a x| <= 1 with a x
    computed in the dtype, so the window's bounds (and their float neighbours) are exact."""
    edge = np.asarray(1.0 / slope, dtype)
    below, above = neighbours(float(edge), dtype)
    x = np.asarray([-3, -edge, -above, -below, 0, below, edge, above, 3, np.inf, -np.inf], dtype)
    ((y, (g,)),) = run_cases([(lambda t: ste_utils.hard_sigmoid(t, slope=slope), [x], np.ones_like(x))], "eager")
    ax = (x * dtype(slope)).astype(dtype)
    assert_same(y, ((np.clip(ax, -1, 1) + 1) / 2).astype(dtype), "clip((a x + 1) / 2, 0, 1)")
    assert_same(g, np.where(np.abs(ax) <= 1, slope / 2, 0).astype(dtype), "a/2 on |a x| <= 1")


@pytest.mark.parametrize("slope", [0, -1.0, float("inf"), float("nan"), True, "2"])
def test_hard_sigmoid_bad_slope(slope):
    with pytest.raises(ValueError, match=r"slope must be a finite number > 0\. Received: slope="):
        ste_utils.discrete.hard_sigmoid([0.5], slope=slope)


def test_stochastic_binary_of_a_sigmoid_is_the_sigmoid_adjusted_variant():
    """stochastic_binary(sigmoid(a)) gives db/da = sigmoid'(a) (the variant); passing the
    probability straight through to a gives Bengio et al.'s db/da = 1."""
    a = tf.constant([-3.0, -0.5, 0.0, 0.7, 4.0], tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        adjusted = ste_utils.stochastic_binary(tf.sigmoid(a), SEED)
        bengio = ste_utils.stochastic_binary(ste_utils.straight_through(a, tf.sigmoid(a)), SEED)
    s = 1 / (1 + np.exp(-a.numpy()))
    np.testing.assert_allclose(tape.gradient(adjusted, a).numpy(), s * (1 - s), rtol=4 * eps(np.float64))
    assert tape.gradient(bengio, a).numpy().tolist() == [1.0] * 5
    assert np.array_equal(adjusted.numpy(), bengio.numpy())


def _all_states(n):
    return np.array([[(k >> i) & 1 for i in range(n)] for k in range(2 ** n)], np.float64)


def test_optimal_baseline_formula_and_that_it_minimises_the_variance():
    """c_i = sum (b_i - p_i)^2 f / sum (b_i - p_i)^2 (NumPy); with the exact distribution as
    weights (all 2^3 states) it is the minimiser of each unit's exact variance, and lower than
    the variance with c = E[f]."""
    rng = np.random.default_rng(3)
    b = rng.integers(0, 2, (50, 3)).astype(np.float64)
    p = np.asarray([0.2, 0.5, 0.9])
    f = rng.normal(size=50)
    got = ste_utils.discrete.optimal_baseline(f[:, None], b, p).numpy()
    w = (b - p) ** 2
    assert_same(got, (w * f[:, None]).sum(0) / w.sum(0), "weighted mean")
    # exact: weight each of the 8 states by its probability
    states = _all_states(3)
    prob = np.prod(np.where(states == 1, p, 1 - p), axis=1)
    fs = np.asarray([1.0, 4.0, -2.0, 0.5, 3.0, 7.0, -1.0, 2.0])
    c_star = (states - p) ** 2 * (prob * fs)[:, None]
    c_star = c_star.sum(0) / (p * (1 - p))

    def variance(c):
        est = (fs[:, None] - c) * (states - p) / (p * (1 - p))
        mean = (prob[:, None] * est).sum(0)
        return (prob[:, None] * (est - mean) ** 2).sum(0)

    for delta in (-0.5, -1e-3, 1e-3, 0.5):
        assert np.all(variance(c_star) < variance(c_star + delta))
    assert np.all(variance(c_star) <= variance(np.full(3, prob @ fs)))
    # the library on the exact weights: states repeated in proportion to their probability
    counts = np.rint(prob * 1000).astype(int)
    rep_b, rep_f = np.repeat(states, counts, axis=0), np.repeat(fs, counts)
    rep_p = np.asarray([0.2, 0.5, 0.9])
    lib = ste_utils.discrete.optimal_baseline(rep_f[:, None], rep_b, rep_p).numpy()
    assert np.allclose(lib, c_star, atol=0.05)


def test_optimal_baseline_bad_arguments():
    with pytest.raises(TypeError, match=r"samples\.dtype=float64, f_values\.dtype=float32"):
        ste_utils.discrete.optimal_baseline(np.ones(3, np.float32), np.ones(3), np.full(3, 0.5, np.float32))
    with pytest.raises(ValueError, match=r"p must lie in \(0, 1\)"):
        ste_utils.discrete.optimal_baseline([1.0], [1.0], [0.0])


# ------------------------------------------------------------------ the moving-average codebook
def test_ema_codebook_update_against_numpy_and_dead_codes_stay():
    """N <- g N + (1 - g) n, m <- g m + (1 - g) sum z, e = m / N (NumPy, float64), over several
    steps; code 2 is never chosen, so it stays where it started (up to rounding)."""
    dec = 0.9
    codes = np.asarray([[0.0, 0.0], [1.0, 1.0], [9.0, -9.0]])
    rng = np.random.default_rng(4)
    state = ste_utils.discrete.ema_codebook(codes)
    assert_same(state.codebook.numpy(), codes, "initial state is the codebook")
    size, total = np.ones(3), codes.copy()
    for step in range(5):
        z = rng.normal(0.5, 0.4, (2, 6, 2))
        idx = np.argmin(((z[..., None, :] - state.codebook.numpy()) ** 2).sum(-1), axis=-1)
        state = ste_utils.discrete.ema_codebook_update(state, tf.constant(z), tf.constant(idx), decay=dec)
        n = np.bincount(idx.ravel(), minlength=3)
        s = np.zeros((3, 2))
        np.add.at(s, idx.ravel(), z.reshape(-1, 2))
        size, total = dec * size + (1 - dec) * n, dec * total + (1 - dec) * s
        np.testing.assert_allclose(state.cluster_size.numpy(), size, rtol=1e-13)
        np.testing.assert_allclose(state.embed_sum.numpy(), total, rtol=1e-13, atol=1e-15)
    assert not np.any(np.bincount(idx.ravel(), minlength=3)[2:])
    np.testing.assert_allclose(state.codebook.numpy()[2], codes[2], rtol=1e-13)
    assert np.isclose(state.cluster_size.numpy()[2], dec ** 5)


def test_restart_dead_codes_moves_only_dead_codes_onto_encoder_outputs():
    state = ste_utils.discrete.EMACodebook(tf.constant([2.0, 0.001, 0.5, 0.0]),
                                           tf.constant([[2.0, 2.0], [1.0, 1.0], [0.5, 0.0], [0.0, 0.0]]))
    z = tf.constant(np.arange(12.0).reshape(6, 2) + 100, tf.float32)
    new, dead = ste_utils.discrete.restart_dead_codes(state, z, seed=(1, 2), threshold=0.01)
    assert dead.numpy().tolist() == [False, True, False, True]
    assert_same(new.cluster_size.numpy(), np.asarray([2.0, 1.0, 0.5, 1.0], np.float32), "N")
    rows = {tuple(r) for r in z.numpy()}
    assert tuple(new.codebook.numpy()[1]) in rows and tuple(new.codebook.numpy()[3]) in rows
    assert_same(new.codebook.numpy()[[0, 2]], state.codebook.numpy()[[0, 2]], "live codes unchanged")
    with pytest.raises(ValueError, match=r"Received: threshold=-1"):
        ste_utils.discrete.restart_dead_codes(state, z, (1, 2), threshold=-1)
    with pytest.raises(ValueError, match=r"Received: decay=1"):
        ste_utils.discrete.ema_codebook_update(state, z, tf.zeros([6], tf.int32), decay=1)
    with pytest.raises(TypeError, match=r"z_e\.dtype=float64, codebook dtype=float32"):
        ste_utils.discrete.restart_dead_codes(state, tf.cast(z, tf.float64), (1, 2))


# ------------------------------------------------------------------ finite scalar quantization
def fsq_reference(z, levels):
    """FSQ from its specification, NumPy float64: bound, round half to even, normalise."""
    L = np.asarray(levels, np.float64)
    h = (L - 1) * (1 - 1e-3) / 2
    o = np.where(L % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(o / h)
    bounded = np.tanh(z + shift) * h - o
    value = np.round(bounded) / np.floor(L / 2)
    grad = (1 - np.tanh(z + shift) ** 2) * h / np.floor(L / 2)
    return value, grad, bounded


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
def test_fsq_quantize_values_gradient_and_levels(dtype, mode):
    """Each channel takes exactly L values in [-1, 1] (odd L symmetric with 0; even L from -1 to
    1 - 2/L); z = 0 gives 0 and large |z| the extremes; the gradient is the bound's derivative
    over floor(L/2) (round straight through). Points within 1e-4 of a rounding tie are left out
    of the value comparison (float32 may round the bound either way there)."""
    levels = [3, 4, 5, 8]
    rng = np.random.default_rng(5)
    z = np.concatenate([rng.normal(0, 1.5, (400, 4)), np.zeros((1, 4)), np.full((1, 4), 30.0),
                        np.full((1, 4), -30.0)]).astype(dtype)
    up = upstream_like(z.shape, dtype)
    ((y, (g,)),) = run_cases([(lambda t: ste_utils.discrete.fsq_quantize(t, levels), [z], up)], mode)
    value, grad, bounded = fsq_reference(z.astype(np.float64), levels)
    clear = np.abs(np.abs(bounded - np.floor(bounded)) - 0.5) > 1e-4
    assert y.dtype == dtype and clear.mean() > 0.99
    assert np.array_equal(y[clear], value.astype(dtype)[clear])
    np.testing.assert_allclose(g, grad * up, rtol=64 * eps(dtype), atol=8 * eps(dtype))
    assert y[-3].tolist() == [0, 0, 0, 0]
    assert y[-2].tolist() == [1, 0.5, 1, 0.75] and y[-1].tolist() == [-1, -1, -1, -1]
    for d, L in enumerate(levels):
        assert len(np.unique(y[:, d])) == L


def test_fsq_indices_enumerate_the_implicit_codebook():
    levels = [3, 4, 2]
    grids = [np.round(np.arange(L) - L // 2) / (L // 2) for L in levels]
    codes = np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, 3)
    idx = ste_utils.discrete.fsq_indices(codes.astype(np.float32), levels).numpy()
    assert idx.dtype == np.int32 and sorted(idx.tolist()) == list(range(24))
    digits = codes * np.asarray([1, 2, 1]) + np.asarray([1, 2, 1])
    assert idx.tolist() == (digits @ np.asarray([1, 3, 12])).astype(int).tolist()


@pytest.mark.parametrize("levels,message", [
    ([3, 1], r"integers >= 2\. Received: levels=\[3, 1\]"), ("35", r"Received: levels='35'"),
    ([3, 5, 5], r"one entry per channel \(the last axis, 2\)\. Received: levels=\[3, 5, 5\]")])
def test_fsq_bad_levels(levels, message):
    with pytest.raises(ValueError, match=message):
        ste_utils.discrete.fsq_quantize(tf.zeros([4, 2]), levels)


def test_codebook_updates_refuse_a_wrong_code_dimension():
    state = ste_utils.discrete.ema_codebook(np.zeros((3, 2), np.float32))
    for call in (lambda z: ste_utils.discrete.ema_codebook_update(state, z, tf.zeros([4], tf.int32)),
                 lambda z: ste_utils.discrete.restart_dead_codes(state, z, (1, 2))):
        with pytest.raises(ValueError, match=r"codebook's D = 2\. Received: z_e\.shape=\(4, 3\)"):
            call(tf.zeros([4, 3]))
    with pytest.raises(ValueError, match=r"samples must be 0 or 1\. Received: samples with entries \[0\.5\]"):
        ste_utils.discrete.optimal_baseline([1.0], [0.5], [0.5])
