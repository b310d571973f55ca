"""Specs for assignment 06 (proxy functions and a trained quantized model).

``proxies/derivative``
    ``proxy_derivative(name, x)``: the derivative of the named proxy used in the backward pass,
    with ``ste_utils.PROXIES``' convention at every kink (relu' = 1{x > 0},
    clipped_relu' = 1{0 < x <= 1}, hardtanh' = 1{|x| <= 1}, identity' = 1), in x's dtype.
``digits_model/accuracy``
    A trained 2-bit network classifies held-out digits. The student's code returns plain data,
    ``{"bits": 2, "proxy": name, "weights": model.get_weights()}`` for
    Dense(H) -> BatchNormalization -> 2-bit activation -> Dense(10); nothing of the student's
    runs on the digits. The grader checks the configuration (2 bits, a known proxy, the shapes)
    and runs the model itself, in inference mode as Keras runs it rebuilt from
    ``ste_utils.SteActivation`` and Keras layers (in NumPy, float32:
    :func:`ste_course.references.proxies.digits_logits`), on the test split of
    ``ste_utils.data.load_digits`` (which ``training_digits``, the data the
    assignment trains on, leaves out); for hidden cases each image gets a contrast and pixel
    noise drawn per student from the instructor's secret. Images and labels are both hidden
    inputs: neither reaches the sandbox.

The 2-bit activation with a chosen proxy (``quantized_relu/value`` and ``/gradient``) is an
elementwise spec, registered in :mod:`ste_course.specs.elementwise`.
"""

from __future__ import annotations

import numpy as np

from ste_course.specs.base import NumpyReference, Spec, register
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


def _describe_derivative(case):
    x = np.asarray(case["x"])
    return f"proxy {case['proxy']!r} with x of dtype {x.dtype.name} and shape {x.shape}"


def _explain_derivative(case, output, index, expected, got):
    x = float(np.asarray(case["x"]).ravel()[index])
    return (f"The derivative of the {case['proxy']} proxy at x = {x:.6g} "
            f"({np.asarray(case['x']).dtype.name}) should be {expected:.6g} because "
            f"{proxy_why(case['proxy'], x)}; yours is {got:.6g}.")


register(Spec(name="proxies/derivative", summary="proxy derivatives from your proxy_derivative",
              cases=_derivative_cases, run=_run_derivative, reference=NumpyReference("proxies", "derivative"),
              describe=_describe_derivative, explain=_explain_derivative))


# ----------------------------------------------------------------------------- trained model
REQUIRED_ACCURACY = 0.90
BITS = 2  # the assignment's activation: quantize(x, 2), four levels
MAX_HIDDEN = 512
ARCHITECTURE = "Dense(H) -> BatchNormalization() -> 2-bit activation -> Dense(10)"
WEIGHT_NAMES = ("Dense kernel (64, H)", "Dense bias (H,)", "BatchNormalization gamma (H,)",
                "BatchNormalization beta (H,)", "BatchNormalization moving mean (H,)",
                "BatchNormalization moving variance (H,)", "Dense kernel (H, 10)", "Dense bias (10,)")
PROXY_NAMES = tuple(PROXY_RULES)
# Hidden cases: every held-out digit with its own contrast and pixel noise, drawn per student.
CONTRAST = (0.8, 1.0)
NOISE_SIGMA = 0.05


def _model_cases(rng, hidden):
    """The held-out digits (the test split of ``load_digits``, which ``training_digits`` leaves
    out); hidden: each image scaled by a contrast drawn from ``CONTRAST``, plus Gaussian noise,
    clipped to [0, 1]. Images and labels are both hidden inputs: neither reaches the sandbox."""
    from ste_course.references.proxies import digits_test_split

    images, labels = digits_test_split()
    if hidden:
        contrast = rng.uniform(*CONTRAST, size=(len(images), 1))
        images = np.clip(images * contrast + rng.normal(0.0, NOISE_SIGMA, images.shape), 0.0, 1.0)
    return [{"images": np.asarray(images, np.float32), "labels": np.asarray(labels, np.int64)}]


def _export_error(obj) -> TypeError:
    return TypeError(
        "train_quantized_model(data) must return plain data: {\"bits\": 2, \"proxy\": <name>, "
        "\"weights\": model.get_weights()} for " + ARCHITECTURE + f"; it returned {type(obj).__name__}")


