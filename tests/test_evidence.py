"""The trust boundary's plain-data encoding: round trips and rejection of malformed evidence."""

import math

import numpy as np
import pytest

from ste_course.evidence import EvidenceError, decode_array, encode_array


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_round_trip_keeps_values_shape_and_dtype(dtype):
    x = np.array([[0.0, -1.5, np.nan], [np.inf, -np.inf, 2.25]], dtype=dtype)
    values, name = decode_array(encode_array(x))
    assert name == dtype
    assert values.shape == (2, 3)
    np.testing.assert_array_equal(values, x.astype(np.float64))


def test_tensorflow_tensor_reports_its_own_dtype():
    import tensorflow as tf

    values, name = decode_array(encode_array(tf.constant([1.0, 2.0], dtype=tf.float16)))
    assert name == "float16"
    np.testing.assert_array_equal(values, [1.0, 2.0])


@pytest.mark.parametrize("bad", [
    None, [], {"dtype": "float32", "shape": [2], "data": [1.0]},  # size mismatch
    {"dtype": "float32", "shape": [1], "data": ["1.0"]},  # number as string
    {"dtype": "float32", "shape": [1], "data": [True]},  # bool is not a number
    {"dtype": "float32", "shape": [-1], "data": []},
    {"dtype": "x" * 100, "shape": [0], "data": []},
    {"dtype": "float32", "shape": [1], "data": [{"__eq__": "yes"}]},
    {"dtype": "float32", "shape": [1], "data": [1.0], "extra": 1},
])
def test_malformed_evidence_is_rejected(bad):
    with pytest.raises(EvidenceError):
        decode_array(bad)


def test_object_arrays_are_not_evidence():
    class AlwaysEqual:
        def __eq__(self, other):
            return True

    with pytest.raises(EvidenceError, match="Python objects"):
        encode_array(np.array([AlwaysEqual()], dtype=object))


def test_nan_is_encoded_as_a_string_not_as_invalid_json():
    encoded = encode_array(np.array([math.nan]))
    assert encoded["data"] == ["nan"]
