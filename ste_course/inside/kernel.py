"""The kernel's half of the checks: what ``check(...)`` does in the kernel that runs the test cell.

A test cell calls ``check(my_ste_sign, "ste_sign/gradient")`` (or ``hidden=True`` between the
hidden-test markers). Two modes:

* **Grading** (inside the sandbox): the harness installs a :class:`GradingSession` holding the
  cases the grader drew for this submission; ``check`` only runs the student's code on them
  (:func:`collect`) and keeps the evidence as plain data, which the harness writes out at the end
  of the cell. Nothing is judged here: the grader judges outside (:mod:`ste_course.grading.judge`).
* **The student's own kernel** (Jupyter, Validate, ``ste-course check``): draw the visible cases
  (or the instructor's stand-in hidden ones), run, compare with ``ste_utils`` and raise
  :class:`CheckFailed`, whose display is the message alone (no frames of this package).

Imports only the shared specs (:mod:`ste_course.specs.base`) and the evidence encoding.
"""

from __future__ import annotations

import sys
import textwrap
import traceback
from dataclasses import dataclass, field
from typing import Optional

from ste_course.evidence import encode_array
from ste_course.inside.forbid import Tripwire, reference_codes
from ste_course.specs import base
from ste_course.specs.declarative import RUNNERS, runner_spec
from ste_course.specs.base import (MAX_MESSAGES, SOLUTION_HIDDEN_SEED, Case, Spec, compare, decode_case,
                                   draw_cases, get_spec, student_case)

WIDTH = 88  # message lines are wrapped to this width: the Validate dialog cuts longer ones


# ------------------------------------------------------------------------------ evidence
def collect(spec: Spec, obj, case: Case, forbid=(), codes=None, wire: Optional[Tripwire] = None) -> dict:
    """Run the student's code on one case and return plain-data evidence (never raises Exception).

    With ``forbid`` (names like ``"ste_utils.ste_sign"``), a call into one of those reference
    functions while the student's code runs, from any thread, is recorded instead of the
    outputs (:class:`~ste_course.inside.forbid.Tripwire`); pass an active ``wire`` to share one
    tripwire between the cases of a call (setting one up costs ~0.1 s).
    """
    if forbid and wire is None:
        with Tripwire(codes or reference_codes(), forbid) as wire:
            evidence = collect(spec, obj, case, forbid, codes, wire)
        return {"forbidden": wire.hits[0]} if wire.hits else evidence
    try:
        if wire is not None:
            seen = len(wire.hits)
            try:
                outputs = spec.run(obj, case)
            except Exception:
                if len(wire.hits) == seen:
                    raise
            if len(wire.hits) > seen:
                return {"forbidden": wire.hits[seen]}
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


# ------------------------------------------------------------------------------ grading session
@dataclass
class GradingSession:
    """Installed by the sandbox harness: cases per test cell in, evidence per call out."""

    calls: dict  # cell index (str) -> list of {"spec": name, "cases": [encoded case], "forbid": [name]}
    cell: int = -1
    reference_codes: Optional[dict] = None  # from reference_codes(), taken before student code
    evidence: dict = field(default_factory=dict)  # cell index (str) -> list of {"spec", "results"}
    forbid: set = field(default_factory=set)  # every label a part of this notebook forbids
    wire: Optional[Tripwire] = None  # armed by arm() for the whole run
    reported: int = 0  # wire.calls already reported by report()

    def where(self) -> int:
        return self.cell

    def arm(self, forbid=None) -> None:
        """Make every function a part of this notebook forbids a tripwire for the whole run
        (every cell, every thread), before the first student cell runs. ``forbid``: the labels
        (default: those of every planned call)."""
        if forbid is None:
            forbid = {f for planned in self.calls.values() for p in planned for f in p.get("forbid") or ()}
        self.forbid = {str(f) for f in forbid}
        if self.forbid:
            self.wire = Tripwire(self.reference_codes or reference_codes(), self.forbid, self.where).arm()

    def report(self) -> list:
        """The forbidden calls made outside the test parts since the last report (``{"function",
        "cell", "what"}``), after checking that every stub is still in place; the harness writes
        them with a cell's end, and each costs every part that forbids the function. A call
        while a part runs is that part's evidence (:func:`check`), costing that part only."""
        if self.wire is None:
            return []
        self.wire.verify()
        calls = self.wire.calls[self.reported:]
        self.reported += len(calls)
        return [{k: c[k] for k in ("function", "cell", "what")} for c in calls if not c["part"]]

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