def _run_model(exported, case):
    """The exported configuration and weights as arrays (the model itself runs in the grader)."""
    if not isinstance(exported, dict) or set(exported) != {"bits", "proxy", "weights"}:
        raise _export_error(exported)
    bits, proxy, weights = exported["bits"], exported["proxy"], exported["weights"]
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"\"bits\" must be an integer; it is {type(bits).__name__}")
    if not isinstance(proxy, str) or proxy not in PROXY_NAMES:
        raise ValueError(f"\"proxy\" must be one of {', '.join(map(repr, PROXY_NAMES))}; "
                         f"it is {str(proxy)[:40]!r}")
    if not isinstance(weights, (list, tuple)) or len(weights) != len(WEIGHT_NAMES):
        raise ValueError(f"\"weights\" must be the {len(WEIGHT_NAMES)} arrays of model.get_weights() for "
                         f"{ARCHITECTURE}; it has {len(weights) if isinstance(weights, (list, tuple)) else 'no'} entries")
    out = {"bits": np.array(int(bits), np.int64), "proxy": np.array(PROXY_NAMES.index(proxy), np.int64)}
    for k, (w, name) in enumerate(zip(weights, WEIGHT_NAMES)):
        out[f"weight_{k}"] = to_array(w, f"weights[{k}] (the {name})")
    return out


def _check_export(got) -> tuple:
    """``(bits, proxy, weights)`` from the evidence, or a message saying what does not fit."""
    bits, proxy = got["bits"][0], got["proxy"][0]
    if bits.shape != () or float(bits) != BITS:
        said = f"bits = {float(bits):g}" if bits.shape == () else f"bits of shape {bits.shape}"
        return None, (f"The model must be quantized as asked: its activation is {BITS}-bit "
                      f"(quantize(x, {BITS})); your export says {said}.")
    if proxy.shape != () or float(proxy) not in range(len(PROXY_NAMES)):
        return None, f"The export's proxy must be one of {', '.join(PROXY_NAMES)}."
    weights = [got[f"weight_{k}"][0] for k in range(len(WEIGHT_NAMES))]
    hidden = weights[1].shape[0] if weights[1].ndim == 1 else -1
    shapes = [(64, hidden), (hidden,), (hidden,), (hidden,), (hidden,), (hidden,), (hidden, 10), (10,)]
    if not 1 <= hidden <= MAX_HIDDEN:
        return None, f"The hidden layer must have between 1 and {MAX_HIDDEN} units ({ARCHITECTURE})."
    for w, shape, name in zip(weights, shapes, WEIGHT_NAMES):
        if w.shape != shape:
            return None, (f"The {name.split(' (')[0]} must have shape {shape} for {ARCHITECTURE} with "
                          f"H = {hidden}; yours has {w.shape}.")
        if not np.all(np.isfinite(w)):
            return None, f"The {name.split(' (')[0]} holds values that are not finite."
    if np.any(weights[5] < 0):
        return None, "The BatchNormalization moving variance must not be negative."
    return (int(bits), PROXY_NAMES[int(proxy)], weights), None


def _compare_model(case, expected, got):
    labels = np.asarray(case["labels"])
    config, problem = _check_export(got)
    if problem:
        return [problem]
    from ste_course.references.proxies import digits_accuracy

    bits, _, weights = config
    accuracy = digits_accuracy(bits, weights, case["images"], labels)
    if accuracy >= REQUIRED_ACCURACY:
        return []
    return [f"Your model, rebuilt from its export and run by the grader, classified {100 * accuracy:.1f} % "
            f"of {labels.size} held-out digits correctly; at least {100 * REQUIRED_ACCURACY:.0f} % is needed."]


register(Spec(name="digits_model/accuracy",
              summary=f"accuracy of your exported model on held-out digits (at least {100 * REQUIRED_ACCURACY:.0f} %)",
              cases=_model_cases, run=_run_model, reference=NumpyReference("proxies", "export_keys"),
              describe=lambda case: f"{len(case['images'])} held-out digit images",
              check_dtype=False, compare=_compare_model, hidden_inputs=("images", "labels")))
