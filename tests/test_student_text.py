"""Student text never runs and never looks like the grader (issue 21, attacks 2 and 3).

Attack 3: a written answer that uses the feedback page's own classes (``verdict pass``,
``score``) showed a green "2 / 2 points" box and "Score: 12 / 12" that looked exactly like the
grader's. Student markdown is now made inert by one helper (:mod:`ste_course.record.sanitize`):
no ``class``, ``id`` or ``style`` of theirs survives, and a written answer is framed as the
student's. The formgrader side (attack 2) is ``tests/e2e/test_formgrader_student_text.py``.
"""

from __future__ import annotations

import random
import re
import time
from html.parser import HTMLParser

import pytest
from nbconvert.filters.markdown import markdown2html

from ste_course.record.feedback import render_feedback
from ste_course.record.recorder import NotebookResult
from ste_course.record.sanitize import framed, student_html

FAKE_VERDICT = ("My answer.\n\n<div class='verdict pass'><p class='score'>2 / 2 points</p></div>\n\n"
                "<p class=\"score\" style=\"color:green\" id=\"total\">Score: 12 / 12</p>\n\n"
                "<table class='parts'><tr><td>why</td><td>2 / 2</td></tr></table>")
HOSTILE = ("<script>alert(1)</script><img src=x onerror=alert(2)> <svg onload=alert(3)></svg> "
           "[a](javascript:alert(4)) <a href='javascript:alert(5)'>b</a> <iframe src=x></iframe>\n\n"
           "    [c](javascript:alert(6))\n\n`[d](javascript:alert(7))` \\[e](javascript:alert(8))")


class Elements(HTMLParser):
    """Every element as ``(tag, attributes, depth inside the student frame or None)``."""

    def __init__(self):
        super().__init__()
        self.found, self.stack = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        inside = any(a.get("class") == "student-text" for _, a in self.stack)
        self.found.append((tag, attrs, inside))
        if tag not in ("br", "hr", "img", "input", "meta", "link", "mspace", "col"):
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break


def _elements(page: str) -> list:
    parser = Elements()
    parser.feed(page)
    return parser.found


def _page(answer: str) -> str:
    result = NotebookResult("ann", "ps1", "ps1", 0.0, 12.0, "ok", "",
                            cells=[{"grade_id": "why", "points": 0.0, "max_points": 2.0, "messages": [],
                                    "manual": True}],
                            feedback_cells=[{"kind": "markdown", "text": "Why? (2 points)", "grade_id": "why_prompt"},
                                            {"kind": "markdown", "text": answer, "grade_id": "why"}])
    return render_feedback(result, {"scores": {"why": (0.0, 2.0, False)}, "comments": {}, "waiting": {"why"}})


def test_a_written_answer_cannot_dress_as_the_graders_verdict():
    found = _elements(_page(FAKE_VERDICT))
    # the grader's own elements: one verdict (the written answer waits, so not "pass"), one score
    verdicts = [a for _, a, _ in found if "verdict" in (a.get("class") or "").split()]
    assert len(verdicts) == 1 and "pass" not in verdicts[0]["class"], verdicts
    assert len([a for _, a, _ in found if "score" in (a.get("class") or "").split()]) == 2  # header + verdict
    student = [(t, a) for t, a, inside in found if inside]
    assert student, "the answer is inside the student frame"
    assert not [(t, a) for t, a in student if {"class", "id", "style"} & set(a)], student
    assert len([a for _, a, _ in found if (a.get("class") or "") == "student-text"]) == 1


def _inert(fragment: str) -> None:
    for tag, attrs, _ in _elements(fragment):
        assert tag not in ("script", "img", "svg", "iframe", "object", "embed", "style", "form"), tag
        assert not [k for k in attrs if k.startswith("on") or k in ("class", "id", "style", "src")], (tag, attrs)
        assert not (attrs.get("href") or "").strip().lower().startswith("javascript:"), attrs


def test_student_markdown_stays_inert_through_a_second_markdown_pass():
    """formgrader renders the autograded notebook's markdown again: what :func:`framed` wrote
    there must come out of that pass unchanged and inert (one line, one HTML block)."""
    for text in (HOSTILE, FAKE_VERDICT):
        once = framed(text)
        assert "\n" not in once and once.startswith("<div ")
        twice = markdown2html(once)
        assert twice.strip() == once
        _inert(student_html(text))
    assert "javascript:alert(6)" in markdown2html(framed(HOSTILE))  # kept as text, in a code block


def test_maths_is_mathml_and_text_is_kept():
    html = student_html("The window $|x| \\le 1$ and\n\n$$\\int_0^1 x\\,dx$$\n\n**bold** & <b>b</b>")
    assert "<math" in html and "<strong>bold</strong>" in html and "&amp;" in html and "<b>b</b>" in html


# A written answer of unclosed TeX openers (red team, round 2): the regular expression that found
# formulas tried every opener to the end of the text, so one cell of 200,000 characters (the most
# preflight lets through) took 71 s to render, once on the feedback page and again for
# autograded/, while the bounded pipeline's sandboxes waited. The scanner is one pass.
REFERENCE_MATH = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)|\\\((.+?)\\\)",
                            re.S)


def test_the_formula_scanner_finds_what_the_regular_expression_found():
    from ste_course.record.sanitize import _math_spans

    pieces = ["$", "$$", "\\[", "\\]", "\\(", "\\)", "a", " ", "\n", "1", "\\", "x^2"]
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        expected = [(m.start(), m.end(), next(g for g in m.groups() if g is not None),
                     m.group(1) is not None or m.group(2) is not None) for m in REFERENCE_MATH.finditer(text)]
        assert list(_math_spans(text)) == expected, text


@pytest.mark.parametrize("opener", ["\\[", "\\(", "$$", "$a", "\\[\\("])
def test_a_cell_of_unclosed_formulas_renders_in_linear_time(opener):
    from ste_course.record.sanitize import student_html

    text = (opener * 200_000)[:200_000]  # one cell at preflight's limit
    start = time.perf_counter()
    student_html(text)
    assert time.perf_counter() - start < 5.0  # linear: well under a second; the old scan: 71 s


def test_nested_emphasis_is_shown_as_text_in_linear_time():
    # red team, round 3: mistune 3.4 is cubic on nested strong emphasis (40,000 characters: 12.7 s;
    # one cell at preflight's limit: about 25 min); past MAX_EMPHASIS_MARKS the cell is plain text
    from ste_course.record.sanitize import MAX_EMPHASIS_MARKS, student_html

    n = 25_000
    start = time.perf_counter()
    shown = student_html("**a " * n + "b" + " a**" * n)  # 200,001 characters
    assert time.perf_counter() - start < 5.0
    assert "<strong>" not in shown and "**a" in shown
    honest = "A **bold** claim and *an emphasis* on `snake_case`." * 10
    assert honest.count("*") + honest.count("_") < MAX_EMPHASIS_MARKS
    assert "<strong>bold</strong>" in student_html(honest)
