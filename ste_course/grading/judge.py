"""Judge evidence outside the sandbox: draw each student's cases, compare with ``ste_utils``.

The only thing taken from the sandbox is plain data (per-cell events with evidence arrays);
each graded cell earns its points when every check call it makes returned evidence matching the
reference on every case. Cases are drawn from a seed made of the instructor's secret, the
student, the notebook, the cell, the call and the submitted answers, so re-grading gives the
same grade, two students get different inputs and so does a changed submission. Only the
events the harness wrote, in its order, are evidence (:func:`harness_events`).
"""

from __future__ import annotations

import ast
import builtins
import hashlib
from dataclasses import dataclass, field

from ste_course.authoring.source import SourceNotebook, hidden_lines
from ste_course.checks import compare, draw_cases, encode_case, get_spec, stable_seed, student_case
from ste_course.specs.declarative import DECLARED
from ste_course.authoring.derive import part_forbid


@dataclass
class Plan:
    """For each run index of a graded cell: the check calls and their full cases."""

    calls: dict  # run index (str) -> [{"spec": name, "cases": [encoded student cases]}]
    full: dict  # run index (str) -> [(spec name, [full case])]
    grade_ids: dict  # run index (str) -> grade_id
    order: list = field(default_factory=list)  # run indices of the code cells, in the order run
    unanswered: list = field(default_factory=list)  # written answers submitted as released
    sources: dict = field(default_factory=dict)  # run index -> the source the sandbox runs instead
    quiet: bool = False  # hidden assert source runs in the sandbox: no student output reaches a page


def sandbox_source(cell) -> str:
    """What the sandbox runs for the instructor's test ``cell``: a check cell's hidden blocks
    replaced by their ``check(...)`` calls alone (the grader draws the inputs; nothing else of a
    hidden block is needed, so nothing else of it enters the sandbox); any other cell as it is.

    Each hidden block becomes its calls, one statement a line at the block's indentation
    (``ast.unparse``); a statement of the block that is not a check call is left out."""
    if not cell.checks or "BEGIN HIDDEN TESTS" not in cell.source:
        return cell.source
    lines = cell.source.split("\n")
    calls = [n for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == "check"]
    out, start = [], None
    for number, line in enumerate(lines, 1):
        if "BEGIN HIDDEN TESTS" in line:
            start = number
        elif "END HIDDEN TESTS" in line and start is not None:
            indent = line[:len(line) - len(line.lstrip())]
            out += [indent + ast.unparse(c) for c in sorted(calls, key=lambda c: (c.lineno, c.col_offset))
                    if start < c.lineno < number]
            start = None
        elif start is None:
            out.append(line)
    return "\n".join(out)


def quiet(source: SourceNotebook) -> bool:
    """Whether ``source`` runs hidden test source in the sandbox (an assert cell with a hidden
    block): the student's code shares the process with it from the first cell on and could
    print it, so no student output, error text or stderr of the run reaches the feedback: only
    pass or fail and the instructor's own messages (:func:`instructor_message`)."""
    return any(c.asserts and "BEGIN HIDDEN TESTS" in c.source for c in source.grade_cells)


def instructor_message(cell, error: str) -> str:
    """For a quiet notebook: ``error`` (an assert cell's) if its message is a string the
    instructor wrote in ``cell`` (``assert ..., "msg"``, ``raise AssertionError("msg")``), else
    only that the test failed, with the exception's name when it is a built-in one."""
    kind, _, message = str(error).partition(":")
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:  # e.g. an IPython magic in the test cell: no message is the instructor's
        tree = ast.Module(body=[], type_ignores=[])
    texts = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    if message.strip() and message.strip() in texts:
        return f"This test failed: {kind}: {message.strip()}"
    name = kind.strip().rsplit(".", 1)[-1]
    builtin = isinstance(getattr(builtins, name, None), type) and issubclass(getattr(builtins, name), BaseException)
    return f"This test failed ({name})." if builtin else "This test failed."


