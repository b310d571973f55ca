"""Specs and their comparison: the data and maths both sides of the sandbox share.

A :class:`Spec` says how to draw cases, how to run the student's code on a case (the
*evidence*: plain arrays), how to compute the reference (NumPy in ``ste_course.references`` for
the built-in specs, checked against ``ste_utils``) and how to explain a
mismatch. Which side runs what:

* **the grader (parent)**: :func:`draw_cases` (with a seed made of the instructor's secret),
  ``Spec.reference``, :func:`compare` and the messages (:mod:`ste_course.grading.judge`);
* **the sandbox (the student's kernel while grading)**: only ``Spec.run`` on cases decoded with
  :func:`decode_case` (:mod:`ste_course.inside.kernel`);
* **the student's own kernel** (Jupyter, Validate, ``ste-course check``): everything, on the
  visible cases and the instructor's stand-in hidden ones, to assert with a message.

Nothing here imports the parent's modules, so the sandbox may import it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ste_course.evidence import EvidenceError, decode_array, encode_array
from ste_course.specs.registry import SPECS, lookup, register

MAX_MESSAGES = 4
VISIBLE_SEED = 20240607
SOLUTION_HIDDEN_SEED = 0

Case = dict  # name -> np.ndarray | int | float | str


@dataclass(frozen=True)
class Spec:
    """What one check call verifies.

    Attributes:
        name: registry key used in test cells, e.g. ``"ste_sign/gradient"``.
        summary: one line saying what is checked (shown in feedback).
        cases: ``cases(rng, hidden) -> list[Case]``; must be deterministic given ``rng``.
        run: ``run(student_obj, case) -> dict[str, array]``, executed in the student's kernel.
        reference: ``reference(case) -> dict[str, np.ndarray]``, executed by the grader.
        describe: ``describe(case) -> str``, e.g. ``"x of dtype float16 and shape (3,)"``.
        explain: ``explain(case, output, index, expected, got) -> str`` for a wrong element,
            or None for a generic sentence.
        check_dtype: require the output dtype to equal the reference's.
        compare: optional replacement for the elementwise comparison,
            ``compare(case, expected, got) -> list[str]`` (e.g. an accuracy threshold).
        hidden_inputs: names of case entries the student's code must not receive (e.g. labels).

    A ``reference`` that is a :class:`NumpyReference` needs NumPy alone (see
    :attr:`tensorflow_reference`); any other callable may import TensorFlow.
    """

    name: str
    summary: str
    cases: Callable[[np.random.Generator, bool], list]
    run: Callable[[Any, Case], dict]
    reference: Callable[[Case], dict]
    describe: Callable[[Case], str] = lambda case: "this input"
    explain: Optional[Callable] = None
    check_dtype: bool = True
    compare: Optional[Callable] = None
    hidden_inputs: tuple = ()

    @property
    def tensorflow_reference(self) -> bool:
        """Whether computing the reference may import TensorFlow: false for a
        :class:`NumpyReference` (the judges then import no TensorFlow for this spec)."""
        return not isinstance(self.reference, NumpyReference)


@dataclass(frozen=True)
class NumpyReference:
    """A reference computed with NumPy alone, by ``ste_course.references.<module>.<name>(case)``,
    imported when first called.

    ``ste_course.references`` is the grader's side only: the sandbox hides that folder (so a
    student's code can neither call nor read the answers), and nothing in it imports TensorFlow
    (``tests/test_numpy_references.py`` checks both, and that each reference agrees with
    ``ste_utils``, the checked implementation, on drawn cases).
    """

    module: str
    name: str

    def __call__(self, case: Case) -> dict:
        import importlib

        return getattr(importlib.import_module(f"ste_course.references.{self.module}"), self.name)(case)


def get_spec(name: str) -> Spec:
    """The spec registered as ``name`` (importing any ``ste_course.specs`` module registers the
    built-in ones; a course's own checks, ``checks/*.toml``, are declared on demand): see
    :func:`ste_course.specs.registry.lookup`."""
    return lookup(name)


# ------------------------------------------------------------------------------ cases
def tolerance(dtype: str) -> tuple[float, float]:
    """(rtol, atol) for comparing values of ``dtype``: a few units in the last place."""
    return {"float16": (1e-3, 1e-3), "bfloat16": (1.6e-2, 1.6e-2), "float32": (1e-5, 1e-6),
            "float64": (1e-10, 1e-12)}.get(dtype, (1e-5, 1e-6))


def stable_seed(*parts) -> int:
    """A 64-bit seed from strings and ints, stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def draw_cases(spec: Spec, hidden: bool, seed: int) -> list:
    return spec.cases(np.random.default_rng(seed if hidden else VISIBLE_SEED), hidden)


def encode_case(case: Case) -> dict:
    """Plain data for the sandbox; entries named in ``hidden_inputs`` must be removed first."""
    out = {}
    for key, value in case.items():
        if isinstance(value, np.ndarray):
            out[key] = {"array": encode_array(value)}
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = {"scalar": value}
        else:
            raise TypeError(f"case entry {key!r} must be an array or a scalar, got {type(value).__name__}")
    return out


def decode_case(obj: dict) -> Case:
    case = {}
    for key, value in obj.items():
        if "array" in value:
            values, dtype = decode_array(value["array"])
            case[key] = values.astype(_numpy_dtype(dtype))
        else:
            case[key] = value["scalar"]
    return case


def _numpy_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def student_case(spec: Spec, case: Case) -> Case:
    return {k: v for k, v in case.items() if k not in spec.hidden_inputs}


# ------------------------------------------------------------------------------ judging
def _fmt(v: float) -> str:
    if np.isnan(v):
        return "nan"
    return f"{v:.6g}"


def compare(spec: Spec, case: Case, expected: dict, evidence) -> list:
    """Messages describing what is wrong (empty when the evidence matches the reference)."""
    where = spec.describe(case)
    if not isinstance(evidence, dict):
        return [f"{spec.summary}: no result was recorded for {where}."]
    if "forbidden" in evidence:
        return [f"This part must be your own implementation; it called {str(evidence['forbidden'])[:120]}."]
    if "error" in evidence:
        error = evidence["error"] if isinstance(evidence["error"], str) else "an error"
        return [f"On {where} your code raised {error[:300]}"]
    outputs = evidence.get("outputs")
    if not isinstance(outputs, dict):
        return [f"{spec.summary}: no result was recorded for {where}."]
    got = {}
    for name in expected:
        if name not in outputs:
            return [f"On {where} no {name} was returned."]
        try:
            got[name] = decode_array(outputs[name])
        except EvidenceError as err:
            return [f"On {where} the {name} is not an array of numbers ({err})."]
    if spec.compare is not None:
        return spec.compare(case, expected, got)
    messages = []
    for name, exp in expected.items():
        exp_values = np.asarray(exp)
        values, dtype = got[name]
        exp_dtype = _dtype_name(exp)
        if spec.check_dtype and dtype != exp_dtype:
            messages.append(f"On {where} the {name} should have dtype {exp_dtype} (the input's); "
                            f"yours has {dtype}.")
            continue
        if tuple(values.shape) != tuple(exp_values.shape):
            messages.append(f"On {where} the {name} should have shape {tuple(exp_values.shape)}; "
                            f"yours has {tuple(values.shape)}.")
            continue
        rtol, atol = tolerance(exp_dtype)
        exp64 = exp_values.astype(np.float64)
        ok = np.isclose(values, exp64, rtol=rtol, atol=atol, equal_nan=True)
        if not ok.all():
            index = int(np.flatnonzero(~ok.ravel())[0])
            e, g = float(exp64.ravel()[index]), float(values.ravel()[index])
            reason = spec.explain(case, name, index, e, g) if spec.explain else None
            n_bad = int((~ok).sum())
            tail = f" ({n_bad} of {ok.size} elements differ)" if n_bad > 1 else ""
            messages.append(reason + tail if reason else
                            f"On {where} the {name} at position {np.unravel_index(index, exp64.shape)} "
                            f"should be {_fmt(e)}; yours is {_fmt(g)}{tail}.")
    return messages


def _dtype_name(value) -> str:
    dtype = getattr(value, "dtype", None)
    return getattr(dtype, "name", None) or np.asarray(value).dtype.name


__all__ = ["Spec", "NumpyReference", "SPECS", "register", "get_spec", "tolerance", "stable_seed", "draw_cases", "encode_case",
           "decode_case", "student_case", "compare", "MAX_MESSAGES", "VISIBLE_SEED", "SOLUTION_HIDDEN_SEED"]
