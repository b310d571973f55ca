"""Specs for assignment 06 (proxy functions and a trained quantized model).

``proxies/derivative``
    ``proxy_derivative(name, x)``: the derivative of the named proxy used in the backward pass,
    with ``ste_utils.PROXIES``' convention at every kink (relu' = 1{x > 0},
    clipped_relu' = 1{0 < x <= 1}, hardtanh' = 1{|x| <= 1}, identity' = 1), in x's dtype.
``digits_model/accuracy``
    A trained model (a Keras model, or a function of a batch of images returning logits or
    labels) classifies held-out digits (the test split of ``ste_utils.data.load_digits``; for
    hidden cases with a little per-student noise). The labels are a hidden input: they never
    reach the student's code; the accuracy is computed by the grader.

The 2-bit activation with a chosen proxy (``quantized_relu/value`` and ``/gradient``) is an
elementwise spec, registered in :mod:`ste_course.specs.elementwise`.
"""

from __future__ import annotations

import functools

import numpy as np

from ste_course.specs.base import Spec, register
from ste_course.specs.common import to_array
from ste_course.specs.elementwise import (HIDDEN_DTYPES, HIDDEN_SHAPES, PROXY_RULES, _fill,
                                          normal_neighbours, proxy_why)

# ----------------------------------------------------------------------------- proxy derivatives
_KINKS = [-1.0, 0.0, 1.0]
_VISIBLE_X = [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]


def _derivative_cases(rng, hidden):
    names = list(PROXY_RULES)
    if not hidden:
        return [{"x": np.array(_VISIBLE_X, np.float32), "proxy": name} for name in names]
    out = []
    for name in names:
        for dtype in HIDDEN_DTYPES:
            shape = HIDDEN_SHAPES[int(rng.integers(len(HIDDEN_SHAPES)))]
            kinks = np.array(_KINKS, dtype=dtype)
            near = normal_neighbours(kinks)
            base = np.concatenate([kinks, near]).astype(np.float64)
            out.append({"x": _fill(rng, base, shape, 1.5).astype(dtype), "proxy": name})
    return out


def _run_derivative(fn, case):
    import tensorflow as tf

    return {"derivative": to_array(fn(case["proxy"], tf.constant(case["x"])),
                                   f"proxy_derivative({case['proxy']!r}, x)")}


def _ref_derivative(case):
    import tensorflow as tf

    import ste_utils

    return {"derivative": ste_utils.PROXIES[case["proxy"]].derivative(tf.constant(case["x"]))}


def _describe_derivative(case):
    x = np.asarray(case["x"])
    return f"proxy {case['proxy']!r} with x of dtype {x.dtype.name} and shape {x.shape}"


def _explain_derivative(case, output, index, expected, got):
    x = float(np.asarray(case["x"]).ravel()[index])
    return (f"The derivative of the {case['proxy']} proxy at x = {x:.6g} "
            f"({np.asarray(case['x']).dtype.name}) should be {expected:.6g} because "
            f"{proxy_why(case['proxy'], x)}; yours is {got:.6g}.")


register(Spec(name="proxies/derivative", summary="proxy derivatives from your proxy_derivative",
              cases=_derivative_cases, run=_run_derivative, reference=_ref_derivative,
              describe=_describe_derivative, explain=_explain_derivative))


# ----------------------------------------------------------------------------- trained model
REQUIRED_ACCURACY = 0.90
NOISE_SIGMA = 0.02


@functools.lru_cache(maxsize=1)
def _test_split():
    from ste_utils.data import load_digits

    data = load_digits()
    return data.x_test, data.y_test


def _model_cases(rng, hidden):
    images, labels = _test_split()
    if hidden:
        images = np.clip(images + rng.normal(0.0, NOISE_SIGMA, images.shape), 0.0, 1.0)
    return [{"images": np.asarray(images, np.float32), "labels": np.asarray(labels, np.int64)}]


def predicted_labels(model, images: np.ndarray) -> np.ndarray:
    """Labels from a Keras model (``predict``) or a function of the images (logits or labels)."""
    if hasattr(model, "predict") and callable(model.predict):
        out = model.predict(images, verbose=0)
    elif callable(model):
        out = model(images)
    else:
        raise TypeError(f"expected a Keras model or a function of a batch of images; got {type(model).__name__}")
    out = to_array(out, "the model's output")
    n = len(images)
    if out.ndim == 2 and out.shape[0] == n and out.shape[1] == 10:
        return np.argmax(out, axis=-1).astype(np.int64)
    if out.shape == (n,) and out.dtype.kind in "iu":
        return out.astype(np.int64)
    raise ValueError(f"for {n} images the model must give logits of shape ({n}, 10) or integer "
                     f"labels of shape ({n},); it gave shape {out.shape} ({out.dtype.name})")


def _run_model(model, case):
    return {"labels": predicted_labels(model, np.array(case["images"], copy=True))}


def _compare_model(case, expected, got):
    labels = np.asarray(expected["labels"])
    values = got["labels"][0]
    if values.shape != labels.shape:
        return [f"The model gave {values.size} labels for {labels.size} images."]
    accuracy = float(np.mean(values == labels))
    if accuracy >= REQUIRED_ACCURACY:
        return []
    return [f"Your model classified {100 * accuracy:.1f} % of {labels.size} held-out digits "
            f"correctly; at least {100 * REQUIRED_ACCURACY:.0f} % is needed."]


register(Spec(name="digits_model/accuracy",
              summary=f"accuracy of your model on held-out digits (at least {100 * REQUIRED_ACCURACY:.0f} %)",
              cases=_model_cases, run=_run_model, reference=lambda case: {"labels": case["labels"]},
              describe=lambda case: f"{len(case['images'])} held-out digit images",
              check_dtype=False, compare=_compare_model, hidden_inputs=("labels",)))
