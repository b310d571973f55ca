"""Every check spec: a correct implementation passes (visible and hidden cases), typical wrong
ones fail with a message that says what to fix, and grading mode (cases in as plain data,
evidence out as plain data, judged outside) reaches the same verdicts."""

from __future__ import annotations

import ast
import functools
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import ste_utils
from ste_course import checks
from ste_course.authoring.source import HIDDEN_BEGIN, HIDDEN_END, load_assignments
from ste_course.checks import check, draw_cases, encode_case, get_spec, student_case
from spec_testing import assert_fails_with, grade_as_sandbox

tf.get_logger().setLevel("ERROR")
ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- helpers for the implementations
def _sign(x):
    return tf.where(x >= 0, tf.ones_like(x), -tf.ones_like(x))


def _with_gradient(forward, derivative, multiply=True):
    """An estimator with tf.custom_gradient: value forward(x), gradient upstream * derivative(x)."""
    @tf.custom_gradient
    def fn(x):
        return forward(x), lambda up: (up if multiply else 1.0) * derivative(x)
    return fn


def _window(x, c, strict=False):
    return tf.cast(tf.abs(x) < c if strict else tf.abs(x) <= c, x.dtype)


def _quantize_with(x, bits, rounding=tf.round):
    n = 2 ** bits - 1
    clipped = tf.clip_by_value(x, tf.zeros_like(x), tf.ones_like(x))
    return clipped + tf.stop_gradient(rounding(clipped * n) / n - clipped)


def _numpy_network(x, y, W1, b1, W2, b2):
    """The backward pass by hand, NumPy only (the assignment's answer): (gradients, dL/dh)."""
    h = np.tanh(x @ W1 + b1)
    d_out = 2.0 * (h @ W2 + b2 - y) / y.size
    d_h = d_out @ W2.T
    d_z1 = d_h * (1.0 - h**2)
    return {"W1": x.T @ d_z1, "b1": d_z1.sum(0), "W2": h.T @ d_out, "b2": d_out.sum(0)}, d_h


def _tape_network(x, y, W1, b1, W2, b2):
    """The same with tf.GradientTape: what the by-hand parts must refuse."""
    params = [tf.Variable(v) for v in (W1, b1, W2, b2)]
    with tf.GradientTape(persistent=True) as tape:
        h = tf.tanh(x @ params[0] + params[1])
        loss = tf.reduce_mean(tf.square(h @ params[2] + params[3] - y))
    grads = dict(zip(("W1", "b1", "W2", "b2"), (g.numpy() for g in tape.gradient(loss, params))))
    return grads, tape.gradient(loss, h).numpy()


def _dense(x, W, b, upstream, transpose_w=False):
    dW = x.T @ upstream
    return {"x": upstream @ W.T, "W": dW.T if transpose_w else dW, "b": upstream.sum(axis=0)}


def _mlp_forward(x, weights, activations, use_activations=True):
    h = x
    for i, (W, b) in enumerate(weights):
        h = h @ W + b
        if use_activations and i < len(activations):
            h = activations[i](h)
    return h


def _mlp_grads(x, y, weights, activations):
    params = [p for pair in weights for p in pair]
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = tf.reduce_mean(tf.square(_mlp_forward(x, weights, activations) - y))
    return params, tape.gradient(loss, params)


def _sgd(x, y, weights, activations, rate, none_as_one=False):
    params, grads = _mlp_grads(x, y, weights, activations)
    new = []
    for p, g in zip(params, grads):
        if g is None:  # no gradient: the parameter stays (or, wrongly, moves as if it were 1)
            g = tf.ones_like(p) if none_as_one else tf.zeros_like(p)
        new.append(p - rate * g)
    return [(new[2 * i], new[2 * i + 1]) for i in range(len(weights))]


def _tf_gradient(fn, x, none_to_zeros=True):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    grad = tape.gradient(y, x)
    return tf.zeros_like(x) if grad is None and none_to_zeros else grad


