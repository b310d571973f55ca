"""Specs for assignment 02 (the zero gradient of quantizers), judged against what
``tf.GradientTape`` gives (computed in NumPy by :mod:`ste_course.references.zero_gradient`).

``zero_gradient/tf_gradient``
    ``tf_gradient(fn, x)``: the gradient TensorFlow computes for ``sum(fn(x))`` with respect to
    ``x``, zeros where TensorFlow returns ``None``; ``fn`` is ``tf.round``, ``tf.sign``,
    ``tf.floor`` or a formula using them.
``zero_gradient/forward``, ``zero_gradient/receives_gradient``, ``zero_gradient/sgd_step``
    A small MLP, ``out = L_n(a_{n-1}(... a_1(L_1(x))))`` with ``L_i(h) = h @ W_i + b_i`` and
    activations ``a_i`` among ``tf.tanh``, ``tf.sign`` and ``tf.round``; loss
    ``mean((out - y)**2)``. The student writes ``forward(x, weights, activations)``,
    ``receives_gradient(x, y, weights, activations)`` (a bool array (n_layers, 2): does
    dL/dW_i, dL/db_i have a nonzero entry?) and ``sgd_step(x, y, weights, activations,
    learning_rate)`` (the new weights after W <- W - learning_rate * dL/dW).

``weights`` is a list of ``(W, b)`` pairs of float32 tensors, ``activations`` a list of
callables; the case stores them as arrays ``W1, b1, ...`` and a string ``"sign,tanh"``.
"""

from __future__ import annotations

import numpy as np

from ste_course.specs.base import NumpyReference, Spec, register
from ste_course.specs.common import distinct, to_array
from ste_course.specs.elementwise import HIDDEN_DTYPES, HIDDEN_SHAPES, _fill

# ----------------------------------------------------------------------------- tf_gradient
# name -> (the formula shown in messages, fn, why the gradient is what it is)
OPERATIONS = {
    "round": ("tf.round(x)", lambda tf, x: tf.round(x),
              lambda x: "tf.round has no gradient: TensorFlow returns None, which means 0"),
    "sign": ("tf.sign(x)", lambda tf, x: tf.sign(x),
             lambda x: "TensorFlow's gradient of tf.sign is 0 everywhere (at x = 0 too)"),
    "floor": ("tf.floor(x)", lambda tf, x: tf.floor(x),
              lambda x: "tf.floor has no gradient: TensorFlow returns None, which means 0"),
    "x_times_round": ("x * tf.round(x)", lambda tf, x: x * tf.round(x),
                      lambda x: (f"by the product rule the gradient is round(x) + x * 0 = "
                                 f"round({x:.6g}): only the factor x carries a gradient")),
    "sign_plus_half_x": ("tf.sign(x) + 0.5 * x", lambda tf, x: tf.sign(x) + 0.5 * x,
                         lambda x: "the gradient of tf.sign is 0, so only 0.5 * x contributes 0.5"),
}


def operation(name: str):
    """The TensorFlow function of one ``OPERATIONS`` entry."""
    import tensorflow as tf

    fn = OPERATIONS[name][1]

    def op(x):
        return fn(tf, x)

    op.__name__ = name
    op.__doc__ = OPERATIONS[name][0]
    return op


_GRAD_POINTS = [0.0, 0.5, -0.5, 1.5, 2.5, -1.0, 1.0, 0.3, -2.7]


def _grad_cases(rng, hidden):
    if not hidden:
        x = np.array(sorted(_GRAD_POINTS), dtype=np.float32)
        return [{"x": x, "op": name} for name in ("round", "x_times_round")]
    names = list(OPERATIONS)
    start = int(rng.integers(len(names)))
    out = []
    for i, (dtype, shape) in enumerate([(d, s) for d in HIDDEN_DTYPES for s in HIDDEN_SHAPES]):
        x = _fill(rng, np.array(_GRAD_POINTS), shape, 2.0).astype(dtype)
        out.append({"x": x, "op": names[(start + i) % len(names)]})
    return out


def _run_grad(fn, case):
    import tensorflow as tf

    result = fn(operation(case["op"]), tf.constant(case["x"]))
    if result is None:
        raise TypeError("your tf_gradient returned None; where TensorFlow gives None, return "
                        "zeros of x's shape and dtype (tf.zeros_like(x))")
    return {"gradient": result}


