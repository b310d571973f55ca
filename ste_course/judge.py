"""Judge evidence outside the sandbox: draw each student's cases, compare with ``ste_utils``.

The only thing taken from the sandbox is plain data (per-cell events with evidence arrays);
each graded cell earns its points when every check call it makes returned evidence matching the
reference on every case. Cases are drawn from a seed made of the instructor's secret, the
student, the notebook, the cell and the call, so re-grading gives the same grade and two
students get different inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ste_course.checks import compare, draw_cases, encode_case, get_spec, stable_seed, student_case
from ste_course.source import SourceNotebook, hidden_lines


@dataclass
class Plan:
    """For each run index of a graded cell: the check calls and their full cases."""

    calls: dict  # run index (str) -> [{"spec": name, "cases": [encoded student cases]}]
    full: dict  # run index (str) -> [(spec name, [full case])]
    grade_ids: dict  # run index (str) -> grade_id


def plan(source: SourceNotebook, prepared, secret: str, student: str) -> Plan:
    by_id = source.by_id()
    calls, full, grade_ids = {}, {}, {}
    for cell in prepared.code_cells:
        original = by_id.get(cell.grade_id) if cell.locked else None
        if original is None or not original.grade:
            continue
        key = str(cell.index)
        grade_ids[key] = original.grade_id
        calls[key], full[key] = [], []
        for k, call in enumerate(original.checks):
            spec = get_spec(call.spec)
            seed = stable_seed(secret, student, source.assignment, source.name, original.grade_id, k)
            cases = draw_cases(spec, call.hidden, seed)
            calls[key].append({"spec": call.spec, "cases": [encode_case(student_case(spec, c)) for c in cases],
                               "forbid": list(original.forbid)})
            full[key].append((call.spec, cases))
    return Plan(calls, full, grade_ids)


@dataclass
class CellGrade:
    grade_id: str
    points: float
    max_points: float
    messages: list = field(default_factory=list)


def scrubber(source: SourceNotebook):
    """A function removing every hidden-test line of ``source`` from a text."""
    lines = sorted({l for c in source.cells for l in hidden_lines(c.source)}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for line in lines:
            text = text.replace(line, "[hidden test]")
        return text

    return scrub


def judge(source: SourceNotebook, the_plan: Plan, events: list, stop_reason: str | None) -> list:
    """Per graded cell of ``source``: the points earned and what to fix."""
    ends = {}
    for event in events:
        if isinstance(event, dict) and event.get("event") == "end" and isinstance(event.get("cell"), int):
            ends.setdefault(str(event["cell"]), event)  # the first report of a cell counts
    by_grade_id = {gid: key for key, gid in the_plan.grade_ids.items()}
    grades = []
    for original in source.grade_cells:
        key = by_grade_id.get(original.grade_id)
        result = CellGrade(original.grade_id, 0.0, original.points)
        grades.append(result)
        end = ends.get(key) if key is not None else None
        if end is None:
            result.messages.append("This test did not run" + (f": {stop_reason}." if stop_reason else
                                   " (the notebook stopped before reaching it)."))
            continue
        evidence = end.get("evidence") if isinstance(end.get("evidence"), list) else []
        messages = []
        for k, (spec_name, cases) in enumerate(the_plan.full[key]):
            spec = get_spec(spec_name)
            got = evidence[k] if k < len(evidence) and isinstance(evidence[k], dict) else None
            if got is None or got.get("spec") != spec_name or not isinstance(got.get("results"), list) \
                    or len(got["results"]) != len(cases):
                error = end.get("error")
                messages.append(f"{spec.summary}: no result was recorded" +
                                (f" (the cell raised {str(error)[:200]})" if error else "") + ".")
                continue
            for case, ev in zip(cases, got["results"]):
                messages += compare(spec, case, spec.reference(case), ev)
                if len(messages) >= 4:
                    break
        if messages:
            result.messages = messages[:4]
        else:
            result.points = original.points
    return grades