def snapshot() -> dict:
    """The genuine state of the checking code (this package's checking modules, the spec
    modules, every registered spec's fields), taken before any student code runs."""
    names = sorted(n for n in sys.modules if n in ("ste_course.checks", "ste_course.evidence")
                   or n.startswith(("ste_course.inside.", "ste_course.specs")))
    return {"modules": [(sys.modules[n], dict(vars(sys.modules[n]))) for n in names],
            "specs": {name: (spec, dict(vars(spec))) for name, spec in base.SPECS.items()}}


def restore(state: dict, session: Optional[GradingSession]):
    """Put back what :func:`snapshot` took (whatever student code re-bound or set on a spec),
    install ``session`` and return the genuine :func:`check` for the test cell's namespace."""
    for module, namespace in state["modules"]:
        sys.modules[module.__name__] = module
        vars(module).update(namespace)
    base.SPECS.clear()
    for name, (spec, fields) in state["specs"].items():
        vars(spec).update(fields)
        base.SPECS[name] = spec
    _install_session(session)
    return check


# ------------------------------------------------------------------------------ the student's view
class CheckFailed(AssertionError):
    """A check that failed in the student's kernel. IPython (Jupyter, nbgrader's Validate) shows
    :meth:`_render_traceback_`, the message alone: the student's cell is shown above it, and the
    grading package's frames would only push the message out of view."""

    def _render_traceback_(self) -> list:
        return str(self).splitlines()


def failure_message(summary: str, messages: list) -> str:
    """``summary`` then one bullet per distinct message, each wrapped to :data:`WIDTH`."""
    distinct = list(dict.fromkeys(messages))[:MAX_MESSAGES]
    lines = [f"Check failed: {summary}"]
    for message in distinct:
        lines += textwrap.wrap(message, WIDTH, initial_indent="- ", subsequent_indent="  ",
                               break_long_words=True, break_on_hyphens=False)
    return "\n".join(lines)


def check(obj, spec_name: str, hidden: bool = False) -> None:
    """Check ``obj`` (the student's function, model, ...) against the spec ``spec_name``.

    In a student's kernel this raises :class:`CheckFailed` with what to fix; during grading it
    records evidence for the grader to judge outside the sandbox.
    """
    __tracebackhide__ = True  # noqa: F841 (IPython and pytest hide this frame)
    session = _SESSION
    if session is not None:
        planned = session.next_call(spec_name)
        if planned is None:
            return
        # A check the course declared (checks/*.toml): the grader names its generic runner.
        spec = runner_spec(spec_name, planned["run"]) if planned.get("run") in RUNNERS else get_spec(spec_name)
        forbid = planned.get("forbid") or ()
        cases = [decode_case(c) for c in planned["cases"]]
        if forbid:
            wire = session.wire if session.wire is not None and set(forbid) <= session.forbid else None
            if wire is None:  # a session without the whole run's wire (never when grading)
                wire = Tripwire(session.reference_codes or reference_codes(), forbid, session.where)
                part = wire
            else:
                part = wire.part()
            seen = len(wire.hits)
            with part:
                results = [collect(spec, obj, case, forbid, wire=wire) for case in cases]
            if len(wire.hits) > seen:  # e.g. the genuine code put back: found when the part ends
                results = [r if "forbidden" in r else {"forbidden": wire.hits[seen]} for r in results]
        else:
            results = [collect(spec, obj, case) for case in cases]
        session.evidence[str(session.cell)].append({"spec": spec_name, "results": results})
        return
    spec = get_spec(spec_name)
    cases = draw_cases(spec, hidden, SOLUTION_HIDDEN_SEED)
    messages = []
    for case in cases:
        evidence = collect(spec, obj, student_case(spec, case))
        # Round-trip through plain data exactly as grading does.
        messages += compare(spec, case, spec.reference(case), evidence)
        if len(set(messages)) >= MAX_MESSAGES:
            break
    if messages:
        raise CheckFailed(failure_message(spec.summary, messages)) from None
    print(f"OK: {spec.summary} ({len(cases)} case{'s' if len(cases) != 1 else ''})")


__all__ = ["check", "collect", "CheckFailed", "GradingSession", "snapshot", "restore", "failure_message"]
