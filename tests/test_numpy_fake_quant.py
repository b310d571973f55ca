"""The NumPy reference of ``fake_quant/*`` (``ste_course.references.qat``) against TensorFlow's own
``fake_quant_with_min_max_vars`` and its gradient, bit for bit: on the drawn cases (the oracle
test grades a hand-written TensorFlow answer, since the spec refuses TensorFlow's op) and on
random ranges whose step is not a power of two, at the nudged bounds, their float neighbours and
near-ties (k + 0.4999999, k + 0.5, k + 0.5000001 steps), with narrow_range, clamped zero points
and bits from 2 to 16."""

from __future__ import annotations

import numpy as np
import pytest

from ste_course.references.qat import fake_quant_gradients, fake_quant_value, nudge
from ste_course.specs.base import draw_cases, get_spec


def _tensorflow(case) -> dict:
    import tensorflow as tf

    x, lo, hi = (tf.constant(case[k]) for k in ("x", "min", "max"))
    with tf.GradientTape() as tape:
        tape.watch([x, lo, hi])
        y = tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=case["bits"],
                                                         narrow_range=case["narrow_range"])
    grads = tape.gradient(y, [x, lo, hi], output_gradients=tf.constant(case["upstream"]))
    return {"value": y.numpy(), **{k: g.numpy() for k, g in zip(("x_gradient", "min_gradient", "max_gradient"), grads)}}


def _assert_same_bits(case):
    want = _tensorflow(case)
    got = {**fake_quant_value(case), **fake_quant_gradients(case)}
    for key, expected in want.items():
        assert got[key].dtype == expected.dtype and got[key].shape == expected.shape, key
        bad = np.flatnonzero(got[key].ravel().view(np.uint32) != expected.ravel().view(np.uint32))
        assert not len(bad), (f"{key} differs at {bad[:5]}: x = {np.ravel(case['x'])[bad[:5]]}, "
                              f"numpy {got[key].ravel()[bad[:5]]}, tensorflow {expected.ravel()[bad[:5]]}")


@pytest.mark.parametrize("seed", range(12))
def test_drawn_cases_equal_tensorflow(seed):
    spec = get_spec("fake_quant/value")
    for case in draw_cases(spec, True, seed) + (draw_cases(spec, False, 0) if seed == 0 else []):
        _assert_same_bits(case)


def _random_case(rng, trial) -> dict:
    bits = int(rng.integers(2, 17))
    narrow = bool(trial % 2)
    lo = -abs(rng.normal()) * 10 ** rng.uniform(-3, 2)
    hi = abs(rng.normal()) * 10 ** rng.uniform(-3, 2)
    if trial % 5 == 1:
        lo = abs(lo) / 10      # min > 0: the zero point clamps to the lowest level
        hi = lo + abs(hi)
    elif trial % 5 == 2:
        hi = -abs(hi) / 10      # max < 0: to the highest
        lo = hi - abs(lo)
    lo, hi = np.float32(lo), np.float32(hi)
    n_lo, n_hi, scale, _ = nudge(lo, hi, bits, narrow)
    k = rng.integers(-3, min(2 ** bits, 300) + 3, 200)
    x = n_lo + (k + rng.choice([0.0, 0.25, 0.4999999, 0.5, 0.5000001], k.size)) * scale
    edges = np.array([n_lo, n_hi], np.float32)
    x = np.concatenate([x, edges, np.nextafter(edges, np.float32(np.inf)), np.nextafter(edges, np.float32(-np.inf)),
                        [lo, hi, 0.0]]).astype(np.float32)
    return {"x": x, "min": np.asarray(lo), "max": np.asarray(hi), "bits": bits, "narrow_range": narrow,
            "upstream": rng.normal(size=x.shape).astype(np.float32)}


def test_random_ranges_equal_tensorflow():
    rng = np.random.default_rng(26)
    for trial in range(60):
        _assert_same_bits(_random_case(rng, trial))


def test_an_empty_range_equals_tensorflow():
    """min = max = 0: the op returns 0 and passes the whole gradient to x."""
    x = np.array([-1.0, 0.0, 0.5], np.float32)
    _assert_same_bits({"x": x, "min": np.asarray(0, np.float32), "max": np.asarray(0, np.float32), "bits": 8,
                       "narrow_range": False, "upstream": np.array([1.0, -2.0, 0.5], np.float32)})