def answers_digest(prepared) -> str:
    """sha256 of the code the student wrote (every unlocked code cell, in order): what a
    submission changes, so that new answers get new hidden inputs."""
    digest = hashlib.sha256()
    for cell in prepared.code_cells:
        if not cell.locked:
            digest.update(cell.source.encode("utf-8", "surrogatepass") + b"\x00")
    return digest.hexdigest()


def plan(source: SourceNotebook, prepared, secret: str, student: str) -> Plan:
    """The cases of every check call of ``prepared``'s graded cells.

    Each call's seed is made of the instructor's secret, the student, the notebook, the cell,
    the call and :func:`answers_digest`: inputs a student printed into their feedback are of no
    use for the next submission (its answers differ, so its inputs do), while the same file
    re-grades to the same grade.
    """
    by_id = source.by_id()
    answers = answers_digest(prepared)
    calls, full, grade_ids = {}, {}, {}
    for cell in prepared.code_cells:
        original = by_id.get(cell.grade_id) if cell.locked else None
        if original is None or not original.grade or original.manual:
            continue
        key = str(cell.index)
        grade_ids[key] = original.grade_id
        calls[key], full[key] = [], []
        forbid = part_forbid(original)  # the hand list and every sibling that gives the answer
        for k, call in enumerate(original.checks):
            spec = get_spec(call.spec)
            seed = stable_seed(secret, student, source.assignment, source.name, original.grade_id, k, answers)
            cases = draw_cases(spec, call.hidden, seed)
            calls[key].append({"spec": call.spec, "cases": [encode_case(student_case(spec, c)) for c in cases],
                               "forbid": forbid, "run": DECLARED.get(call.spec)})
            full[key].append((call.spec, cases))
    sources = {str(c.index): sandbox_source(by_id[c.grade_id]) for c in prepared.code_cells
               if c.locked and c.grade_id in by_id and by_id[c.grade_id].checks}
    return Plan(calls, full, grade_ids, [c.index for c in prepared.code_cells], list(prepared.unanswered),
                sources, quiet(source))


@dataclass
class Stream:
    """The events the harness wrote, in its order; ``tampered`` says why the rest was ignored."""

    events: list
    tampered: str | None = None


def harness_events(events: list, order: list) -> Stream:
    """Keep only the events in the order the harness writes them.

    The harness writes ``start`` then ``end`` for each code cell in ``order``, one cell after the
    other (and ``fatal`` if the notebook could not run). Student code runs in the same process
    and can write on the same channel, so an event out of that order is not evidence: it and
    everything after it are ignored, and so are the events already taken for the cell it names
    (or the cell that was running, if earlier) and every later one. A student who wrote
    ``end`` for their own cell and then made-up reports for the test cells is caught when the
    harness's own ``end`` arrives out of order. What stays is a prefix of the run, never a
    forged cell followed by genuine ones.
    """
    kept, expected = [], 0  # expected: 2 * position in order (+1 once its start is kept)
    for event in events:
        kind = event.get("event") if isinstance(event, dict) else None
        if kind == "fatal":
            kept.append(event)
            return Stream(kept)
        position = expected // 2
        if position < len(order) and kind == ("end" if expected % 2 else "start") \
                and type(event.get("cell")) is int and event["cell"] == order[position]:
            kept.append(event)
            expected += 1
            continue
        named = order.index(event["cell"]) if isinstance(event, dict) and type(event.get("cell")) is int \
            and event["cell"] in order else len(order)
        cut = min(named, position)
        keep_cells = set(order[:cut])
        kept = [e for e in kept if e.get("cell") in keep_cells]
        named = event.get("cell") if isinstance(event, dict) else None
        what = (f"{repr(kind) if kind in ('start', 'end', 'fatal') else 'an event'} for cell "
                f"{named if type(named) is int else '?'}")  # nothing the student wrote is repeated
        return Stream(kept, f"something other than the grader wrote on its channel ({what} out of "
                            "order); nothing from that cell on counts")
    return Stream(kept)


