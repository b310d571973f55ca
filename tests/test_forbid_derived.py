"""Forbid by derivation (issue 21, attack 4) and ``ste-course check``'s proof of it.

03_ste answered as ``h = ste_utils.ste_heaviside(x, c); return h + tf.stop_gradient(sign(x) - h)``
scored its gradient parts: ``ste_heaviside`` has ``ste_sign``'s clipped backward and was not on
the hand-written list. The grader now derives the list (:mod:`ste_course.authoring.derive`); the
graded attack is ``sibling-ste-heaviside`` in ``tests/adversarial/cases.py``. Here: the derived
lists, and the proof cell ``ste-course check`` appends to a solution, run on 03's own answers
(in this process: no worker), catching the sibling when the list is the hand one. And the siblings
the first derivation missed (red team RT1; graded in ``tests/adversarial/test_forbid_run.py``): a
sibling with one parameter more (``lsq_plus_quantize(x, step, 0.0, bits)`` is LSQ), a private
helper (``discrete._pass_through``), and the functions returning the same private helper.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from ste_course.authoring import selfcheck
from ste_course.authoring.source import load_notebook
from ste_course.authoring import derive
from ste_course.authoring.derive import derived_forbids

ROOT = Path(__file__).resolve().parent.parent
STE = ROOT / "solutions" / "03_ste" / "03_ste.ipynb"


def test_the_sibling_with_the_same_backward_is_derived_for_the_gradient_parts_only():
    derived = derived_forbids(["ste_sign_stop_gradient/value", "ste_sign_stop_gradient/gradient",
                               "ste_sign_custom_gradient/gradient"])
    assert "ste_utils.ste_heaviside" in derived["ste_sign_stop_gradient/gradient"]
    assert "ste_utils.ste_heaviside" in derived["ste_sign_custom_gradient/gradient"]
    assert "ste_utils.ste_sign" in derived["ste_sign_stop_gradient/gradient"]
    # its forward is {0, 1}, not the sign: it gives no value part's answer
    assert "ste_utils.ste_heaviside" not in derived["ste_sign_stop_gradient/value"]
    assert "ste_utils.ste_sign" in derived["ste_sign_stop_gradient/value"]


def test_a_sibling_with_a_neutral_extra_parameter_or_a_private_helper_is_derived():
    derived = derived_forbids(["lsq/value", "lsq/x_gradient", "lsq/step_gradient", "stop_gradient/straight_through"])
    for part in ("lsq/value", "lsq/x_gradient", "lsq/step_gradient"):
        assert {"ste_utils.lsq_plus_quantize", "ste_utils._learned_grid"} <= set(derived[part]), derived[part]
    assert "ste_utils._pass_through" in derived["stop_gradient/straight_through"]
    assert "ste_utils.vector_quantize" not in derived["stop_gradient/straight_through"]  # calls it, not returns it


def test_functions_returning_one_private_helper_are_one_mechanism():
    cores = derive.library_cores()
    assert cores["ste_utils.lsq_quantize"] == cores["ste_utils.lsq_plus_quantize"] == {"ste_utils._learned_grid"}
    assert cores["ste_utils.dequantize"] == set()  # its helper checks an argument inside a larger expression
    assert derive.same_mechanism({"ste_utils.lsq_quantize"}) == {
        "ste_utils.lsq_quantize", "ste_utils.lsq_plus_quantize", "ste_utils._learned_grid"}
    assert derive.same_mechanism({"ste_utils.ste_sign"}) == {"ste_utils.ste_sign"}


def test_the_proof_wraps_a_sibling_with_an_extra_parameter():
    """07's own ``lsq_quantize`` with the hand list: the proof finds ``lsq_plus_quantize`` scoring
    (filled with offset 0), which the old call styles never tried."""
    nb = load_notebook(ROOT / "solutions" / "07_lsq" / "07_lsq.ipynb", "07_lsq")
    namespace: dict = {}
    for cell in nb.cells:  # its cells up to the answer (imports, the answer)
        if cell.cell_type == "code" and not cell.grade:
            exec(compile(cell.source, "07_lsq", "exec"), namespace)  # noqa: S102 - our solution
            if "def lsq_quantize" in cell.source:
                break
    hand_list = ["ste_utils.lsq_quantize"]
    found = derive.prove_forbidden(namespace, [["test_lsq_value", "lsq/value", "lsq_quantize", hand_list]])
    assert any("ste_utils.lsq_plus_quantize scores" in line for line in found), found


def _proof_output(nb) -> str:
    """The proof cell run after 03's own cells (the answers and set-up; not the tests)."""
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in nb.cells:
            if cell.cell_type == "code" and not cell.grade:
                exec(compile(cell.source, str(STE), "exec"), namespace)  # noqa: S102 - our solution
        exec(selfcheck._proof_cell(nb)["source"], namespace)  # noqa: S102
    return out.getvalue()


@pytest.fixture(scope="module")
def ste():
    return load_notebook(STE, "03_ste")


def test_check_proves_no_sibling_scores(ste):
    parts = selfcheck.forbid_parts(ste)
    assert {p[1] for p in parts} == {"ste_sign_stop_gradient/value", "ste_sign_stop_gradient/gradient",
                                     "ste_sign_custom_gradient/value", "ste_sign_custom_gradient/gradient"}
    assert "scores" not in _proof_output(ste)


def test_check_fails_with_the_hand_list(ste, monkeypatch):
    monkeypatch.setattr(selfcheck, "part_forbid", lambda cell: list(cell.forbid))
    found = _proof_output(ste)
    assert "[test_stop_gradient_gradient] ste_sign_stop_gradient/gradient: an answer wrapping " \
           "ste_utils.ste_heaviside scores" in found, found
    assert "[test_custom_gradient_gradient]" in found
    assert "_value]" not in found  # the value parts: the solution's own forward scores alone
    json.dumps(selfcheck.forbid_parts(ste))  # plain data for the cell


@pytest.mark.parametrize("spec_name, answer, label", [
    ("deploy/requantize", lambda acc, m, e, z: __import__("ste_utils").integer.requantize(acc, m, e, z),
     "ste_utils.quantize_affine"),  # int32 in, int8 out: zeros like x do not run
    ("proxies/derivative", lambda name, x: __import__("ste_utils").PROXIES[name].derivative(x),
     "ste_utils._pass_through"),  # x is the proxy's name
    ("jacobian/straight_through", lambda x, r: __import__("ste_utils").straight_through_jacobian(x, r),
     "ste_utils._sum_to_shape"),  # the answer is (n, 2n): zeros like x do not broadcast
])
def test_the_proof_does_not_blame_a_sibling_when_a_wrapper_of_zeros_scores_too(spec_name, answer, label):
    # h + stop_gradient(solution - h) has the solution's value for any h that runs: on a part
    # that checks values only it shows nothing about f, whatever the dtype or shape of x.
    others = [name for name in derive.library_functions() if name != label]
    found = derive.prove_forbidden({"answer": answer}, [["t", spec_name, "answer", others]])
    assert found == [], found
    # ... while the function that does give the answer, left unforbidden, still scores.
    real = {"deploy/requantize": "ste_utils.requantize", "jacobian/straight_through":
            "ste_utils.straight_through_jacobian"}.get(spec_name)
    if real:
        others = [name for name in derive.library_functions() if name != real]
        found = derive.prove_forbidden({"answer": answer}, [["t", spec_name, "answer", others]])
        assert found == [f"[t] {spec_name}: an answer wrapping {real} scores; it is not forbidden"], found
