"""ste_utils.integer against exact rational references (fractions.Fraction) at the boundaries that
matter: zero, exact halves of both signs, the mantissa carry, multipliers too small to keep,
saturation at -128 and 127; and against the LiteRT interpreter on one converted layer.
ste_utils.deploy: batch-norm folding against Keras, freeze against the trained network."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from ste_utils import integer


def _round_half_up(f: Fraction) -> int:
    return math.floor(f + Fraction(1, 2))


def _round_half_away(f: Fraction) -> int:
    return int(math.copysign(math.floor(abs(f) + Fraction(1, 2)), f))


def _exact_multiplier(m: int, shift: int) -> Fraction:
    return Fraction(m) * Fraction(2) ** (shift - 31)


@pytest.mark.parametrize("real,expected", [
    (0.0, (0, 0)), (0.5, (2 ** 30, 0)), (0.75, (3 * 2 ** 29, 0)), (1.0, (2 ** 30, 1)), (0.25, (2 ** 30, -1)),
    (1.0 - 2.0 ** -40, (2 ** 30, 1)),                       # mantissa rounds to 2**31: the carry
    ((2 ** 30 + 0.5) / 2 ** 31, (2 ** 30 + 1, 0)),          # an exact half: away from zero (std::round)
    (2.0 ** -32, (2 ** 30, -31)), (2.0 ** -33, (0, 0)),     # the last keepable power, then 0
    (2.0 ** 31, (2 ** 31 - 1, 30)),                         # above the single rounding's range: saturated
])
def test_quantize_multiplier_boundaries(real, expected):
    assert integer.quantize_multiplier(real) == expected


def test_quantize_multiplier_is_within_half_a_unit():
    rng = np.random.default_rng(0)
    for real in rng.uniform(0.5, 1.0, 200) * 2.0 ** rng.integers(-20, 4, 200):
        m, e = integer.quantize_multiplier(float(real))
        assert 2 ** 30 <= m < 2 ** 31
        assert abs(_exact_multiplier(m, e) - Fraction(float(real))) <= Fraction(2) ** (e - 32)


@pytest.mark.parametrize("bad,error", [(-0.5, ValueError), (float("nan"), ValueError), (True, TypeError),
                                       ("0.5", TypeError)])
def test_quantize_multiplier_errors_say_what_was_received(bad, error):
    with pytest.raises(error, match="Received: real_multiplier="):
        integer.quantize_multiplier(bad)


def _accumulators(rng, m, e):
    total = 31 - e
    fixed = [0, 1, -1, 2 ** 31 - 1, -(2 ** 31)]
    return np.array(fixed + list(rng.integers(-(2 ** 31), 2 ** 31, 300)), np.int64)


@pytest.mark.parametrize("real", [1 / 8, 3 / 16, 0.00515457, 0.37, 0.9999, 1.5, 5.25])
def test_single_and_double_rounding_against_exact_fractions(real):
    m, e = integer.quantize_multiplier(real)
    acc = _accumulators(np.random.default_rng(1), m, e)
    exact = [Fraction(int(a)) * _exact_multiplier(m, e) for a in acc]
    single = integer.multiply_by_quantized_multiplier(acc, m, e)
    assert [int(v) for v in single] == [max(min(_round_half_up(f), 2 ** 31 - 1), -(2 ** 31)) for f in exact]
    if e <= 0:  # double rounding: a*m/2**31 rounded (halves up), then /2**-e rounded (halves away)
        high = [_round_half_up(Fraction(int(a) * m, 2 ** 31)) for a in acc]
        double = integer.multiply_by_quantized_multiplier(acc, m, e, rounding="double")
        assert [int(v) for v in double] == [_round_half_away(Fraction(h, 2 ** -e)) for h in high]


def test_exact_halves_round_up_in_single_and_away_from_zero_in_double():
    m, e = 2 ** 30, -2                                         # M = 1/8
    acc = np.array([4, 12, 20, -4, -12, -20], np.int64)        # 0.5, 1.5, 2.5, -0.5, -1.5, -2.5
    assert integer.multiply_by_quantized_multiplier(acc, m, e).tolist() == [1, 2, 3, 0, -1, -2]
    assert integer.multiply_by_quantized_multiplier(acc, m, e, rounding="double").tolist() == [1, 2, 3, -1, -2, -3]


def test_double_rounding_can_differ_from_single_by_one():
    m, e = integer.quantize_multiplier(0.014829253847939197)
    assert integer.multiply_by_quantized_multiplier(np.array([3405]), m, e).tolist() == [50]  # 50.4936
    assert integer.multiply_by_quantized_multiplier(np.array([3405]), m, e, rounding="double").tolist() == [51]


def test_saturating_doubling_high_mul_overflow_case():
    assert integer.saturating_rounding_doubling_high_mul(-(2 ** 31), -(2 ** 31)).tolist() == 2 ** 31 - 1


def test_requantize_zero_point_and_saturation():
    m, e = 2 ** 30, -2                                         # M = 1/8
    acc = np.array([0, 8 * 127, 8 * 128, 8 * 500, -8 * 128, -8 * 129, -(2 ** 31), 2 ** 31 - 1])
    out = integer.requantize(acc, m, e, 0)
    assert out.dtype == np.int8 and out.tolist() == [0, 127, 127, 127, -128, -128, -128, 127]
    shifted = integer.requantize(np.array([0, 8 * 10, -8 * 10]), m, e, -128)
    assert shifted.tolist() == [-128, -118, -128]              # zero point -128: negatives clamp to it
    relu = integer.requantize(np.array([-80, 80]), m, e, 5, activation_min=5)
    assert relu.tolist() == [5, 15]


def test_int8_dense_against_exact_arithmetic_and_overflowing_inputs():
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (6, 40)).astype(np.int8)
    x[0] = -128
    w = rng.integers(-127, 128, (40, 7)).astype(np.int8)
    w[:, 0] = 127
    bias = rng.integers(-5000, 5000, 7).astype(np.int32)
    m, e = integer.quantize_multiplier(0.0007)
    out = integer.int8_dense(x, 3, w, bias, m, e, -10)
    for i in range(6):
        for j in range(7):
            acc = sum((int(x[i, k]) - 3) * int(w[k, j]) for k in range(40)) + int(bias[j])
            want = min(max(_round_half_up(Fraction(acc) * _exact_multiplier(m, e)) - 10, -128), 127)
            assert int(out[i, j]) == want, (i, j)
    assert out.dtype == np.int8


@pytest.mark.parametrize("call,phrase", [
    (lambda: integer.int8_dense(np.zeros((2, 3), np.int8), 0, np.zeros((4, 2), np.int8), None, 2 ** 30, 0, 0),
     "Received: x.shape=(2, 3), weights.shape=(4, 2)"),
    (lambda: integer.int8_dense(np.zeros((1, 2), np.float32), 0, np.zeros((2, 1), np.int8), None, 2 ** 30, 0, 0),
     "x must hold integers"),
    (lambda: integer.int8_dense(np.zeros((1, 2), np.int8), 0, np.full((2, 1), -128), None, 2 ** 30, 0, 0),
     "weights must lie in [-127, 127]"),
    (lambda: integer.requantize(np.array([1]), 2 ** 30, 0, 200), "Received: zero_point=200"),
    (lambda: integer.multiply_by_quantized_multiplier(np.array([1]), 2 ** 30, 0, rounding="up"),
     "Received: rounding='up'"),
])
def test_errors_say_what_was_received(call, phrase):
    with pytest.raises((ValueError, TypeError)) as err:
        call()
    assert phrase in str(err.value)


def test_quantize_affine_divides_in_float32_as_tflite():
    scale = float(np.float32(1 / 255))
    assert integer.quantize_affine(np.array([0.5, 0.0, 1.0]), scale, -128).tolist() == [-1, -128, 127]
    assert integer.quantize_affine(np.array([-3.0, 3.0]), 0.01, 0, narrow_range=True).tolist() == [-127, 127]


# ----------------------------------------------------------------------------- deploy: one conversion
@pytest.fixture(scope="module")
def converted():
    import keras

    from ste_utils import deploy
    from ste_utils.data import load_digits
    from ste_utils.training import train

    data = load_digits()
    model = deploy.make_qat_mlp(hidden=16, weight_bits=4, seed=1)
    train(model, data, epochs=2, learning_rate=1e-2, seed=1)
    frozen = deploy.freeze(model, data.x_train)
    keras.utils.set_random_seed(0)
    return data, model, frozen, deploy.convert(frozen, data.x_train, n_calibration=50)


def test_numpy_integer_inference_equals_the_interpreter_bit_for_bit(converted):
    from ste_utils import deploy

    data, _, frozen, content = converted
    for reference_kernels in (True, False):
        model = deploy.Int8Model(content, reference_kernels=reference_kernels)
        q = model.quantize_input(data.x_test[:120])
        assert np.array_equal(deploy.integer_forward(model.dense_layers(), q), model.run(q))
    ref = deploy.Int8Model(content, reference_kernels=True)
    assert ref.ops() == ["FULLY_CONNECTED", "FULLY_CONNECTED"]
    assert {d for _, d, _, _ in ref.tensors()} == {"int8", "int32"}


def test_the_frozen_model_is_the_integer_model_up_to_near_ties(converted):
    """On the same input levels, a hidden level differs only where its exact value lies within
    1e-4 of a half (float32 accumulation in Keras rounds the other way), and only such digits
    get other logits."""
    from ste_utils import deploy

    data, model, frozen, content = converted
    x = data.x_test[:120]
    assert np.mean(frozen.predict(x, verbose=0).argmax(1) == model.predict(x, verbose=0).argmax(1)) > 0.97
    int8 = deploy.Int8Model(content, reference_kernels=True)
    s_x, z_x = int8.input_quantization
    s_y, z_y = int8.output_quantization
    levels = (np.round(frozen.layers[0](x).numpy() / s_x) + z_x).astype(np.int8)
    first, second = int8.dense_layers()
    hidden = deploy.integer_forward([first], levels, relu_after=[True])
    keras_hidden = np.round(frozen.layers[2](frozen.layers[1](frozen.layers[0](x))).numpy() / first["y_scale"]) \
        + first["y_zero_point"]
    exact = ((levels.astype(np.int64) - first["x_zero_point"]) @ first["weights"] + first["bias"]) \
        * first["multipliers"][0]
    off = hidden != keras_hidden
    assert np.all(np.abs(exact[off] % 1 - 0.5) < 1e-4)
    logits_off = (int8.run(levels) != np.round(frozen.predict(x, verbose=0) / s_y) + z_y).any(1)
    exact_out = ((hidden.astype(np.int64) - second["x_zero_point"]) @ second["weights"] + second["bias"]) \
        * second["multipliers"][0]
    near_tie_out = (np.abs(exact_out % 1 - 0.5) < 1e-4).any(1)
    assert np.all(off.any(1) | near_tie_out | ~logits_off)


def test_fold_batch_norm_matches_keras_inference():
    import keras

    from ste_utils.deploy import fold_batch_norm

    keras.utils.set_random_seed(0)
    dense, bn = keras.layers.Dense(5), keras.layers.BatchNormalization()
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    bn(dense(x), training=False)
    bn.set_weights([np.linspace(0.5, 2, 5), np.linspace(-1, 1, 5), np.linspace(-0.3, 0.3, 5), np.linspace(0.1, 3, 5)])
    k, b = fold_batch_norm(dense.kernel.numpy(), dense.bias.numpy(), bn)
    assert np.allclose(x @ k + b, bn(dense(x), training=False).numpy(), atol=1e-5)


def test_nudged_range_puts_zero_on_the_grid():
    from ste_utils.deploy import nudged_range

    lo, hi, scale, zero = nudged_range(-0.25, 1.2)
    assert zero == round(0.25 / scale) - 128 and math.isclose(lo, -(zero + 128) * scale, rel_tol=1e-6)
    assert nudged_range(0.0, 1.0)[3] == -128
    with pytest.raises(ValueError, match="Received: \\(lo, hi\\)="):
        nudged_range(0.5, 1.0)
