"""The checks of assignment 09 (int8 dense layer, TFLite's fixed-point requantization): the
references pass their own checks, typical wrong answers fail with a message that says what is
wrong, and grading mode (cases in and evidence out as JSON, judged outside) reaches the same
verdicts. Every reference is recomputed by the grader in NumPy (ste_utils.integer)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ste_course import checks
from ste_course.checks import check, draw_cases, get_spec
from spec_testing import assert_fails_with
from spec_testing import grade_as_sandbox as _grade
from ste_utils import integer


def _multiplier(real, rounding=lambda v: math.floor(v + 0.5), carry=True, floor_small=True):
    if real == 0:
        return 0, 0
    q, e = math.frexp(real)
    m = int(rounding(q * 2 ** 31))
    if carry and m == 2 ** 31:
        m, e = m // 2, e + 1
    if floor_small and e < -31:
        return 0, 0
    return (2 ** 31 - 1, 30) if e > 30 else (m, e)


def _requantize(acc, m, e, z, mode="good"):
    acc = np.asarray(acc, np.int64)
    total = 31 - e
    if mode == "half_even":  # np.round: halves to even
        scaled = np.round(acc * m / 2.0 ** total).astype(np.int64)
    elif mode == "no_clamp":  # int8 wraps around instead of saturating
        return ((acc * m + (1 << (total - 1))) >> total) .__add__(z).astype(np.int8)
    elif mode == "truncate":
        scaled = (acc * m) >> total
    else:
        scaled = (acc * m + (1 << (total - 1))) >> total
    return np.clip(scaled + z, -128, 127).astype(np.int8)


def _dense(x, zx, w, b, m, e, zy, mode="good"):
    if mode == "int8_products":  # the products wrap in int8
        prod = ((x.astype(np.int16) - zx).astype(np.int8)[:, :, None] * w.astype(np.int8)[None]).astype(np.int8)
        acc = prod.astype(np.int64).sum(1) + b
    elif mode == "no_zero_point":
        acc = x.astype(np.int64) @ w.astype(np.int64) + b
    elif mode == "no_bias":
        acc = (x.astype(np.int64) - zx) @ w.astype(np.int64)
    else:
        acc = (x.astype(np.int64) - zx) @ w.astype(np.int64) + b
    return _requantize(acc, m, e, zy)


GOOD = {"deploy/quantize_multiplier": _multiplier, "deploy/requantize": _requantize, "deploy/dense": _dense}
WRONG = {
    "deploy/quantize_multiplier": [
        (lambda r: _multiplier(r, rounding=lambda v: round(v)), "halves away from zero"),  # Python round: to even
        (lambda r: _multiplier(r, carry=False), "reaches 2**31"),
        (lambda r: _multiplier(r, floor_small=False), "cannot be kept"),
        (lambda r: tuple(np.int64(v) for v in _multiplier(r))[:1], "must return a tuple"),
    ],
    "deploy/requantize": [
        (lambda *a: _requantize(*a, mode="half_even"), "exactly half-way"),
        (lambda *a: _requantize(*a, mode="no_clamp"), "outside int8: clamp"),
        (lambda *a: _requantize(*a, mode="truncate"), "should be"),
        (lambda *a: _requantize(*a).astype(np.int32), "should have dtype int8"),
    ],
    "deploy/dense": [
        (lambda *a: _dense(*a, mode="int8_products"), "Accumulate in int32"),
        (lambda *a: _dense(*a, mode="no_zero_point"), "x_zero_point"),
        (lambda *a: _dense(*a, mode="no_bias"), "bias"),
        (lambda x, *a: _dense(x, *a)[:1], "should have shape"),
    ],
}


def test_every_spec_has_implementations():
    assert set(GOOD) == set(WRONG) == {n for n, s in checks.SPECS.items() if s.run.__module__ == "ste_course.specs.deploy"}


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("name", sorted(GOOD))
def test_reference_passes_its_own_check(name, hidden, capsys):
    check(GOOD[name], name, hidden=hidden)
    check(getattr(integer, {"deploy/quantize_multiplier": "quantize_multiplier", "deploy/requantize": "requantize",
                            "deploy/dense": "int8_dense"}[name]), name, hidden=hidden)
    assert capsys.readouterr().out.count("OK: ") == 2


@pytest.mark.parametrize("name,k", [(n, k) for n in sorted(WRONG) for k in range(len(WRONG[n]))])
def test_wrong_implementation_fails_with_what_to_fix(name, k):
    assert_fails_with(name, *WRONG[name][k])


@pytest.mark.parametrize("name", sorted(GOOD))
def test_grading_round_trip(name):
    assert _grade(name, GOOD[name]) == []
    wrong, phrase = WRONG[name][0]
    assert any(phrase in m for m in _grade(name, wrong))


def test_hidden_cases_hold_ties_saturation_and_differ_per_student():
    spec = get_spec("deploy/requantize")
    cases = draw_cases(spec, True, 11)
    ties = saturated = 0
    for case in cases:
        acc, m, e = case["acc"].astype(np.int64), case["multiplier"], case["shift"]
        ties += int(np.sum((acc * m) % (1 << (31 - e)) == 1 << (30 - e)))
        out = integer.requantize(acc, m, e, case["zero_point"])
        saturated += int(np.sum((out == 127) | (out == -128)))
    assert ties >= 4 and saturated >= 4
    other = draw_cases(spec, True, 12)
    assert not np.array_equal(cases[0]["acc"], other[0]["acc"])
    dense = draw_cases(get_spec("deploy/dense"), True, 11)
    assert all((c["x"] == -128).any() for c in dense)
