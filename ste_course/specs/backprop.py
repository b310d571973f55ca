"""Specs for assignment 01 (backpropagation by hand), judged against the gradients
``tf.GradientTape`` gives (computed in NumPy, op for op: :mod:`ste_course.references.backprop`).

The student's functions get NumPy arrays and run with TensorFlow's automatic differentiation
switched off (:func:`without_autodiff`): a part answered with ``tf.GradientTape``,
``tf.gradients`` or a traced function holding them scores 0 with a message saying so.

The network (float64 NumPy arrays, a batch of B rows)::

    z1  = x @ W1 + b1          x: (B, D)  W1: (D, H)  b1: (H,)
    h   = tanh(z1)
    out = h @ W2 + b2          W2: (H, K)  b2: (K,)
    L   = mean((out - y)**2)   over all B * K entries, y: (B, K)

Specs:
    ``backprop/dense_backward``  ``dense_backward(x, W, b, upstream)`` -> dict "x", "W", "b":
                                 the gradients of L for out = x @ W + b, given dL/dout.
    ``backprop/hidden_upstream`` ``hidden_upstream(x, y, W1, b1, W2, b2)`` -> dL/dh, (B, H).
    ``backprop/backward``        ``backward(x, y, W1, b1, W2, b2)`` -> dict "W1", "b1", "W2", "b2".
"""

from __future__ import annotations

import contextlib

import numpy as np

from ste_course.specs.base import NumpyReference, Spec, register
from ste_course.specs.common import (compare_with_hint, distinct, fresh, precision_note, keyed, scale_hint, to_array,
                                      transpose_hint)

PARAMS = ("W1", "b1", "W2", "b2")
# (B, D, H, K): a batch of one, a single output, and sizes where transposes cannot hide.
HIDDEN_SIZES = ((1, 3, 4, 2), (6, 5, 3, 1), (5, 2, 6, 3))
VISIBLE_SIZES = ((4, 3, 5, 2),)


# ----------------------------------------------------------------------------- cases
def _network_case(rng, B, D, H, K) -> dict:
    return {"x": rng.normal(0.0, 1.0, (B, D)), "y": rng.normal(0.0, 1.0, (B, K)),
            "W1": rng.normal(0.0, 0.7, (D, H)), "b1": rng.normal(0.0, 0.3, (H,)),
            "W2": rng.normal(0.0, 0.7, (H, K)), "b2": rng.normal(0.0, 0.3, (K,))}


def _network_cases(rng, hidden):
    return [_network_case(rng, *sizes) for sizes in (HIDDEN_SIZES if hidden else VISIBLE_SIZES)]


def _dense_cases(rng, hidden):
    sizes = ((1, 3, 2), (5, 4, 1), (3, 2, 6)) if hidden else ((4, 3, 2),)
    return [{"x": rng.normal(0.0, 1.0, (B, D)), "W": rng.normal(0.0, 1.0, (D, M)),
             "b": rng.normal(0.0, 1.0, (M,)), "upstream": rng.normal(0.0, 1.0, (B, M))}
            for B, D, M in sizes]


def _describe_network(case) -> str:
    B, D = np.shape(case["x"])
    H, K = np.shape(case["W2"])
    return f"a batch of B = {B} (D = {D} inputs, H = {H} hidden units, K = {K} outputs)"


def _describe_dense(case) -> str:
    (B, D), M = np.shape(case["x"]), np.shape(case["W"])[1]
    return f"x of shape ({B}, {D}), W of shape ({D}, {M}), upstream of shape ({B}, {M})"


# ----------------------------------------------------------------------------- by hand: autodiff switched off
class AutodiffUsed(RuntimeError):
    """The student's code used TensorFlow's automatic differentiation in a by-hand part."""


_BY_HAND = ("This part is by hand: your code used TensorFlow's automatic differentiation ({what}), "
            "which is switched off while it runs. Write the chain rule with NumPy.")


def _refusing_stubs(attempts: list) -> list:
    """``(owner, attribute, stub)`` for every way to run a graph built before the check: calls of
    traced ``tf.function``\\ s (eager) and ``tf.compat.v1.Session`` runs."""
    from tensorflow.python.client import pywrap_tf_session
    from tensorflow.python.eager import context

    def stub(what):
        def refuse(*args, **kwargs):
            attempts.append(what)
            raise AutodiffUsed(_BY_HAND.format(what=what))
        return refuse

    return [(context.Context, "call_function", stub("a traced tf.function")),
            (pywrap_tf_session, "TF_SessionRun_wrapper", stub("a tf.compat.v1.Session run")),
            (pywrap_tf_session, "TF_SessionPRun_wrapper", stub("a tf.compat.v1.Session run")),
            (pywrap_tf_session, "TF_SessionRunCallable", stub("a tf.compat.v1.Session callable"))]


