"""The trust boundary's plain-data encoding: round trips, size, and rejection of hostile evidence
(only ``EvidenceError``, whatever the sandbox wrote)."""

import base64
import json
import math

import ml_dtypes
import numpy as np
import pytest

from ste_course.evidence import MAX_ELEMENTS, EvidenceError, decode_array, encode_array


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_round_trip_keeps_values_shape_and_dtype(dtype):
    x = np.array([[0.0, -1.5, np.nan], [np.inf, -np.inf, 2.25]], dtype=dtype)
    values, name = decode_array(encode_array(x))
    assert name == dtype
    assert values.shape == (2, 3)
    np.testing.assert_array_equal(values, x.astype(np.float64))


def test_every_float64_bit_pattern_survives():
    x = np.array([5e-324, -0.0, np.nextafter(1.0, 2.0), np.finfo(np.float64).max, 1 / 3])
    values, _ = decode_array(encode_array(x))
    assert values.tobytes() == x.tobytes()


@pytest.mark.parametrize("dtype, values", [
    ("bfloat16", [1.0, -0.0078125, 3.0e38, np.inf]), ("int32", [-2**31, 0, 2**31 - 1]),
    ("int64", [-7, 2**40]), ("uint8", [0, 255]), ("bool", [True, False]), ("int16", [-3, 300])])
def test_other_dtypes_round_trip(dtype, values):
    x = np.array(values, dtype=ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    got, name = decode_array(encode_array(x))
    assert name == dtype
    np.testing.assert_array_equal(got, x.astype(np.float64))


def test_scalars_and_empty_arrays():
    for x in (np.float32(2.5), np.zeros((0, 3), np.float32)):
        got, _ = decode_array(encode_array(x))
        assert got.shape == np.shape(x)
        np.testing.assert_array_equal(got, np.asarray(x, np.float64))


def test_float64_values_reencoded_under_their_own_dtype_name():
    x = np.array([0.1, 1e-8], np.float32)
    values, name = decode_array(encode_array(x))
    again, again_name = decode_array(encode_array(values, name))
    assert again_name == "float32" and again.tobytes() == values.tobytes()


def test_tensorflow_tensor_reports_its_own_dtype():
    import tensorflow as tf

    values, name = decode_array(encode_array(tf.constant([1.0, 2.0], dtype=tf.float16)))
    assert name == "float16"
    np.testing.assert_array_equal(values, [1.0, 2.0])


def test_arrays_are_raw_bytes_not_decimal_text():
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    encoded = json.dumps(encode_array(x))
    listed = json.dumps([float(v) for v in x])
    assert len(encoded) < 4 * 10_000 * 4 / 3 + 100  # base64 of 4 bytes per element
    assert len(encoded) * 3 < len(listed)


def _enc(dtype, shape, data: bytes):
    return {"dtype": dtype, "shape": shape, "bytes": base64.b64encode(data).decode()}


HOSTILE = [
    None, [], "x", 1, {"dtype": "float32", "shape": [2], "data": [1.0, 2.0]},  # the old list form
    _enc("float32", [2], b"\0" * 4),  # fewer bytes than the shape says
    _enc("float32", [1], b"\0" * 8),  # more
    {"dtype": "float32", "shape": [1], "bytes": "AAAA====A"},  # length and padding wrong
    {"dtype": "float32", "shape": [1], "bytes": "AA*A=AAA"[:8]},  # not base64
    {"dtype": "float32", "shape": [1], "bytes": "AAAAAAA="},  # right length of text, 5 bytes
    {"dtype": "float32", "shape": [1], "bytes": ["AAAAAA=="]},
    {"dtype": "float32", "shape": [1], "bytes": "\udcff\udcfe\udcfd\udcfc\udcfb\udcfa\udcf9\udcf8"},
    _enc("float32", [-1], b""), _enc("float32", [True], b"\0" * 4), _enc("float32", [1.0], b"\0" * 4),
    _enc("float32", "1", b"\0" * 4), _enc("float32", [1] * 9, b"\0" * 4),
    _enc("float32", [10**6, 10**6], b""),  # 10^12 elements: refused before anything is allocated
    _enc("float64", [2**32, 2**32, 2**32, 2**32], b""),  # 2^128
    _enc("float32", [65536] * 4, b""),  # 2^64 elements: wraps to 0 in an int64 product
    _enc("float64", [0, 10**400], b""),  # empty, but one dimension is absurd
    _enc("x" * 100, [0], b""), _enc("", [0], b""), _enc(7, [0], b""),
    dict(_enc("float32", [1], b"\0" * 4), extra=1),
    {"dtype": "float32", "shape": [1], "bytes": "A" * (MAX_ELEMENTS * 11)},
]


@pytest.mark.parametrize("bad", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_evidence_raises_evidence_error_only(bad):
    with pytest.raises(EvidenceError):
        decode_array(bad)


def test_bool_bytes_other_than_0_and_1_are_true():
    values, _ = decode_array(_enc("bool", [3], b"\0\x01\xff"))
    np.testing.assert_array_equal(values, [0.0, 1.0, 1.0])


def test_object_arrays_are_not_evidence():
    class AlwaysEqual:
        def __eq__(self, other):
            return True

    with pytest.raises(EvidenceError, match="Python objects"):
        encode_array(np.array([AlwaysEqual()], dtype=object))


def test_nan_travels_as_bytes_in_valid_json():
    encoded = encode_array(np.array([math.nan]))
    back = json.loads(json.dumps(encoded, allow_nan=False))
    assert math.isnan(decode_array(back)[0][0])