def _describe_grad(case):
    x = np.asarray(case["x"])
    return f"fn(x) = {OPERATIONS[case['op']][0]} with x of dtype {x.dtype.name} and shape {x.shape}"


def _explain_grad(case, output, index, expected, got):
    x = float(np.asarray(case["x"]).ravel()[index])
    formula, _, why = OPERATIONS[case["op"]]
    e, g = distinct(expected, got)
    return (f"The gradient of {formula} at x = {x:.6g} ({np.asarray(case['x']).dtype.name}) "
            f"should be {e} because {why(x)}; yours is {g}.")


register(Spec(name="zero_gradient/tf_gradient", summary="gradients from your tf_gradient",
              cases=_grad_cases, run=_run_grad, reference=NumpyReference("zero_gradient", "tf_gradient"),
              describe=_describe_grad, explain=_explain_grad))


# ----------------------------------------------------------------------------- the small MLP
QUANTIZERS = ("sign", "round")
VISIBLE_MODELS = (("tanh",), ("sign", "tanh"))
HIDDEN_MODELS = (("sign",), ("tanh", "round"), ("round", "tanh"), ("tanh", "tanh"), ("tanh", "sign"))


def activation(name: str):
    import tensorflow as tf

    return {"tanh": tf.tanh, "sign": tf.sign, "round": tf.round}[name]


def _mlp_case(rng, names, learning_rate):
    sizes = [int(rng.integers(2, 5))] + [int(rng.integers(3, 6)) for _ in names] + [int(rng.integers(1, 3))]
    batch = int(rng.integers(2, 6))
    case = {"x": rng.normal(0.0, 1.0, (batch, sizes[0])).astype(np.float32),
            "y": rng.normal(0.0, 1.0, (batch, sizes[-1])).astype(np.float32),
            "activations": ",".join(names), "learning_rate": float(learning_rate)}
    for i in range(len(sizes) - 1):
        # Weights large enough that tf.round of a pre-activation is rarely 0 everywhere.
        case[f"W{i + 1}"] = rng.normal(0.0, 1.5, (sizes[i], sizes[i + 1])).astype(np.float32)
        case[f"b{i + 1}"] = rng.normal(0.0, 0.5, (sizes[i + 1],)).astype(np.float32)
    return case


def _mlp_cases(rng, hidden):
    if not hidden:
        return [_mlp_case(rng, names, 0.1) for names in VISIBLE_MODELS]
    order = rng.permutation(len(HIDDEN_MODELS))
    return [_mlp_case(rng, HIDDEN_MODELS[i], rng.choice([0.05, 0.1, 0.5])) for i in order]


def _names(case) -> list:
    return [n for n in str(case["activations"]).split(",") if n]


def _n_layers(case) -> int:
    return len(_names(case)) + 1


def _student_args(case):
    """(x, y, weights, activations) as the student's functions receive them (fresh tensors)."""
    import tensorflow as tf

    weights = [(tf.constant(case[f"W{i}"]), tf.constant(case[f"b{i}"])) for i in range(1, _n_layers(case) + 1)]
    return tf.constant(case["x"]), tf.constant(case["y"]), weights, [activation(n) for n in _names(case)]


def _describe_mlp(case):
    names = _names(case)
    layers = " -> ".join([f"layer {i + 1} -> tf.{n}" for i, n in enumerate(names)] + [f"layer {len(names) + 1}"])
    return f"the model x -> {layers} (x of shape {np.shape(case['x'])})"


def _frozen_by(case, layer: int):
    """The first plain quantizer after layer ``layer`` (1-based), as (name, position) or None."""
    for j, name in enumerate(_names(case)[layer - 1:], start=layer):
        if name in QUANTIZERS:
            return name, j
    return None


def _param_at(case, index) -> tuple:
    layer, which = divmod(int(index), 2)
    return layer + 1, "Wb"[which]


# forward
def _run_forward(fn, case):
    x, _, weights, acts = _student_args(case)
    return {"output": to_array(fn(x, weights, acts), "forward(...)")}


