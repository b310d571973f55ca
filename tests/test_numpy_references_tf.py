"""NumPy references against TensorFlow itself, where ``test_numpy_references``' tolerance (or its
grading) would hide a difference: the digits the judge loads without scikit-learn's import, the
digits model's inference pass beside the Keras model it stands for, and 01's dense gradients bit
for bit beside the tape's."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import ste_utils.data
from ste_course.references import backprop, proxies
from ste_course.specs.base import draw_cases, get_spec
from numpy_oracles.proxies import rebuild_model, trained_export


def test_the_judges_digits_are_load_digits_test_split():
    images, labels = proxies.digits_test_split()
    data = ste_utils.data.load_digits()
    assert images.dtype == np.float32 and labels.dtype == np.int64
    assert np.array_equal(images, data.x_test) and np.array_equal(labels, data.y_test)


def test_the_numpy_digits_model_predicts_as_keras():
    export = trained_export()
    model = rebuild_model(2, export["proxy"], export["weights"])
    spec = get_spec("digits_model/accuracy")
    for hidden, seed in [(False, 0), (True, 1), (True, 2), (True, 3)]:
        (case,) = draw_cases(spec, hidden, seed)
        expected = np.asarray(model(case["images"], training=False))
        got = proxies.digits_logits(2, export["weights"], case["images"])
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        assert np.array_equal(got.argmax(-1), expected.argmax(-1)), seed
        pre = np.asarray(model.layers[1](model.layers[0](case["images"]), training=False))
        assert np.array_equal(proxies.quantize(pre, 2), np.asarray(model.layers[2](pre)))


def test_dense_backward_is_the_tapes_bit_for_bit():
    spec = get_spec("backprop/dense_backward")
    for seed in range(5):
        for case in draw_cases(spec, True, seed):
            x, W, b = (tf.Variable(case[k]) for k in ("x", "W", "b"))
            with tf.GradientTape() as tape:
                out = x @ W + b
            grads = tape.gradient(out, [x, W, b], output_gradients=tf.constant(case["upstream"]))
            ours = backprop.dense_backward(case)
            for key, g in zip(("dL/dx", "dL/dW", "dL/db"), grads):
                assert np.array_equal(ours[key], g.numpy()), (seed, key)