def _st_jacobian(x, r):
    x, r = tf.reshape(x, [-1]), tf.reshape(r, [-1])
    n = int(tf.size(x))
    return tf.concat([tf.eye(n, dtype=x.dtype), tf.zeros((n, n), x.dtype)], axis=1)


@functools.lru_cache(maxsize=1)
def _nearest_neighbour():
    """A lookup "model": the label of the nearest of every digit scikit-learn ships."""
    data = ste_utils.data.load_digits()

    def predict(images):
        images = np.asarray(images, np.float64)
        # |a - b|^2 without the |a|^2 term, which does not change the argmin
        distances = (data.x_train.astype(np.float64) ** 2).sum(1)[None, :] - 2.0 * images @ data.x_train.T
        return data.y_train[np.argmin(distances, axis=1)]

    return predict


@functools.lru_cache(maxsize=1)
def _trained_export():
    """Assignment 06's Part 4 answer, small: Dense(64) -> BN -> 2-bit relu-proxy STE -> Dense(10)
    trained on training_digits() for 6 epochs, exported as plain data."""
    import keras

    from ste_utils.training import set_seed, train

    set_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64), keras.layers.BatchNormalization(),
                              keras.layers.Lambda(lambda z: _quantized_relu(z, "relu")), keras.layers.Dense(10)])
    train(model, ste_utils.data.training_digits(), epochs=6, learning_rate=1e-2)
    return {"bits": 2, "proxy": "relu", "weights": model.get_weights()}


def _export_with(**changes):
    export = _trained_export()
    return {**export, **changes}


def _quantized_relu(x, proxy="clipped_relu"):
    return ste_utils.ste(functools.partial(ste_utils.quantize, bits=2), proxy=proxy)(x)


# ----------------------------------------------------------------------------- correct implementations
def _good_ste_sign(x, clip_value=1.0):
    return ste_utils.ste_sign(x, clip_value=clip_value)


GOOD = {
    "ste_sign/value": _good_ste_sign,
    "ste_sign/gradient": _good_ste_sign,
    "ste_sign_stop_gradient/value": _good_ste_sign,
    "ste_sign_stop_gradient/gradient": _good_ste_sign,
    "ste_sign_custom_gradient/value": _good_ste_sign,
    "ste_sign_custom_gradient/gradient": _good_ste_sign,
    "quantize_ste/value": ste_utils.ste_quantize,
    "quantize_ste/gradient": ste_utils.ste_quantize,
    "quantized_relu/value": _quantized_relu,
    "quantized_relu/gradient": _quantized_relu,
    "proxies/derivative": lambda name, x: ste_utils.PROXIES[name].derivative(x),
    "stop_gradient/straight_through": ste_utils.straight_through,
    "backprop/dense_backward": _dense,
    "backprop/hidden_upstream": lambda *args: _numpy_network(*args)[1],
    "backprop/backward": lambda *args: _numpy_network(*args)[0],
    "zero_gradient/tf_gradient": _tf_gradient,
    "zero_gradient/forward": _mlp_forward,
    "zero_gradient/receives_gradient": lambda x, y, w, a: np.array(
        [g is not None and bool(np.any(g.numpy() != 0)) for g in _mlp_grads(x, y, w, a)[1]]).reshape(len(w), 2),
    "zero_gradient/sgd_step": _sgd,
    # Written out: ste_utils.jacobian traces a tf.function per call, which made these tests slow;
    # test_reference_jacobians_pass checks the ste_utils versions on the visible cases.
    "jacobian/straight_through": _st_jacobian,
    "jacobian/ste_sign": lambda x, clip_value=1.0: tf.linalg.diag(_window(tf.reshape(x, [-1]), clip_value)),
    "jacobian/chain_rule": lambda x, r, upstream: (upstream, tf.zeros_like(r)),
    "jacobian/gradient_reaching_result": 0.0,
    "jacobian/gradient_reaching_x": 2,
    "digits_model/accuracy": _trained_export(),
}

