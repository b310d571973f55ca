"""The checks of assignments 07 (LSQ, PACT) and 08 (straight-through Gumbel-softmax, VQ): the
``ste_utils`` references pass their own checks, typical wrong answers fail with a message that
says what is wrong and why, and grading mode (cases in and evidence out as JSON, judged
outside) reaches the same verdicts."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import ste_utils
from ste_course import checks
from ste_course.checks import check, compare, draw_cases, get_spec
from ste_course.evidence import encode_array
from ste_course.specs.qat import levels
from spec_testing import assert_fails_with
from spec_testing import grade_as_sandbox as _grade

tf.get_logger().setLevel("ERROR")
MODULES = ("ste_course.specs.qat", "ste_course.specs.discrete")


# ----------------------------------------------------------------------------- 07: LSQ and PACT
def _lsq(x, step, bits, signed=True, grad_scale=1.0, rounding=tf.round, low_bound=True, placement="rounding",
         strict=False):
    """LSQ written the ways students write it; the defaults are correct (chapter 7.1's placement)."""
    q_n, q_p = levels(bits, signed)
    low, high = tf.constant(-q_n, x.dtype), tf.constant(q_p, x.dtype)

    @tf.custom_gradient
    def scaled(s):
        return tf.identity(s), lambda u: u * tf.constant(grad_scale, s.dtype)

    s = scaled(step)
    v = x / s
    if placement == "whole":  # the STE around the whole quantizer: s only in the stopped branch
        return ste_utils.straight_through(x, s * tf.clip_by_value(rounding(v), low, high))
    if placement == "none":  # no STE: tf.round has no gradient
        return s * tf.clip_by_value(rounding(v), low, high)
    if strict:  # the paper's strict windows: dx = 0 and ds = -Q_N / Q_P on the bounds
        inside = (v > low) & (v < high)
        clipped = tf.where(inside, v, tf.stop_gradient(tf.clip_by_value(v, low, high)))
        return s * (clipped + tf.stop_gradient(rounding(clipped) - clipped))
    clipped = tf.clip_by_value(v, low, high) if low_bound else tf.minimum(v, high)
    return s * (clipped + tf.stop_gradient(rounding(clipped) - clipped))


def _half_up(t):
    return tf.floor(t + 0.5)


def _pact(x, alpha, bits, x_window_closed=False, lsq_style=False):
    n = 2 ** bits - 1
    if lsq_style:  # autodiff of the rounding-only STE: alpha also gets the rounding error inside
        u = tf.clip_by_value(x, tf.zeros_like(x), alpha) * n / alpha
        return alpha / n * (u + tf.stop_gradient(tf.round(u) - u))

    @tf.custom_gradient
    def fn(x, a):
        def grad(up):
            inside = (x >= 0) & (x <= a) if x_window_closed else (x >= 0) & (x < a)
            return tf.where(inside, up, 0 * up), tf.where(x >= a, up, 0 * up)
        return ste_utils.quantize(x / a, bits) * a, grad

    return fn(x, alpha)


def _fq(x, lo, hi, bits, narrow_range=False, mode="good"):
    """tf.quantization.fake_quant_with_min_max_vars written as chapter 7.4 builds it; other modes
    are the usual mistakes."""
    q_min, q_max = (0 if mode == "ignore_narrow" or not narrow_range else 1), 2 ** bits - 1
    scale = (hi - lo) / float(q_max - q_min)
    zero = q_min - lo / scale
    zero = tf.clip_by_value(tf.sign(zero) * tf.floor(tf.abs(zero) + 0.5), q_min, q_max)
    n_lo, n_hi = (q_min - zero) * scale, (q_max - zero) * scale
    if mode == "no_nudge":
        n_lo, n_hi = lo, hi
    if mode == "unnudged_mask":  # the values of the nudged range, the gradient window of [min, max]
        c = ste_utils.straight_through(tf.clip_by_value(x, lo, hi), tf.clip_by_value(x, n_lo, n_hi))
    else:
        c = tf.clip_by_value(x, ste_utils.straight_through(lo, n_lo), ste_utils.straight_through(hi, n_hi))
    rounding = tf.round if mode == "round_even" else (lambda t: tf.floor(t + 0.5))
    return ste_utils.straight_through(c, rounding((c - n_lo) * (1.0 / scale)) * scale + n_lo)


# ----------------------------------------------------------------------------- 08: Gumbel-softmax and VQ
def _gumbel(logits, noise, tau, mode="good"):
    soft = tf.nn.softmax((logits + noise) / tau)
    if mode == "soft":
        return soft
    if mode == "no_noise":
        return ste_utils.ste_argmax(logits / tau)
    if mode == "identity":
        return ste_utils.straight_through(logits, ste_utils.one_hot_argmax(logits + noise))
    if mode == "tau_one":  # the softmax at temperature 1
        return ste_utils.ste_argmax(logits + noise)
    if mode == "no_tau":  # the softmax's Jacobian written by hand, without its 1/tau
        @tf.custom_gradient
        def fn(logits):
            y = tf.nn.softmax((logits + noise) / tau)
            return ste_utils.one_hot_argmax(logits + noise), lambda u: y * (u - tf.reduce_sum(u * y, -1, keepdims=True))
        return fn(logits)
    if mode == "multi_hot":
        hard = tf.cast(soft == tf.reduce_max(soft, -1, keepdims=True), soft.dtype)
        return hard + soft - tf.stop_gradient(soft)
    return ste_utils.ste_argmax((logits + noise) / tau)


def _vq(z_e, codebook, mode="good"):
    distances = tf.reduce_sum(tf.square(z_e[..., None, :] - codebook), axis=-1)
    if mode == "argmax":
        indices = tf.argmax(distances, axis=-1)
    elif mode == "last_tie":  # ties to the highest index
        k = codebook.shape[0]
        indices = k - 1 - tf.argmin(tf.reverse(distances, [-1]), axis=-1)
    else:
        indices = tf.argmin(distances, axis=-1)
    chosen = tf.gather(codebook, indices)
    if mode == "no_stop":  # z_q by a one-hot product: the codes get z_q's gradient, z_e nothing
        z_q = tf.one_hot(indices, codebook.shape[0], dtype=z_e.dtype) @ codebook if z_e.shape.rank == 2 else chosen
    else:
        z_q = z_e + tf.stop_gradient(chosen - z_e)
    sg = (lambda t: t) if mode == "losses_without_stop" else tf.stop_gradient
    codebook_loss = tf.reduce_mean(tf.square(sg(z_e) - chosen))
    commitment_loss = tf.reduce_mean(tf.square(z_e - sg(chosen)))
    if mode == "sum_losses":
        d = float(z_e.shape[-1])
        codebook_loss, commitment_loss = codebook_loss * d, commitment_loss * d
    if mode == "swapped":
        codebook_loss, commitment_loss = commitment_loss, codebook_loss
    return z_q, indices, codebook_loss, commitment_loss



def _reinforce(f, b, p, c, mode="right"):
    """The score-function estimate per sample, written the ways students write it."""
    c = tf.cast(c, f.dtype)
    f = f[:, None]
    if mode == "no_division":
        return (f - c) * (b - p)
    if mode == "sign":
        return (f - c) * (p - b) / (p * (1 - p))
    if mode == "after":
        return f * (b - p) / (p * (1 - p)) - c
    if mode == "no_baseline":
        return f * (b - p) / (p * (1 - p))
    return (f - c) * (b - p) / (p * (1 - p))

GOOD = {
    "lsq/value": ste_utils.lsq_quantize,
    "lsq/x_gradient": ste_utils.lsq_quantize,
    "lsq/step_gradient": ste_utils.lsq_quantize,
    "pact/quantize": ste_utils.pact_quantize,
    "fake_quant/value": _fq,
    "fake_quant/gradients": _fq,
    "gumbel_st/value": _gumbel,
    "gumbel_st/gradient": _gumbel,
    "vq/forward": ste_utils.vector_quantize,
    "vq/gradients": ste_utils.vector_quantize,
    "reinforce/bias": _reinforce,
    "reinforce/variance": _reinforce,
}
# Correct answers written differently from the reference: they must pass too.
ALSO_GOOD = {
    "lsq/value": [_lsq], "lsq/x_gradient": [_lsq], "lsq/step_gradient": [_lsq],
    # the paper's printed eq. (3) on the bounds (dx = 0, ds = -Q_N or Q_P) is accepted too
    **{name: [_lsq, lambda *a, **k: _lsq(*a, **k, strict=True)] for name in ("lsq/x_gradient", "lsq/step_gradient")},
    "gumbel_st/value": [lambda l, n, t: tf.one_hot(tf.argmax(l + n, -1), l.shape[-1], dtype=l.dtype)],
    "gumbel_st/gradient": [lambda l, n, t: tf.nn.softmax((l + n) / t)],
    "vq/forward": [_vq], "vq/gradients": [_vq],
    # the library's estimator, with f as a column
    **{name: [lambda f, b, p, c: ste_utils.reinforce_gradient(f[:, None], b, p, baseline=c)]
       for name in ("reinforce/bias", "reinforce/variance")},
}


def _variant(fn, **kw):
    return lambda *args, **more: fn(*args, **more, **kw)


WRONG = {  # spec -> [(implementation, a phrase its message must contain)]
    "lsq/value": [(_variant(_lsq, rounding=_half_up), "tf.round rounds half to even"),
                  (_variant(_lsq, low_bound=False), "clipped to the lowest level")],
    "lsq/x_gradient": [(_variant(_lsq, placement="whole"), "x is clipped there"),
                       (_variant(_lsq, low_bound=False), "x is clipped there")],
    "lsq/step_gradient": [(_variant(_lsq, placement="none"), "LSQ's eq. 3"),
                          (_variant(_lsq, placement="whole"), "because x is clipped"),
                          (lambda x, s, b, signed=True, grad_scale=1.0: _lsq(x, s, b, signed), "times the grad scale"),
                          (_variant(_lsq, rounding=_half_up), "rounds half to even")],
    "fake_quant/value": [(_variant(_fq, mode="no_nudge"), "is nudged to"),
                         (_variant(_fq, mode="round_even"), "rounds half up"),
                         (_variant(_fq, mode="ignore_narrow"), "with narrow_range")],
    "fake_quant/gradients": [(_variant(_fq, mode="unnudged_mask"), "the nudged range"),
                             (_variant(_fq, mode="no_nudge"), "nudged"),
                             (lambda x, lo, hi, b, n: tf.stop_gradient(_fq(x, lo, hi, b, n)) + x - tf.stop_gradient(x),
                              "sum of the upstream")],
    "pact/quantize": [(_variant(_pact, x_window_closed=True), "x = alpha itself is excluded"),
                      (_variant(_pact, lsq_style=True), "does not depend on alpha there")],
    "gumbel_st/value": [(_variant(_gumbel, mode="multi_hot"), "not exactly one-hot"),
                        (_variant(_gumbel, mode="no_noise"), "the noise was left out"),
                        (_variant(_gumbel, mode="soft"), "not exactly one-hot")],
    "gumbel_st/gradient": [(_variant(_gumbel, mode="identity"), "(the identity STE)"),
                           (_variant(_gumbel, mode="no_tau"), "1/tau of the softmax's Jacobian is missing"),
                           (_variant(_gumbel, mode="tau_one"), "the softmax's at temperature 1"),
                           (_variant(_gumbel, mode="no_noise"), "your gradient leaves the noise out")],
    "vq/forward": [(_variant(_vq, mode="argmax"), "should get code"),
                   (_variant(_vq, mode="sum_losses"), "take the mean over every element"),
                   (_variant(_vq, mode="last_tie"), "the lowest index wins")],
    "vq/gradients": [(_variant(_vq, mode="no_stop"), "z_q passes its gradient straight through to z_e"),
                     (_variant(_vq, mode="losses_without_stop"), "has z_e inside stop_gradient"),
                     (_variant(_vq, mode="swapped"), "pulls each chosen code towards its vectors")],
    "reinforce/bias": [(_variant(_reinforce, mode="no_division"), "yours lacks the division"),
                       (_variant(_reinforce, mode="sign"), "the wrong sign"),
                       (_variant(_reinforce, mode="after"), "off by the baseline")],
    "reinforce/variance": [(_variant(_reinforce, mode="no_baseline"), "the variance without a baseline"),
                           (_variant(_reinforce, mode="after"), "the variance without a baseline")],
}


def _ours() -> set:
    import ste_course.specs  # noqa: F401

    return {name for name, spec in checks.SPECS.items() if spec.run.__module__ in MODULES}


def test_every_spec_has_implementations():
    assert set(GOOD) == _ours() == set(WRONG)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("name", sorted(GOOD))
def test_reference_passes_its_own_check(name, hidden, capsys):
    for fn in [GOOD[name]] + ALSO_GOOD.get(name, []):
        check(fn, name, hidden=hidden)
    assert capsys.readouterr().out.count("OK: ") == 1 + len(ALSO_GOOD.get(name, []))


@pytest.mark.parametrize("name,k", [(n, k) for n in sorted(WRONG) for k in range(len(WRONG[n]))])
def test_wrong_implementation_fails_with_what_to_fix(name, k):
    assert_fails_with(name, *WRONG[name][k])


@pytest.mark.parametrize("name", sorted(GOOD))
def test_grading_round_trip(name):
    for seed in (11, 12):  # the hidden cases differ per student
        assert _grade(name, GOOD[name], seed) == []
    wrong, phrase = WRONG[name][0]
    messages = _grade(name, wrong, 13)
    assert any(phrase in m for m in messages), messages


# ----------------------------------------------------------------------------- the cases themselves
def test_hidden_lsq_cases_hold_the_boundaries_and_differ_per_student():
    spec = get_spec("lsq/step_gradient")
    a, b = draw_cases(spec, True, 1), draw_cases(spec, True, 2)
    assert any(not np.array_equal(p["x"], q["x"]) for p, q in zip(a, b))
    for case in a:
        q_n, q_p = levels(case["bits"], case["signed"])
        v = case["x"].astype(np.float64) / case["step"].astype(np.float64)
        assert q_p in v and (v > q_p).any() and (v < -q_n).any() and (v - np.floor(v) == 0.5).any()
        if case["signed"]:
            assert -q_n in v
    assert {c["x"].dtype.name for c in a} == {"float16", "float32", "float64"}
    assert any(c["step"].shape == () for c in a) and any(c["step"].shape == c["x"].shape for c in a)


def test_the_message_names_the_clip_and_the_level():
    # the example of the issue: x/s = 7.5 with Q_P = 7 is clipped, so dq/ds = Q_P = 7
    x, s = np.array([3.75], np.float32), np.array([0.5], np.float32)
    case = {"x": x, "step": s, "bits": 4, "signed": True, "grad_scale": 1.0, "upstream": np.ones(1, np.float32)}
    spec = get_spec("lsq/step_gradient")
    expected = spec.reference(case)
    assert expected["step_gradient"].tolist() == [7.0]
    evidence = checks.collect(spec, _variant(_lsq, placement="whole"), case)
    (message,) = compare(spec, case, expected, evidence)
    assert "x/s = 7.5" in message and "Q_P = 7" in message and "should be 7 because x is clipped" in message
    assert message.endswith("yours is 0.")


def test_gumbel_spec_matches_the_library_sampler():
    # ste_utils.gumbel_softmax_st draws its noise from the seed: with that noise passed in, the
    # spec's reference gives the same sample and gradient.
    logits = tf.constant(np.random.default_rng(0).normal(size=(16, 5)), tf.float32)
    noise = ste_utils.discrete.gumbel_noise(logits.shape, (3, 4))
    upstream = tf.constant(np.random.default_rng(1).normal(size=(16, 5)), tf.float32)
    case = {"logits": logits.numpy(), "noise": noise.numpy(), "temperature": 0.5, "upstream": upstream.numpy()}
    with tf.GradientTape() as tape:
        tape.watch(logits)
        y = ste_utils.gumbel_softmax_st(logits, 0.5, (3, 4))
    grad = tape.gradient(y, logits, output_gradients=upstream)
    np.testing.assert_array_equal(get_spec("gumbel_st/value").reference(case)["value"], y)
    np.testing.assert_allclose(get_spec("gumbel_st/gradient").reference(case)["gradient"], grad, rtol=1e-6)


def test_hidden_choice_cases_have_exact_ties_and_clear_gaps():
    for name, key in (("gumbel_st/value", None), ("vq/forward", None)):
        cases = draw_cases(get_spec(name), True, 5)
        tie_rows = 0
        for case in cases:
            if name.startswith("gumbel"):
                z = (case["logits"] + case["noise"]).reshape(-1, case["logits"].shape[-1]).astype(np.float64)
            else:
                z = -((case["z_e"][..., None, :].astype(np.float64) - case["codebook"]) ** 2).sum(-1)
                z = z.reshape(-1, len(case["codebook"]))
            top = np.sort(z, axis=-1)[:, ::-1]
            gap = top[:, 0] - top[:, 1]
            tie_rows += int((gap == 0).sum())
            assert np.all((gap == 0) | (gap >= 1e-3 * np.maximum(1.0, np.abs(top[:, 0])) * 0.99)), (name, gap)
        assert tie_rows >= 2, name


def test_lsq_bounds_accept_either_convention_but_nothing_else():
    # x/s = Q_P = 3 and -Q_N = -4 exactly: dx may be u or 0, ds 0 or g u Q_P (g u (-Q_N)), each
    # element for itself; anything else is wrong (x/s = 1.5: ds = g (2 - 1.5) = 0.25)
    x, s = np.array([1.5, -2.0, 0.75], np.float32), np.array([0.5, 0.5, 0.5], np.float32)
    case = {"x": x, "step": s, "bits": 3, "signed": True, "grad_scale": 0.5, "upstream": np.array([2, 1, 1], np.float32)}
    for output, accepted, wrong in (("x_gradient", ([2, 1, 1], [0, 0, 1], [2, 0, 1]), [1, 1, 1]),
                                    ("step_gradient", ([0, 0, 0.25], [3, -2, 0.25], [0, -2, 0.25]), [1.5, 0, 0.25])):
        spec = get_spec(f"lsq/{output}")
        expected = spec.reference(case)
        for got in accepted:
            evidence = {"outputs": {output: encode_array(np.asarray(got, np.float32))}}
            assert compare(spec, case, expected, evidence) == [], (output, got)
        evidence = {"outputs": {output: encode_array(np.asarray(wrong, np.float32))}}
        (message,) = compare(spec, case, expected, evidence)
        assert "is accepted" in message, message


def test_fake_quant_refuses_tensorflows_own_op_and_hidden_ranges_cover_the_nudges():
    from ste_course.specs.qat import fq_nudge

    own = lambda x, lo, hi, b, n: tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=b, narrow_range=n)  # noqa: E731
    assert_fails_with("fake_quant/value", own, "FakeQuantWithMinMaxVars")
    assert_fails_with("fake_quant/gradients", own, "own implementation")
    cases = draw_cases(get_spec("fake_quant/value"), True, 4)
    assert {c["narrow_range"] for c in cases} == {True, False}
    zero_points = [fq_nudge(float(c["min"]), float(c["max"]), c["bits"], c["narrow_range"])[3] for c in cases]
    assert any(z % 1 == 0.5 for z in zero_points)                       # half-way: away from zero
    assert any(z < (1 if c["narrow_range"] else 0) for z, c in zip(zero_points, cases))   # min > 0
    assert any(z > 2 ** c["bits"] - 1 for z, c in zip(zero_points, cases))             # max < 0
    for c in cases:
        n_lo, n_hi = fq_nudge(float(c["min"]), float(c["max"]), c["bits"], c["narrow_range"])[:2]
        assert n_lo in c["x"] and n_hi in c["x"] and (c["x"] < n_lo).any() and (c["x"] > n_hi).any()
    assert any(not np.array_equal(a["x"], b["x"]) for a, b in zip(cases, draw_cases(get_spec("fake_quant/value"), True, 5)))