def _explain_forward(case, output, index, expected, got):
    position = np.unravel_index(index, np.shape(_ref_shape(case)))
    return (f"On {_describe_mlp(case)} the output at {tuple(int(i) for i in position)} should be "
            f"{expected:.6g}; yours is {got:.6g}. Apply h @ W + b for every layer and the "
            "activation after every layer but the last.")


def _ref_shape(case):
    return np.zeros((np.shape(case["x"])[0], np.shape(case[f"W{_n_layers(case)}"])[1]))


register(Spec(name="zero_gradient/forward", summary="outputs of your forward", cases=_mlp_cases,
              run=_run_forward, reference=NumpyReference("zero_gradient", "forward"),
              describe=_describe_mlp, explain=_explain_forward))


# receives_gradient
def _run_receives(fn, case):
    x, y, weights, acts = _student_args(case)
    flags = to_array(fn(x, y, weights, acts), "receives_gradient(...)")
    if flags.dtype.kind not in "biu":
        raise TypeError(f"receives_gradient must return booleans (True/False); got dtype {flags.dtype.name}")
    return {"receives gradient": flags.astype(bool)}


def _explain_receives(case, output, index, expected, got):
    layer, param = _param_at(case, index)
    frozen = _frozen_by(case, layer)
    where = _describe_mlp(case)
    if not expected and frozen:
        name, j = frozen
        return (f"On {where}, {param}{layer} receives no gradient: it sits before tf.{name} (after "
                f"layer {j}), whose gradient is zero (or None), so nothing reaches it; yours says True.")
    if expected and not frozen:
        return (f"On {where}, {param}{layer} does receive a nonzero gradient: no plain quantizer sits "
                f"between layer {layer} and the loss; yours says False.")
    return (f"On {where}, whether {param}{layer} receives a nonzero gradient should be "
            f"{bool(expected)}; yours says {bool(got)}.")


register(Spec(name="zero_gradient/receives_gradient",
              summary="which parameters receive a gradient, from your receives_gradient",
              cases=_mlp_cases, run=_run_receives,
              reference=NumpyReference("zero_gradient", "receives_gradient"), describe=_describe_mlp,
              explain=_explain_receives, check_dtype=False))


# sgd_step
def _run_sgd(fn, case):
    x, y, weights, acts = _student_args(case)
    new = fn(x, y, weights, acts, case["learning_rate"])
    if not isinstance(new, (list, tuple)) or len(new) != _n_layers(case):
        raise TypeError(f"sgd_step must return a list of {_n_layers(case)} (W, b) pairs; "
                        f"got {type(new).__name__}" + (f" of length {len(new)}" if hasattr(new, "__len__") else ""))
    out = {}
    for i, pair in enumerate(new, start=1):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError(f"sgd_step must return (W, b) pairs; entry {i - 1} is {type(pair).__name__}")
        out[f"W{i}"] = to_array(pair[0], f"the new W{i}")
        out[f"b{i}"] = to_array(pair[1], f"the new b{i}")
    return out


def _explain_sgd(case, output, index, expected, got):
    old = float(np.asarray(case[output]).ravel()[index])
    layer = int(output[1:])
    where = _describe_mlp(case)
    frozen = _frozen_by(case, layer)
    position = tuple(int(i) for i in np.unravel_index(index, np.shape(case[output])))
    at = position[0] if len(position) == 1 else position
    if expected == old and frozen:
        name, j = frozen
        return (f"On {where}, {output} at {at} should stay {old:.6g}: layer {layer} sits before "
                f"tf.{name} (after layer {j}), so its gradient is zero (or None) and the step "
                f"leaves it unchanged; yours is {got:.6g}.")
    unchanged = " (yours left it unchanged)" if got == old else ""
    return (f"On {where}, {output} at {at} should become {expected:.6g} = {old:.6g} - "
            f"learning_rate * dL/d{output}; yours is {got:.6g}{unchanged}.")


register(Spec(name="zero_gradient/sgd_step", summary="the weights after your sgd_step",
              cases=_mlp_cases, run=_run_sgd, reference=NumpyReference("zero_gradient", "sgd_step"),
              describe=_describe_mlp, explain=_explain_sgd))