# ----------------------------------------------------------------------------- wrong implementations
_plain_sign = lambda x, clip_value=1.0: _sign(x)  # noqa: E731
_tf_sign_st = lambda x, clip_value=1.0: x + tf.stop_gradient(tf.sign(x) - x)  # noqa: E731
_no_clip = lambda x, clip_value=1.0: _with_gradient(_sign, tf.ones_like)(x)  # noqa: E731
_strict = lambda x, clip_value=1.0: _with_gradient(_sign, lambda t: _window(t, clip_value, strict=True))(x)  # noqa: E731
_no_upstream = lambda x, clip_value=1.0: _with_gradient(  # noqa: E731
    _sign, lambda t: _window(t, clip_value), multiply=False)(x)
_float32 = lambda x, clip_value=1.0: ste_utils.ste_sign(tf.cast(x, tf.float32), clip_value)  # noqa: E731
_ignores_clip = lambda x, clip_value=1.0: ste_utils.ste_sign(x)  # noqa: E731
# tf.cast(clip_value, x.dtype) goes through float32: a float64 x = 0.7 falls outside clip_value=0.7
_cast_clip = lambda x, clip_value=1.0: _with_gradient(  # noqa: E731
    _sign, lambda t: tf.cast(tf.abs(t) <= tf.cast(clip_value, t.dtype), t.dtype))(x)


def _relu_kink_wrong(name, x):
    return tf.cast(x >= 0, x.dtype) if name == "relu" else ste_utils.PROXIES[name].derivative(x)


def _tape_clip_derivative(name, x):
    """The tape's gradient of clip(x, 0, 1) is 1 at x = 0: not the clipped_relu convention."""
    if name == "clipped_relu":
        return _tf_gradient(lambda t: tf.clip_by_value(t, 0.0, 1.0), x)
    return ste_utils.PROXIES[name].derivative(x)


def _forgets_tanh_derivative(x, y, W1, b1, W2, b2):
    h = np.tanh(x @ W1 + b1)
    d_out = 2 * (h @ W2 + b2 - y) / y.size
    d_z1 = d_out @ W2.T
    return {"W1": x.T @ d_z1, "b1": d_z1.sum(0), "W2": h.T @ d_out, "b2": d_out.sum(0)}


def _mean_without_two(x, y, W1, b1, W2, b2):
    return {k: v / 2 for k, v in _numpy_network(x, y, W1, b1, W2, b2)[0].items()}