@contextlib.contextmanager
def without_autodiff():
    """TensorFlow's automatic differentiation switched off, in every thread, while the block runs.

    * TensorFlow's gradient registry (op type -> gradient function) is emptied and every lookup
      recorded: ``tf.GradientTape.gradient``, ``jacobian`` and ``batch_jacobian``,
      ``tf.gradients``, ``tf.autodiff.ForwardAccumulator`` and Keras training all look up the
      gradient function of every op they differentiate there, so they raise.
    * Graphs built before the block (a traced ``tf.function``, a ``tf.compat.v1`` graph holding
      ``tf.gradients``) cannot run: calling a traced function or a session is refused.

    Yields the list of attempts (``"the gradient of MatMul"``, ...); the block's code may catch
    the errors, the list still tells. Replacing the registry or the stubs while the block runs
    is recorded too. Not covered: a new Python process started by the block's code, and raw
    ``PartitionedCall`` ops naming a function traced earlier.
    """
    from tensorflow.python.framework import ops

    attempts: list = []

    class Refusing(dict):
        def __contains__(self, name):
            attempts.append(f"the gradient of {str(name)[:40]}")
            return False

    registry, refusing = ops._gradient_registry, Refusing()  # pylint: disable=protected-access
    entries = registry._registry  # pylint: disable=protected-access
    saved = dict(entries)
    stubs = _refusing_stubs(attempts)
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in stubs]
    entries.clear()  # also empty for code that kept a reference to the dict itself
    registry._registry = refusing  # pylint: disable=protected-access
    for owner, name, stub in stubs:
        setattr(owner, name, stub)
    try:
        yield attempts
    finally:
        changed = (registry._registry is not refusing or len(refusing) or len(entries)  # pylint: disable=protected-access
                   or any(getattr(owner, name) is not stub for owner, name, stub in stubs))
        for owner, name, original in originals:
            setattr(owner, name, original)
        registry._registry = entries  # pylint: disable=protected-access
        entries.clear()
        entries.update(saved)
        if changed:
            attempts.append("TensorFlow's gradient machinery, changed while your code ran")


def by_hand(fn, *args):
    """``fn(*args)`` with TensorFlow's autodiff switched off (:func:`without_autodiff`); raises
    :class:`AutodiffUsed` when the code tried to use it, even if it caught the error."""
    with without_autodiff() as attempts:
        try:
            result = fn(*args)
        except Exception:
            if not attempts:
                raise
            result = None
    if attempts:
        raise AutodiffUsed(_BY_HAND.format(what=attempts[0]))
    return result


# ----------------------------------------------------------------------------- running the student's code
# The results are turned into arrays inside by_hand too: a returned object could compute its
# values lazily (in ``numpy()`` or ``__array__``) once autodiff is back on.
def _run_backward(fn, case):
    grads = by_hand(lambda *a: keyed(fn(*a), PARAMS, "backward(...)"), *fresh(case, "x", "y", *PARAMS))
    return {f"dL/d{k}": v for k, v in grads.items()}


def _run_hidden(fn, case):
    return {"dL/dh": by_hand(lambda *a: to_array(fn(*a), "hidden_upstream(...)"), *fresh(case, "x", "y", *PARAMS))}


def _run_dense(fn, case):
    grads = by_hand(lambda *a: keyed(fn(*a), ("x", "W", "b"), "dense_backward(...)"),
                    *fresh(case, "x", "W", "b", "upstream"))
    return {f"dL/d{k}": v for k, v in grads.items()}


# ----------------------------------------------------------------------------- messages
_OUT = "dL/dout = 2 (out - y) / (B * K)"
RULES = {
    "dL/dx": "dL/dx = upstream @ W.T",
    "dL/dW": "dL/dW = x.T @ upstream",
    "dL/db": "dL/db = upstream summed over the batch (axis 0)",
    "dL/dh": f"dL/dh = dL/dout @ W2.T with {_OUT}",
    "dL/dW2": f"dL/dW2 = h.T @ dL/dout with {_OUT}",
    "dL/db2": "dL/db2 = dL/dout summed over the batch (axis 0)",
    "dL/dW1": "dL/dW1 = x.T @ dL/dz1 with dL/dz1 = (dL/dout @ W2.T) * (1 - h**2)",
    "dL/db1": "dL/db1 = dL/dz1 summed over the batch (axis 0)",
}


def _shape_of(case, output):
    name = output[len("dL/d"):]
    if name == "h":
        return (np.shape(case["x"])[0], np.shape(case["W1"])[1])
    return np.shape(case[name])


def _explain(describe):
    def explain(case, output, index, expected, got):
        position = tuple(int(i) for i in np.unravel_index(index, _shape_of(case, output)))
        at = position[0] if len(position) == 1 else position
        e, g = distinct(expected, got)
        return (f"On {describe(case)} {output} at {at} should be {e}; yours is {g} "
                f"({RULES[output]}).{precision_note(expected, got)}")
    return explain


def _hint(case, output, expected, got):
    return transpose_hint(expected, got, output) or scale_hint(expected, got, output)


def _register(name, summary, cases, run, reference, describe):
    register(Spec(name=name, summary=summary, cases=cases, run=run, reference=reference,
                  describe=describe, explain=_explain(describe),
                  compare=compare_with_hint(name, _hint)))


_register("backprop/dense_backward", "the backward pass of your dense_backward", _dense_cases,
          _run_dense, NumpyReference("backprop", "dense_backward"), _describe_dense)
_register("backprop/hidden_upstream", "the upstream gradient dL/dh from your hidden_upstream",
          _network_cases, _run_hidden, NumpyReference("backprop", "hidden_upstream"), _describe_network)
_register("backprop/backward", "the parameter gradients from your backward", _network_cases,
          _run_backward, NumpyReference("backprop", "backward"), _describe_network)
