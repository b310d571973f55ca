"""Specs for assignment 05 (the Jacobian of the straight-through estimator).

``jacobian/straight_through``
    ``ste_jacobian(x, r)``: the Jacobian of out = x + sg(r - x) with respect to [x, r], x and r
    flattened to length n: an (n, 2n) matrix in x's dtype: [I | 0], what
    ``ste_utils.straight_through_jacobian`` gives.
``jacobian/ste_sign``
    ``ste_sign_jacobian(x, clip_value=1.0)``: the (n, n) Jacobian of ste_sign at the flattened
    x: diag 1{|x| <= clip_value}, what ``ste_utils.jacobian`` of ``ste_utils.ste_sign`` gives.
``jacobian/chain_rule``
    ``ste_input_gradients(x, r, upstream)``: (dL/dx, dL/dr) given dL/dout = upstream.
``jacobian/gradient_reaching_result``, ``jacobian/gradient_reaching_x``
    Numbers answering the interpretation question (x = 0.7, r = round(x),
    out = x + sg(r - x), L = out**2): dL/dr and dL/dx. Their messages do not give the answer.

The references are the closed forms, in NumPy (:mod:`ste_course.references.jacobian`).
"""

from __future__ import annotations

import numpy as np

from ste_course.specs.base import NumpyReference, Spec, register
from ste_course.specs.common import compare_with_hint, distinct, precision_note, tensors, to_array
from ste_course.specs.elementwise import HIDDEN_DTYPES, _fill, _sign_why_gradient

SHAPES = ((1,), (2, 3))


def _pairs(rng, hidden):
    """Cases with x and r = round(x) (plus an upstream gradient) in several dtypes and shapes."""
    if not hidden:
        x = np.array([-1.3, 0.2, 0.7], dtype=np.float32)
        return [{"x": x, "r": np.round(x), "upstream": np.array([1.0, -2.0, 0.5], np.float32)}]
    out = []
    for dtype in HIDDEN_DTYPES:
        for shape in SHAPES:
            x = rng.normal(0.0, 1.5, shape).astype(dtype)
            out.append({"x": x, "r": np.round(x).astype(dtype),
                        "upstream": rng.normal(0.0, 1.0, shape).astype(dtype)})
    return out


def _describe_pair(case):
    x = np.asarray(case["x"])
    return f"x and r of dtype {x.dtype.name} and shape {x.shape} (n = {x.size})"


# ----------------------------------------------------------------------------- straight-through Jacobian
def _run_st(fn, case):
    x, r = tensors(case, "x", "r")
    return {"jacobian": to_array(fn(x, r), "ste_jacobian(x, r)")}


def _explain_st(case, output, index, expected, got):
    n = np.asarray(case["x"]).size
    i, j = (int(k) for k in np.unravel_index(index, (n, 2 * n)))
    where = f"On {_describe_pair(case)}, entry ({i}, {j})"
    if j < n:
        rule = ("d out_i / d x_i = 1: the gradient passes straight through" if i == j else
                "d out_i / d x_j = 0 for i != j: the estimator acts elementwise")
        return f"{where}, in the d out / d x block, should be {expected:.6g} ({rule}); yours is {got:.6g}."
    return (f"{where}, in the d out / d r block (column {j - n} of r), should be 0 because r only "
            f"appears inside stop_gradient; yours is {got:.6g}.")


def _st_hint(case, output, expected, got):
    n = np.asarray(case["x"]).size
    if got.shape != expected.shape and got.size == expected.size:
        return (f"Hint: flatten x and r to length n = {n} and return one ({n}, {2 * n}) matrix "
                "[d out / d x | d out / d r].")
    if got.shape == (n, n):
        return f"Hint: the Jacobian with respect to [x, r] has both blocks: shape ({n}, {2 * n})."
    return None


register(Spec(name="jacobian/straight_through", summary="the Jacobian from your ste_jacobian",
              cases=_pairs, run=_run_st, reference=NumpyReference("jacobian", "straight_through"), describe=_describe_pair,
              explain=_explain_st, compare=compare_with_hint("jacobian/straight_through", _st_hint)))


# ----------------------------------------------------------------------------- Jacobian of ste_sign
def _sign_cases(rng, hidden):
    if not hidden:
        return [{"x": np.array([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0], np.float32), "clip_value": 1.0}]
    out = []
    for k, dtype in enumerate(HIDDEN_DTYPES):
        for m, shape in enumerate(((7,), (2, 4))):
            c = [1.0, 0.5, 2.0][(k + m) % 3]
            base = np.array([0.0, c, -c, 1.5 * c, -0.5 * c], dtype=dtype)
            base = np.concatenate([base, np.nextafter(base[1:3], np.array(0, dtype))])
            x = _fill(rng, base.astype(np.float64), shape, 1.5 * c).astype(dtype)
            out.append({"x": x, "clip_value": c})
    return out