WRONG = {  # spec -> [(implementation, a phrase its message must contain)]
    "ste_sign/value": [(_tf_sign_st, "unlike tf.sign")],
    "ste_sign/gradient": [(_no_clip, "outside the clip window")],
    "ste_sign_stop_gradient/value": [(_tf_sign_st, "0 included, unlike tf.sign"),
                                     (_float32, "should have dtype float16")],
    "ste_sign_stop_gradient/gradient": [(_plain_sign, "inside the clip window"),
                                        (_no_clip, "outside the clip window"),
                                        (_cast_clip, "lies inside the clip window")],
    "ste_sign_custom_gradient/value": [(_float32, "should have dtype float16")],
    "ste_sign_custom_gradient/gradient": [(_strict, "(boundary included)"),
                                          (_no_upstream, "with upstream gradient"),
                                          (_ignores_clip, "clip window |x| <= 0.5"),
                                          (_cast_clip, "lies inside the clip window")],
    "quantize_ste/value": [(lambda x, bits: _quantize_with(x, bits, lambda t: tf.floor(t + 0.5)),
                            "a tie: tf.round rounds half to even"),
                           (lambda x, bits: x + tf.stop_gradient(tf.round(x * (2**bits - 1)) / (2**bits - 1) - x),
                            "is clipped to"),
                           (lambda x, bits: tf.cast(_quantize_with(tf.cast(x, tf.float32), bits), x.dtype),
                            "Only the last digits differ")],
    "quantize_ste/gradient": [(lambda x, bits: x + tf.stop_gradient(ste_utils.quantize(x, bits) - x),
                               "outside [0, 1]"),
                              (lambda x, bits: tf.stop_gradient(ste_utils.quantize(x, bits)),
                               "both edges included")],
    "quantized_relu/value": [(lambda x, proxy="relu": ste_utils.quantize(x, 3), "rounds to")],
    "quantized_relu/gradient": [(lambda x, proxy="relu": _quantized_relu(x, "identity"), "proxy's derivative is"),
                                (lambda x, proxy="relu": ste_utils.quantize(x, 2), "which is 1 here")],
    "proxies/derivative": [(_relu_kink_wrong, "0 at the kink x = 0"),
                           (_tape_clip_derivative, "0 at x = 0, 1 at x = 1")],
    "stop_gradient/straight_through": [(lambda x, r: tf.stop_gradient(x + (r - x)), "passes to x unchanged"),
                                       (lambda x, r: r + tf.stop_gradient(x - r), "only appears inside stop_gradient")],
    "backprop/dense_backward": [(functools.partial(_dense, transpose_w=True), "transpose"),
                                (lambda x, W, b, u: {**_dense(x, W, b, u), "b": u.mean(0)}, "summed over the batch")],
    "backprop/hidden_upstream": [(lambda *a: _numpy_network(*a)[1] * 2, "2 times the right one")],
    "backprop/backward": [(_mean_without_two, "0.5 times the right one"),
                          (_forgets_tanh_derivative, "(1 - h**2)"),
                          (lambda *a: {"W1": 0}, "without 'b1'")],
    "zero_gradient/tf_gradient": [(functools.partial(_tf_gradient, none_to_zeros=False), "returned None"),
                                  (lambda fn, x: np.zeros(x.shape), "should have dtype"),
                                  (lambda fn, x: tf.zeros_like(x), "product rule")],
    "zero_gradient/forward": [(functools.partial(_mlp_forward, use_activations=False), "the activation after")],
    "zero_gradient/receives_gradient": [(lambda x, y, w, a: np.ones((len(w), 2), bool), "receives no gradient"),
                                        (lambda x, y, w, a: np.zeros((len(w), 2), bool), "does receive"),
                                        (lambda x, y, w, a: np.ones((len(w), 2)), "must return booleans")],
    "zero_gradient/sgd_step": [(functools.partial(_sgd, none_as_one=True), "should stay"),
                               (lambda x, y, w, a, rate: w, "yours left it unchanged")],
    "jacobian/straight_through": [(lambda x, r: tf.concat([_st_jacobian(x, r)[:, :tf.size(x)]] * 2, 1),
                                   "only appears inside stop_gradient"),
                                  (lambda x, r: _st_jacobian(x, r)[:, :tf.size(x)], "both blocks"),
                                  (lambda x, r: np.asarray(_st_jacobian(x, r), np.float64), "should have dtype")],
    "jacobian/ste_sign": [(lambda x, clip_value=1.0: tf.linalg.diag(_window(tf.reshape(x, [-1]), clip_value, True)),
                           "(boundary included)"),
                          (lambda x, clip_value=1.0: tf.linalg.diag(_window(x, clip_value)), "flatten x")],
    "jacobian/chain_rule": [(lambda x, r, upstream: (upstream, upstream), "no gradient reaches r"),
                            (lambda x, r, upstream: (tf.ones_like(x), tf.zeros_like(r)), "dL/dx = upstream")],
    "jacobian/gradient_reaching_result": [(1.0, "is not right"), ("0", "must be one number")],
    "jacobian/gradient_reaching_x": [(1.4, "not x"), (True, "must be one number")],
    "digits_model/accuracy": [
        (_export_with(weights=[np.zeros_like(w) for w in _trained_export()["weights"]]), "at least 90 % is needed"),
        (_export_with(bits=3), "quantized as asked"),
        (_export_with(weights=_trained_export()["weights"][:6]), "it has 6 entries"),
        (_export_with(weights=[w.T for w in _trained_export()["weights"]]), "must have shape"),
        (_export_with(proxy="sign"), "must be one of"),
        (lambda images: _nearest_neighbour()(images), "must return plain data")],
}