def test_reinforce_cases_closed_form_and_per_student_draws():
    """The judge's exact gradient is the closed form of d E[||W b - t||^2] / dp; its exact
    variance matches a large Monte-Carlo run; the students' hidden problems differ, and W, t
    (the judge's closed form) are not handed to the student's code."""
    from ste_course.specs.discrete import _reinforce_exact, _reinforce_formula, _reinforce_loss

    spec = get_spec("reinforce/bias")
    case = draw_cases(spec, hidden=True, seed=5)[1]
    w, t, p = (np.asarray(case[k], np.float64) for k in ("W", "t", "p"))
    m = w.T @ w
    closed = 2 * m @ p + np.diag(m) * (1 - 2 * p) - 2 * w.T @ t
    gradient, variance = _reinforce_exact(case)
    np.testing.assert_allclose(gradient, closed, rtol=1e-10)
    b = (np.random.default_rng(0).uniform(size=(100_000, len(p))) < p).astype(np.float64)
    est = _reinforce_formula(_reinforce_loss(case, b), b, p, np.asarray(case["baseline"], np.float64))
    np.testing.assert_allclose(est.var(axis=0), variance, rtol=0.05)
    other = draw_cases(spec, hidden=True, seed=6)[1]
    assert not np.array_equal(case["p"], other["p"])
    assert spec.hidden_inputs == ("W", "t")
