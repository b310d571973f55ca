"""Checking helpers for test cells: one source for every check.

A test cell calls :func:`check` with the student's object and the name of a *spec*::

    check(my_ste_sign, "ste_sign/gradient")               # visible: fixed cases
    ### BEGIN HIDDEN TESTS
    check(my_ste_sign, "ste_sign/gradient", hidden=True)  # hidden: unseen cases
    ### END HIDDEN TESTS

A spec (see :mod:`ste_course.specs`) says how to draw cases, how to run the student's code on a
case (the *evidence*: plain arrays), how to compute the reference with ``ste_utils`` and how to
explain a mismatch. The same spec serves two modes:

* **Student mode** (a kernel, Validate, ``ste-course check``): draw the cases, run the student's
  code, compute the reference, compare, and raise ``AssertionError`` with a message the student
  can act on.
* **Grading mode** (inside the sandbox): the harness installs a :class:`GradingSession` holding
  the cases the grader drew for this student; ``check`` only runs the student's code and records
  the evidence as plain data. The grader judges it outside the sandbox (:mod:`ste_course.judge`)
  with the same spec, so nothing the kernel says about itself is trusted.
"""

from __future__ import annotations

import hashlib
import sys
import traceback
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ste_course.evidence import EvidenceError, decode_array, encode_array

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


SPECS: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    """Add ``spec`` to the registry; names are unique."""
    if spec.name in SPECS:
        raise ValueError(f"a spec named {spec.name!r} is already registered")
    SPECS[spec.name] = spec
    return spec


def get_spec(name: str) -> Spec:
    import ste_course.specs  # noqa: F401  (registers every spec)

    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown check {name!r}; known: {', '.join(sorted(SPECS))}") from None


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


# ------------------------------------------------------------------------------ reference use
def reference_codes() -> dict:
    """``{code object: "ste_utils.<name>"}`` for every function of ``ste_utils`` and the code
    nested in it (closures such as the function ``ste()`` returns). Built once, before any
    student code runs, from the genuine modules, so re-binding a name does not hide a call."""
    import inspect

    import ste_utils

    codes = {}

    def walk(code, label):
        if code in codes:
            return
        codes[code] = label
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                walk(const, label)

    def visit(value, label, depth=0):
        if inspect.isfunction(value):
            walk(value.__code__, label)
        elif inspect.isclass(value) and getattr(value, "__module__", "").startswith("ste_utils"):
            for attr in vars(value).values():
                visit(attr, label, depth + 1)
        elif isinstance(value, (staticmethod, classmethod)):
            visit(value.__func__, label, depth)
        elif isinstance(value, property):
            for f in (value.fget, value.fset, value.fdel):
                visit(f, label, depth)
        elif isinstance(value, (dict, list, tuple)) and depth < 3:  # e.g. PROXIES: name -> Proxy(fn, fn')
            for item in (value.values() if isinstance(value, dict) else value):
                visit(item, label, depth + 1)

    modules = [m for n, m in sorted(sys.modules.items()) if n == "ste_utils" or n.startswith("ste_utils.")]
    for module in modules:
        for name, value in vars(module).items():
            if inspect.ismodule(value):
                continue
            if inspect.isfunction(value) and not value.__module__.startswith("ste_utils"):
                continue  # imported from elsewhere (numpy, keras, ...)
            visit(value, f"ste_utils.{name}")
    return codes


def _run_watching(spec: Spec, obj, case: Case, forbid, codes):
    """``spec.run`` while a profiler notes calls into the forbidden reference functions."""
    watched = {code: label for code, label in codes.items() if label in forbid}
    hits = []

    def hook(frame, event, arg):
        if event == "call" and frame.f_code in watched:
            hits.append(watched[frame.f_code])

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        outputs = spec.run(obj, case)
    finally:
        intact = sys.getprofile() is hook
        sys.setprofile(previous)
    if hits:
        return None, hits[0]
    if not intact:
        return None, "sys.setprofile (the check that watches for reference calls was switched off)"
    return outputs, None


# ------------------------------------------------------------------------------ evidence
def collect(spec: Spec, obj, case: Case, forbid=(), codes=None) -> dict:
    """Run the student's code on one case and return plain-data evidence (never raises Exception).

    With ``forbid`` (names like ``"ste_utils.ste_sign"``), a call into one of those reference
    functions while the student's code runs is recorded instead of the outputs.
    """
    try:
        if forbid:
            outputs, hit = _run_watching(spec, obj, case, set(forbid), codes or reference_codes())
            if hit:
                return {"forbidden": hit}
        else:
            outputs = spec.run(obj, case)
        if not isinstance(outputs, dict):
            raise TypeError(f"spec {spec.name} returned {type(outputs).__name__}")
        return {"outputs": {str(k): encode_array(v) for k, v in outputs.items()}}
    except Exception as err:  # the student's error is evidence, not a crash
        return {"error": _short_error(err)}


def _short_error(err: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(err), err)).strip()
    return text if len(text) <= 300 else text[:297] + "..."


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


# ------------------------------------------------------------------------------ grading session
@dataclass
class GradingSession:
    """Installed by the sandbox harness: cases per test cell in, evidence per call out."""

    calls: dict  # cell index (str) -> list of {"spec": name, "cases": [encoded case], "forbid": [name]}
    cell: int = -1
    reference_codes: Optional[dict] = None  # from reference_codes(), taken before student code
    evidence: dict = field(default_factory=dict)  # cell index (str) -> list of {"spec", "results"}

    def next_call(self, spec_name: str):
        key = str(self.cell)
        done = len(self.evidence.setdefault(key, []))
        planned = self.calls.get(key, [])
        if done >= len(planned):
            return None
        return planned[done]


_SESSION: Optional[GradingSession] = None


def _install_session(session: Optional[GradingSession]) -> None:
    global _SESSION
    _SESSION = session


def check(obj, spec_name: str, hidden: bool = False) -> None:
    """Check ``obj`` (the student's function, model, ...) against the spec ``spec_name``.

    In a student's kernel this raises ``AssertionError`` with what to fix; during grading it
    records evidence for the grader to judge outside the sandbox.
    """
    spec = get_spec(spec_name)
    session = _SESSION
    if session is not None:
        planned = session.next_call(spec_name)
        if planned is None:
            return
        forbid = planned.get("forbid") or ()
        results = [collect(spec, obj, decode_case(c), forbid, session.reference_codes) for c in planned["cases"]]
        session.evidence[str(session.cell)].append({"spec": spec_name, "results": results})
        return
    cases = draw_cases(spec, hidden, SOLUTION_HIDDEN_SEED)
    messages = []
    for case in cases:
        evidence = collect(spec, obj, student_case(spec, case))
        # Round-trip through plain data exactly as grading does.
        messages += compare(spec, case, spec.reference(case), evidence)
        if len(messages) >= MAX_MESSAGES:
            break
    if messages:
        raise AssertionError(f"{spec.summary}\n- " + "\n- ".join(messages[:MAX_MESSAGES]))
    print(f"OK: {spec.summary} ({len(cases)} case{'s' if len(cases) != 1 else ''})")


__all__ = ["Spec", "register", "get_spec", "check", "compare", "collect", "GradingSession",
           "stable_seed", "draw_cases", "encode_case", "decode_case", "tolerance"]