def test_every_spec_has_implementations():
    import ste_course.specs  # noqa: F401

    elsewhere = ("ste_course.specs.qat", "ste_course.specs.discrete",  # tests/test_specs_qat_discrete.py
                 "ste_course.specs.deploy")  # tests/test_specs_deploy.py
    assert set(GOOD) == {n for n, s in checks.SPECS.items() if s.run.__module__ not in elsewhere} == set(WRONG)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("name", sorted(GOOD))
def test_correct_implementation_passes(name, hidden, capsys):
    check(GOOD[name], name, hidden=hidden)
    assert capsys.readouterr().out.startswith("OK: ")


def test_reference_jacobians_pass(capsys):
    check(lambda x, r: ste_utils.straight_through_jacobian(x, r), "jacobian/straight_through")
    check(lambda x, clip_value=1.0: ste_utils.jacobian(lambda t: ste_utils.ste_sign(t, clip_value=clip_value),
                                                       tf.reshape(x, [-1]))[0], "jacobian/ste_sign")
    assert capsys.readouterr().out.count("OK: ") == 2


@pytest.mark.parametrize("name,k", [(n, k) for n in sorted(WRONG) for k in range(len(WRONG[n]))])
def test_wrong_implementation_fails_with_what_to_fix(name, k):
    assert_fails_with(name, *WRONG[name][k])


# ----------------------------------------------------------------------------- grading mode
_grade = grade_as_sandbox


@pytest.mark.parametrize("name", sorted(GOOD))
def test_grading_round_trip(name):
    assert _grade(name, GOOD[name]) == []
    wrong, phrase = WRONG[name][0]
    messages = _grade(name, wrong)
    assert any(phrase in m for m in messages), messages


def test_neither_images_nor_labels_reach_the_students_code():
    spec = get_spec("digits_model/accuracy")
    for hidden in (False, True):
        (case,) = draw_cases(spec, hidden, 7)
        assert len(case["images"]) == len(case["labels"]) == 450
        assert encode_case(student_case(spec, case)) == {}


def test_the_training_data_of_06_leaves_the_test_split_out():
    full, given = ste_utils.data.load_digits(), ste_utils.data.training_digits()
    rows = lambda *arrays: sorted(r.tobytes() for a in arrays for r in a)  # noqa: E731
    assert rows(given.x_train, given.x_test) == rows(full.x_train)
    assert not set(rows(given.x_train, given.x_test)) & set(rows(full.x_test))
    assert len(given.x_test) == 270 and np.array_equal(np.bincount(given.y_test) >= 26, np.ones(10, bool))
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        ste_utils.data.training_digits(validation_fraction=1.0)


def test_a_lookup_model_scores_zero():
    # Before the export, a nearest-neighbour lookup over the digits scikit-learn ships scored
    # full marks; now the grader runs only a network it rebuilt from ste_utils layers.
    messages = _grade("digits_model/accuracy", lambda images: _nearest_neighbour()(images))
    assert len(messages) == 1 and "must return plain data" in messages[0], messages


def test_the_grader_runs_a_2_bit_network_it_rebuilt():
    from numpy_oracles.proxies import rebuild_model

    export = _trained_export()
    model = rebuild_model(2, "relu", export["weights"])
    (case,) = draw_cases(get_spec("digits_model/accuracy"), True, 3)
    pre_activation = model.layers[1](model.layers[0](case["images"]), training=False)
    levels = np.unique(model.layers[2](pre_activation).numpy())
    assert set(levels.tolist()) <= {0.0, np.float32(1 / 3), np.float32(2 / 3), 1.0} and len(levels) == 4
    # the student's own activation is replaced by ste_utils': the rebuilt network is what scores
    assert isinstance(model.layers[2], ste_utils.SteActivation) and model.layers[2].bits == 2


