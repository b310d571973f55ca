"""Bad arguments raise the documented error, naming the argument and what was received."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

import ste_utils

X = tf.constant([-1.5, 0.0, 0.5])
CLIPPED = {
    "ste_sign": lambda c: ste_utils.ste_sign(X, clip_value=c),
    "ste_heaviside": lambda c: ste_utils.ste_heaviside(X, clip_value=c),
    "SteSign": lambda c: ste_utils.SteSign(clip_value=c),
    "SteHeaviside": lambda c: ste_utils.SteHeaviside(clip_value=c),
    "BinaryDense": lambda c: ste_utils.BinaryDense(3, clip_value=c),
    "LatentClip": lambda c: ste_utils.LatentClip(clip_value=c),
}


def raises(error, text):
    """pytest.raises matching ``text`` literally."""
    return pytest.raises(error, match=re.escape(text))


@pytest.mark.parametrize("make", CLIPPED.values(), ids=CLIPPED.keys())
def test_negative_clip_value(make):
    with raises(ValueError, "clip_value must be >= 0. Received: clip_value=-1"):
        make(-1)
    with raises(ValueError, "Received: clip_value=-0.5"):
        make(-0.5)
    with raises(ValueError, "Received: clip_value=nan"):
        make(float("nan"))


@pytest.mark.parametrize("make", CLIPPED.values(), ids=CLIPPED.keys())
def test_clip_value_of_the_wrong_type(make):
    with raises(TypeError, "clip_value must be a number >= 0 or None. Received: clip_value='a'"):
        make("a")
    with raises(TypeError, "Received: clip_value=True"):
        make(True)
    with raises(TypeError, "Received: clip_value=[1.0]"):
        make([1.0])


def test_latent_clip_needs_a_number():
    with raises(TypeError, "Received: clip_value=None"):
        ste_utils.LatentClip(None)


BITS = {
    "ste_quantize": lambda b: ste_utils.ste_quantize(X, b),
    "quantize": lambda b: ste_utils.quantize(X, b),
    "SteQuantize": lambda b: ste_utils.SteQuantize(bits=b),
}


@pytest.mark.parametrize("make", BITS.values(), ids=BITS.keys())
@pytest.mark.parametrize("bits", [0, 17, -3])
def test_bits_out_of_range(make, bits):
    with raises(ValueError, f"bits must be from 1 to 16. Received: bits={bits}"):
        make(bits)


@pytest.mark.parametrize("make", BITS.values(), ids=BITS.keys())
@pytest.mark.parametrize("bits", [2.5, 2.0, "2", True, None])
def test_bits_not_an_integer(make, bits):
    with raises(TypeError, f"bits must be an integer from 1 to 16. Received: bits={bits!r}"):
        make(bits)


def test_bits_beyond_float16():
    with raises(ValueError, "Received: bits=12, x.dtype=float16"):
        ste_utils.ste_quantize(tf.constant([0.5], tf.float16), 12)


FLOAT_ONLY = {
    "ste_sign": ste_utils.ste_sign,
    "ste_heaviside": ste_utils.ste_heaviside,
    "ste_round": ste_utils.ste_round,
    "ste_quantize": lambda x: ste_utils.ste_quantize(x, 2),
    "binarize": ste_utils.binarize,
    "heaviside": ste_utils.heaviside,
    "quantize": lambda x: ste_utils.quantize(x, 2),
    "ste(identity)": ste_utils.ste(tf.round),
    "ste(relu, stop_gradient)": ste_utils.ste(tf.round, "relu", "stop_gradient"),
    "straight_through": lambda x: ste_utils.straight_through(x, x),
}


@pytest.mark.parametrize("fn", FLOAT_ONLY.values(), ids=FLOAT_ONLY.keys())
@pytest.mark.parametrize("x,dtype", [(tf.constant([1, -2]), "int32"), (np.array([1, 0]), "int64"),
                                     (tf.constant([True]), "bool"), ("abc", "string")],
                         ids=["int32", "int64", "bool", "string"])
def test_non_float_x(fn, x, dtype):
    with raises(TypeError, f"x must have a floating-point dtype (float16, bfloat16, float32 or "
                           f"float64); gradients do not flow through integers. Received: x.dtype={dtype}"):
        fn(x)


def test_non_float_logits():
    with raises(TypeError, "Received: logits.dtype=int32"):
        ste_utils.ste_argmax(tf.constant([[1, 2]]))
    with raises(TypeError, "Received: logits.dtype=int32"):
        ste_utils.one_hot_argmax(tf.constant([[1, 2]]))


def test_not_a_tensor_at_all():
    with raises(TypeError, "x must be a floating-point tensor or array. Received: x={'a': 1}"):
        ste_utils.ste_sign({"a": 1})


def test_unknown_proxy_lists_the_known_ones():
    known = "Known proxies: 'identity', 'relu', 'clipped_relu', 'hardtanh'. Received: proxy='sigmoid'"
    with raises(ValueError, known):
        ste_utils.ste(tf.round, proxy="sigmoid")
    with raises(ValueError, known):
        ste_utils.get_proxy("sigmoid")


def test_proxy_neither_name_nor_callable():
    with raises(TypeError, "proxy must be a name or a callable. Received: proxy=3"):
        ste_utils.ste(tf.round, proxy=3)


@pytest.mark.parametrize("forward", [3, "round", None])
def test_forward_must_be_callable(forward):
    with raises(TypeError, f"forward must be callable. Received: forward={forward!r}"):
        ste_utils.ste(forward)


@pytest.mark.parametrize("idiom", ["autodiff", "stop-gradient", None])
def test_bad_idiom(idiom):
    with raises(ValueError, "idiom must be one of ('custom_gradient', 'stop_gradient'). "
                            f"Received: idiom={idiom!r}"):
        ste_utils.ste(tf.round, idiom=idiom)


def test_straight_through_result_of_another_dtype():
    with raises(TypeError, "result must have the dtype of x. Received: x.dtype=float32, "
                           "result.dtype=float64"):
        ste_utils.straight_through(tf.constant([0.5]), tf.constant([1.0], tf.float64))


def test_straight_through_result_of_another_shape():
    with raises(ValueError, "result must have the shape of x. Received: x.shape=(3,), "
                            "result.shape=(2,)"):
        ste_utils.straight_through(tf.constant([0.5, 1.0, 2.0]), tf.constant([1.0, 2.0]))
    with raises(ValueError, "Received: x.shape=(2, 3), result.shape=(3, 2)"):
        ste_utils.straight_through(tf.zeros([2, 3]), tf.zeros([3, 2]))


def test_straight_through_integer_result():
    with raises(TypeError, "Received: result.dtype=int32"):
        ste_utils.straight_through(tf.constant([0.5]), tf.constant([1]))


@pytest.mark.parametrize("fn", [ste_utils.ste_argmax, ste_utils.one_hot_argmax],
                         ids=["ste_argmax", "one_hot_argmax"])
def test_bad_axis(fn):
    logits = tf.zeros([2, 3])
    for axis in (2, -3, 5):
        with raises(ValueError, f"axis must be in [-2, 2) for a tensor of rank 2. Received: axis={axis}"):
            fn(logits, axis=axis)
    for axis in (1.5, "1", None, True):
        with raises(TypeError, f"axis must be an integer. Received: axis={axis!r}"):
            fn(logits, axis=axis)
    with raises(ValueError, "axis must be in [-0, 0) for a tensor of rank 0. Received: axis=-1"):
        fn(tf.constant(1.0))


def test_ste_activation_arguments():
    with raises(TypeError, "proxy must be the name of a proxy (callables do not serialize)"):
        ste_utils.SteActivation(bits=2, proxy=tf.nn.relu)
    with raises(ValueError, "Received: proxy='sigmoid'"):
        ste_utils.SteActivation(bits=2, proxy="sigmoid")
    with raises(ValueError, "Received: bits=0"):
        ste_utils.SteActivation(bits=0)