def _describe_sign(case):
    x = np.asarray(case["x"])
    return f"x of dtype {x.dtype.name} and shape {x.shape} (clip_value={case['clip_value']:g})"


def _run_sign(fn, case):
    (x,) = tensors(case, "x")
    return {"jacobian": to_array(fn(x, clip_value=case["clip_value"]), "ste_sign_jacobian(x)")}


def _explain_sign(case, output, index, expected, got):
    x = np.asarray(case["x"]).ravel()
    i, j = (int(k) for k in np.unravel_index(index, (x.size, x.size)))
    if i == j:
        why = _sign_why_gradient(float(x[i]), {"clip_value": case["clip_value"]})
        return (f"On {_describe_sign(case)}, the diagonal entry ({i}, {i}) for x = {x[i]:.6g} should "
                f"be {expected:.6g} because {why}; yours is {got:.6g}.")
    return (f"On {_describe_sign(case)}, entry ({i}, {j}) should be 0: ste_sign acts elementwise, so "
            f"out_{i} does not depend on x_{j}; yours is {got:.6g}.")


def _sign_hint(case, output, expected, got):
    n = np.asarray(case["x"]).size
    if got.shape != expected.shape:
        return f"Hint: flatten x to length n = {n}; the Jacobian is an ({n}, {n}) matrix."
    return None


register(Spec(name="jacobian/ste_sign", summary="the Jacobian from your ste_sign_jacobian",
              cases=_sign_cases, run=_run_sign, reference=NumpyReference("jacobian", "ste_sign"), describe=_describe_sign,
              explain=_explain_sign, compare=compare_with_hint("jacobian/ste_sign", _sign_hint)))


# ----------------------------------------------------------------------------- chain rule
def _run_chain(fn, case):
    x, r, upstream = tensors(case, "x", "r", "upstream")
    result = fn(x, r, upstream)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError("ste_input_gradients must return a pair (dL/dx, dL/dr); "
                        f"it returned {type(result).__name__}")
    return {"dL/dx": to_array(result[0], "dL/dx"), "dL/dr": to_array(result[1], "dL/dr")}


def _explain_chain(case, output, index, expected, got):
    shape = np.shape(case["x"])
    position = tuple(int(i) for i in np.unravel_index(index, shape))
    at = position[0] if len(position) == 1 else position
    g = float(np.asarray(case["upstream"]).ravel()[index])
    if output == "dL/dx":
        rule = (f"the d out / d x block is the identity, so dL/dx = upstream (here {g:.6g})")
    else:
        rule = "the d out / d r block is zero, so no gradient reaches r"
    e, g = distinct(expected, got)
    return (f"On {_describe_pair(case)}, {output} at {at} should be {e} because {rule}; "
            f"yours is {g}.{precision_note(expected, got)}")


register(Spec(name="jacobian/chain_rule", summary="the gradients from your ste_input_gradients",
              cases=_pairs, run=_run_chain, reference=NumpyReference("jacobian", "chain_rule"), describe=_describe_pair,
              explain=_explain_chain))


# ----------------------------------------------------------------------------- interpretation
def _number_spec(name: str, variable: str, advice: str):
    """A spec for one number; the right one is the reference's (``ste_course.references.jacobian``,
    which the sandbox hides), not written here."""
    def run(value, case):
        array = to_array(value, variable)
        if array.size != 1 or array.dtype.kind not in "fiu":
            raise TypeError(f"{variable} must be one number; it is {type(value).__name__}")
        return {"answer": np.float64(array.reshape(()))}

    def compare(case, expected_out, got):
        value = float(got["answer"][0].reshape(-1)[0])
        if np.isclose(value, float(expected_out["answer"]), rtol=1e-6, atol=1e-9):
            return []
        return [f"{variable} = {value:.6g} is not right. {advice}"]

    register(Spec(name=name, summary=f"your answer {variable}", cases=lambda rng, hidden: [{}],
                  run=run, reference=NumpyReference("jacobian", variable),
                  describe=lambda case: "the question", check_dtype=False, compare=compare))


_number_spec("jacobian/gradient_reaching_result", "gradient_reaching_result",
             "Read it from the Jacobian of Part 1: dL/dr is dL/dout times the d out / d r block.")
_number_spec("jacobian/gradient_reaching_x", "gradient_reaching_x",
             "dL/dx is dL/dout times the d out / d x block, and dL/dout = 2 * out is taken at the "
             "forward value out, which is r = round(x), not x.")