def forbidden_calls(events: list) -> dict:
    """``{function: message}``: the first call of each forbidden reference function the harness
    reported (its ``end`` events' ``forbidden``: the tripwires are armed for the whole run, so a
    call in any cell, from any thread, is there), naming the cell in which it happened."""
    found = {}
    for event in events:
        entries = event.get("forbidden") if event.get("event") == "end" else None
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, dict) or not isinstance(entry.get("function"), str):
                continue
            function, cell = entry["function"][:120], entry.get("cell")
            where = f" in cell {cell}" if type(cell) is int and cell >= 0 else ""
            did = "put back the genuine code of" if entry.get("what") == "restored" else "called"
            found.setdefault(function, f"This part must be your own implementation; your notebook {did} "
                                       f"{function}{where}.")
    return found


@dataclass
class CellGrade:
    grade_id: str
    points: float
    max_points: float
    messages: list = field(default_factory=list)
    manual: bool = False  # a written answer: graded by hand (formgrader), 0 automatic points


def scrubber(source: SourceNotebook):
    """A function removing every hidden-test line of ``source`` from a text."""
    lines = sorted({l for c in source.cells for l in hidden_lines(c.source)}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for line in lines:
            text = text.replace(line, "[hidden test]")
        return text

    return scrub


def judge(source: SourceNotebook, the_plan: Plan, events: list, stop_reason: str | None) -> list:
    """Per graded cell of ``source``: the points earned and what to fix.

    Only the events :func:`harness_events` keeps are evidence (filtering twice is harmless).
    A check cell earns its points when every check call's evidence matches the reference; an
    assert cell (no ``check``: nbgrader's style) when it ran without an error and wrote nothing
    on stderr, as nbgrader's ``determine_grade`` decides (a weaker guarantee: the asserts share
    the kernel with the student's code); a written answer is left for a manual grade, unless it
    was submitted as released: then it is nbgrader's "No response." (0 points, nothing to grade).
    """
    stream = harness_events(events, the_plan.order)
    stop_reason = stream.tampered or stop_reason
    ends = {str(e["cell"]): e for e in stream.events if e.get("event") == "end"}
    calls = forbidden_calls(stream.events)
    by_grade_id = {gid: key for key, gid in the_plan.grade_ids.items()}
    grades = []
    for original in source.grade_cells:
        key = by_grade_id.get(original.grade_id)
        result = CellGrade(original.grade_id, 0.0, original.points, manual=original.manual)
        grades.append(result)
        if original.manual:
            if original.grade_id in the_plan.unanswered:
                result.manual, result.messages = False, ["No response."]
            continue
        end = ends.get(key) if key is not None else None
        if end is None:
            result.messages.append("This test did not run" + (f": {stop_reason}." if stop_reason else
                                   " (the notebook stopped before reaching it)."))
            continue
        evidence = end.get("evidence") if isinstance(end.get("evidence"), list) else []
        messages = [calls[f] for f in part_forbid(original) if f in calls][:1]
        if messages:  # a function this part forbids, called anywhere in the run: 0 points
            result.messages = messages
            continue
        if original.asserts and end.get("error"):
            messages.append(instructor_message(original, end["error"]) if the_plan.quiet
                            else f"This test failed: {str(end['error'])[:300]}")
        elif original.asserts and str(end.get("stderr") or ""):
            messages.append("This test wrote on stderr, which nbgrader counts as a failure" +
                            ("." if the_plan.quiet else f": {str(end['stderr']).strip()[-300:]}"))
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
        if messages and the_plan.quiet and not original.asserts:  # numbers and errors the run chose
            messages = [f"{get_spec(name).summary}: does not match the reference on the grader's inputs."
                        for name, _ in the_plan.full[key]] or messages
        if messages:
            result.messages = messages[:4]
        else:
            result.points = original.points
    return grades