def test_hidden_digits_are_noisy_and_differ_per_seed():
    spec = get_spec("digits_model/accuracy")
    (visible,) = draw_cases(spec, False, 0)
    (a,), (b,) = draw_cases(spec, True, 1), draw_cases(spec, True, 2)
    assert 0.02 < np.abs(a["images"] - visible["images"]).mean() < 0.1
    assert not np.array_equal(a["images"], b["images"])
    assert np.all((a["images"] >= 0) & (a["images"] <= 1))


# ----------------------------------------------------------------------------- 01 is by hand: autodiff scores 0
def _tape_dense(x, W, b, upstream):
    xv, Wv, bv = (tf.Variable(v) for v in (x, W, b))
    with tf.GradientTape() as tape:
        out = xv @ Wv + bv
    g = tape.gradient(out, [xv, Wv, bv], output_gradients=tf.constant(upstream))
    return {"x": g[0].numpy(), "W": g[1].numpy(), "b": g[2].numpy()}


@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float64)] * 2 + [tf.TensorSpec([None], tf.float64)]
             + [tf.TensorSpec([None, None], tf.float64)])
def _traced_dense(x, W, b, upstream):  # traced below, before any check: the graph holds the gradients
    with tf.GradientTape() as tape:
        tape.watch([x, W, b])
        out = x @ W + b
    return tape.gradient(out, [x, W, b], output_gradients=upstream)


_traced_dense(*(np.ones(s) for s in ((2, 3), (3, 4), (4,), (2, 4))))


def _session_dense():
    graph = tf.Graph()
    with graph.as_default():
        ins = [tf.compat.v1.placeholder(tf.float64, s) for s in ([None, None], [None, None], [None], [None, None])]
        grads = tf.gradients(ins[0] @ ins[1] + ins[2], ins[:3], grad_ys=ins[3])
    session = tf.compat.v1.Session(graph=graph)
    return lambda *args: dict(zip("xWb", session.run(grads, dict(zip(ins, args)))))


def _in_a_thread(fn):
    def run(*args):
        box = []

        def target():
            try:
                box.append(fn(*args))
            except Exception as err:  # handed to the caller, as a worker pool would
                box.append(err)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if isinstance(box[0], Exception):
            raise box[0]
        return box[0]
    return run


def _catching(fn, fallback):
    def run(*args):
        try:
            return fn(*args)
        except Exception:
            return fallback(*args)
    return run


def _lazy(x, W, b, upstream):
    class Lazy:  # values computed by the tape only when the checker converts them
        def __init__(self, k):
            self.k = k

        def __array__(self, dtype=None, copy=None):
            return _tape_dense(x, W, b, upstream)[self.k]
    return {k: Lazy(k) for k in "xWb"}


