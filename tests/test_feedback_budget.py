"""A feedback page has a budget (issue 21, red team round 2, "stopping the class").

A notebook within preflight's caps (200,000 characters a cell, 5 MB in all) made a 124 MB page:
25 code cells of ``'&(' * 95000``, each character its own Pygments span (about 26 bytes of
HTML), rendered in the recording thread (80 s, 3.2 GB in the grader); 989 cells each printing
``'&' * 5000`` made 25 MB. :func:`~ste_course.record.feedback.feedback_notebook` now shows at
most ``CELL_CHARS`` of a cell and ``PAGE_CHARS`` over the page, the rest replaced by a note
saying how much was left out; tests, verdicts and comments are never cut. The course's own
pages are rendered exactly as before (nothing of them is cut). Bounding a page's size bounds
its time: the cost is Pygments and nh3 over the page, linear in its size.

The example class is judged here without running it: each submission of
``examples/submissions`` prepared against ``solutions/`` and turned into the page's cells
(:func:`ste_course.grading.steps._feedback_cells`, no outputs), every test passed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ste_course.record.feedback as feedback
from ste_course.authoring.source import load_assignments
from ste_course.grading.preflight import PreflightError, parse_submission, prepare
from ste_course.grading.steps import _feedback_cells
from ste_course.record.feedback import feedback_notebook, render_feedback
from ste_course.record.recorder import NotebookResult

ROOT = Path(__file__).resolve().parent.parent
SOURCES = load_assignments(ROOT / "solutions")


def _parses(path: Path) -> bool:
    try:
        parse_submission(path.read_bytes(), path.name)
    except PreflightError:  # examples/submissions/broken: an invalid row, no page of cells
        return False
    return True


EXAMPLES = [p for p in sorted((ROOT / "examples" / "submissions").glob("*/*/*.ipynb")) if _parses(p)]
MAX_PAGE_BYTES = 3 * 2**20  # the course's largest page is about 60 KB
LEFT_OUT = re.compile(r"\.\.\. [0-9,]+ more (characters?|cells?)")


def _example(path: Path) -> NotebookResult:
    """The example submission at ``path`` as the recorder holds it, every graded cell passed."""
    student, assignment = path.parts[-3], path.parts[-2]
    source = next(s for s in SOURCES[assignment] if s.name == path.stem)
    prepared = prepare(source, parse_submission(path.read_bytes(), path.name))
    cells = [{"grade_id": c.grade_id, "points": c.points, "max_points": c.points, "messages": [],
              "manual": c.cell_type != "code"} for c in source.grade_cells]
    return NotebookResult(student, assignment, path.stem, sum(c["points"] for c in cells),
                          sum(c["points"] for c in cells), "ok", cells=cells,
                          feedback_cells=_feedback_cells(source, prepared, [], str))


def _attack(cells: list, at: int | None = 4) -> NotebookResult:
    """The complete 03_ste submission with ``cells`` (kind, text) of the student's inserted at
    ``at`` (as b1/mk.py of the red team put them; ``None``: at the end)."""
    result = _example(ROOT / "examples" / "submissions" / "complete" / "03_ste" / "03_ste.ipynb")
    added = [{"kind": kind, "text": text, "grade_id": None} for kind, text in cells]
    at = len(result.feedback_cells) if at is None else at
    result.feedback_cells[at:at] = added
    return result


def _shown_code(nb) -> list:
    return [c.source for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: "/".join(p.parts[-3:-1]))
def test_the_example_class_pages_are_not_cut(path, monkeypatch):
    result = _example(path)
    nb = feedback_notebook(result)
    assert _shown_code(nb) == [c["text"] for c in result.feedback_cells if c["kind"] in ("code", "test")]
    page = render_feedback(result)
    assert not LEFT_OUT.search(page)
    monkeypatch.setattr(feedback, "PAGE_CHARS", 10**12)
    monkeypatch.setattr(feedback, "CELL_CHARS", 10**12)
    assert render_feedback(result) == page  # byte for byte the page without any budget


def test_the_example_class_is_well_inside_the_budget():
    """The margin: the course's largest page and cell against the budget (at least five times)."""
    results = [_example(p) for p in EXAMPLES]
    largest_cell = max(len(c["text"]) for r in results for c in r.feedback_cells)
    largest_page = max(sum(len(c["text"]) + feedback.CELL_COST for c in r.feedback_cells) for r in results)
    assert 5 * largest_cell <= feedback.CELL_CHARS and 5 * largest_page <= feedback.PAGE_CHARS, \
        (largest_cell, largest_page)


ATTACKS = {
    "25 cells of &( x 95000": [("code", "#\n" + "&(" * 95000)] * 25,  # b2/subsB's cells
    "989 cells printing & x 5000": [("code", "print('&' * 5000)"), ("output", "&" * 5000)] * 989,
    "many medium cells": ([("code", "<(" * 4000), ("output", "&<" * 2500)] * 300
                          + [("code", "")] * 200 + [("markdown", "$a^{b}$ " * 20_000)] * 3
                          + [("code", "%" * 150_000)] * 3),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_a_page_has_a_budget(name):
    result = _attack(ATTACKS[name])
    page = render_feedback(result)
    size = len(page.encode())
    assert size < MAX_PAGE_BYTES, size
    assert LEFT_OUT.search(page)
    assert render_feedback(result) == page  # deterministic: the recorder compares bytes
    # the instructor's tests and every verdict are all there, after the student's cells
    tests = [c["text"] for c in result.feedback_cells if c["kind"] == "test"]
    nb = feedback_notebook(result)
    assert [s for s in _shown_code(nb) if s in tests] == tests
    assert page.count("class=\"verdict") + page.count("class='verdict") == len(result.cells)


def test_what_is_left_out_is_counted():
    """A cell over ``CELL_CHARS`` shows its start and says how much more it had; cells past the
    page's budget make one note with their number and characters (their outputs counted too)."""
    big = "a" * (feedback.CELL_CHARS + 1234)
    nb = feedback_notebook(_attack([("code", big), ("output", big)]))
    code = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("a"))
    assert code.source == big[:feedback.CELL_CHARS]
    notes = [o["data"]["text/html"] for o in code.outputs if o["output_type"] == "display_data"]
    assert notes == ["<div class='manual'>... 1,234 more characters not shown</div>"] * 2
    total = 1 + feedback.PAGE_CHARS // (feedback.CELL_COST + 10)
    result = _attack([("code", "b" * 10), ("output", "c" * 5)] * total, at=None)
    nb = feedback_notebook(result)
    shown = [c for c in nb.cells if c.cell_type == "code" and c.source == "b" * 10]
    outputs = sum(o.get("text") == "c" * 5 for c in shown for o in c.outputs)
    assert 0 < len(shown) < total
    assert nb.cells[-1].source == ("<div class='manual'>... {:,} more cells ({:,} characters) not shown</div>"
                                   .format(total - len(shown), 10 * (total - len(shown)) + 5 * (total - outputs)))