def _forward_mode(x, y, W1, b1, W2, b2):
    grads = {}
    for k, v in zip(("W1", "b1", "W2", "b2"), (W1, b1, W2, b2)):
        flat = np.zeros(v.size)
        for i in range(v.size):
            tangent = np.zeros(v.size)
            tangent[i] = 1.0
            params = dict(W1=W1, b1=b1, W2=W2, b2=b2)
            params[k] = tf.constant(v)
            with tf.autodiff.ForwardAccumulator(params[k], tf.constant(tangent.reshape(v.shape))) as acc:
                out = tf.tanh(x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
                loss = tf.reduce_mean(tf.square(out - y))
            flat[i] = acc.jvp(loss).numpy()
        grads[k] = flat.reshape(v.shape)
    return grads


AUTODIFF = {  # spec -> ways of getting its answer from TensorFlow's autodiff
    "backprop/dense_backward": [_tape_dense, lambda *a: dict(zip("xWb", (g.numpy() for g in _traced_dense(*a)))),
                                _session_dense(), _in_a_thread(_tape_dense), _lazy,
                                _catching(_tape_dense, lambda x, W, b, u: {"x": u @ W.T, "W": x.T @ u, "b": 0 * b})],
    "backprop/hidden_upstream": [lambda *a: _tape_network(*a)[1]],
    "backprop/backward": [lambda *a: _tape_network(*a)[0], _forward_mode],
}


@pytest.mark.parametrize("name,k", [(n, k) for n in sorted(AUTODIFF) for k in range(len(AUTODIFF[n]))])
def test_autodiff_in_a_by_hand_part_scores_zero(name, k):
    # Before the by-hand guard, each of these scored full marks.
    messages = _grade(name, AUTODIFF[name][k])
    assert messages and all("by hand" in m and "automatic differentiation" in m for m in messages), messages
    with pytest.raises(AssertionError, match="by hand"):
        check(AUTODIFF[name][k], name)
    # and autodiff works again afterwards (the reference and every other part need it)
    assert _tape_dense(np.ones((1, 2)), np.ones((2, 1)), np.ones(1), np.ones((1, 1)))["W"].tolist() == [[1.0], [1.0]]


def test_quantizer_cases_tolerate_a_wider_intermediate_dtype():
    # Computing x * n in float64 for float16/float32 inputs is not an error the grade should see.
    def wide(x, bits):
        return tf.cast(_quantize_with(tf.cast(x, tf.float64), bits), x.dtype)

    for seed in range(3):
        assert _grade("quantize_ste/value", wide, seed) == []


# ----------------------------------------------------------------------------- the assignments use the specs correctly
@functools.lru_cache(maxsize=1)
def _assignments():
    return load_assignments(ROOT / "solutions")


def test_assignments_test_cells_have_the_course_shape():
    notebooks = [nb for nbs in _assignments().values() for nb in nbs]
    assert len(notebooks) == 9
    # (automatic test cells, total points): a 2-point written answer in 02, 04, 05, 07, 08 and 09;
    # 07 gained fake quantization (2 + 2) and 08 the score function with a baseline (2) in issue 24
    shape = {"01_backprop": (3, 10), "02_zero_gradient": (4, 12), "03_ste": (4, 10), "04_stop_gradient": (3, 12),
             "05_jacobian": (4, 12), "06_proxies": (4, 10), "07_lsq": (6, 14), "08_discrete": (5, 12),
             "09_deploy": (3, 10)}
    assert sorted(nb.assignment for nb in notebooks) == sorted(shape)
    for nb in notebooks:
        assert (len(nb.auto_cells), nb.max_score) == shape[nb.assignment], nb.path
        assert all(c.cell_type == "markdown" and c.points == 2 for c in nb.grade_cells if c.manual), nb.path
        for cell in nb.auto_cells:
            assert cell.grade_id.startswith("test_") and cell.points > 0
            assert "forbid" in cell.metadata.get("ste_course", {}), (nb.path, cell.grade_id)
            assert all(name.startswith("ste_utils.") and hasattr(ste_utils, name.split(".", 1)[1])
                       for name in cell.forbid), cell.forbid
            lines = cell.source.splitlines()
            assert HIDDEN_BEGIN in lines and HIDDEN_END in lines
            body = ast.parse("\n".join(l for l in lines if l not in (HIDDEN_BEGIN, HIDDEN_END))).body
            assert isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)
            assert all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and s.value.func.id == "check"
                       for s in body[1:]), (nb.path, cell.grade_id)
            for call in cell.checks:
                get_spec(call.spec)
            assert {c.spec for c in cell.checks if c.hidden} == {c.spec for c in cell.checks if not c.hidden}
