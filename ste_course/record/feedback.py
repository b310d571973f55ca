"""Feedback pages that read like the course: nbconvert's rendering, sanitised, without scripts.

A notebook's feedback is rebuilt as a notebook (the instructions and the student's markdown,
their code with its output, each test cell's visible source with its verdict) and rendered by
nbconvert's ``HTMLExporter`` (markdown rendered, code highlighted by Pygments). Maths
(``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``) becomes MathML on the server
(latex2mathml), which browsers display natively, so the page needs no script at all.

Markdown (the instructor's and the student's alike: a page cannot tell them apart once stored)
is made inert before nbconvert sees it (:func:`ste_course.record.sanitize.student_html`: no
``class``, ``id`` or ``style``, so nothing can look like the grader's verdict), a written answer
framed as the student's; everything that reaches the page is then sanitised again with nh3
(Ammonia) against an allowlist: no ``<script>``, no ``<style>`` or ``style=`` from content, no
event handlers, no URL scheme but ``http``, ``https`` and ``mailto`` (so no ``javascript:``), no
SVG, no images; the page also carries a Content-Security-Policy that forbids scripts. The header (student id, assignment, score, each
part's score as the gradebook holds it, hand edits marked, written answers still waiting for a
hand grade said so, lateness) and the grader's comments are escaped text. A page is a view of
the gradebook: :func:`ste_course.record.recorder.refresh_feedback` renders it again whenever the
gradebook changed by hand (``ste-course feedback``, ``ste-course return-feedback``).

A page shows at most :data:`CELL_CHARS` of a cell's text and :data:`PAGE_CHARS` over the page (code,
outputs, markdown), the rest replaced by a plain note of how much was left out; tests' visible
source, verdicts and comments are never cut, and no page of the course comes near the budget.

Hidden tests never reach here: test cells arrive as their visible source and every output and
message was scrubbed by the judge (:func:`ste_course.grading.judge.scrubber`).
"""

from __future__ import annotations

import html
from functools import lru_cache

from ste_course.record.sanitize import clean_html, framed, math_to_mathml, student_html  # noqa: F401

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src https: http:"

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.5}
pre{background:#f6f8fa;padding:.6rem;border-radius:4px;overflow-x:auto;white-space:pre-wrap}
.prompt{display:none}.anchor-link{display:none}
.output_area pre{background:#fffbe6}
.verdict{border-left:4px solid #999;padding:.2rem .8rem;margin:.4rem 0 1.2rem}
.verdict.pass{border-color:#2a7d2a}.verdict.fail{border-color:#b22}
.score{font-weight:bold}.manual{color:#555;font-style:italic}
table.parts{border-collapse:collapse}table.parts td,table.parts th{border:1px solid #ccc;padding:.2rem .6rem}
math[display=block]{margin:.6rem 0}
.student-text{border:1px dashed #8a6d3b;background:#fcf8e3;padding:.2rem .8rem;margin:.4rem 0}
"""


def sanitize(fragment: str) -> str:
    """The grader's page markup with only the allowlisted HTML and MathML kept (classes too:
    student text arrives already cleaned of them, :func:`~ste_course.record.sanitize.student_html`)."""
    return clean_html(fragment, classes=True)


@lru_cache(maxsize=1)
def _exporter():
    from nbconvert import HTMLExporter
    from nbconvert.exporters.templateexporter import TemplateExporter
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

    class PageExporter(HTMLExporter):
        """nbconvert's HTML exporter without the BeautifulSoup pass it ends with (alt text on
        images, ``tabindex`` on cells) and with :func:`sanitize` (nh3) as the templates'
        ``clean_html`` filter in place of nbconvert's (bleach's pure-Python parser): together
        most of a page's cost, on markup that :func:`sanitize` cleans again as a whole anyway.
        The other filters it registers are nbconvert's."""

        def from_notebook_node(self, nb, resources=None, **kw):
            resources = self._init_resources(resources)
            self.register_filter("clean_html", sanitize)
            info = nb.metadata.get("language_info", {})
            lexer = info.get("pygments_lexer", info.get("name"))
            self.register_filter("highlight_code", Highlight2HTML(pygments_lexer=lexer, parent=self))
            self.register_filter("filter_data_type", WidgetsDataTypeFilter(
                notebook_metadata=self._nb_metadata, parent=self, resources=resources))
            return TemplateExporter.from_notebook_node(self, nb, resources, **kw)

    return PageExporter(template_name="basic", exclude_input_prompt=True, exclude_output_prompt=True)


@lru_cache(maxsize=1)
def _highlight_css() -> str:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter().get_style_defs(".highlight")


def _verdict(grade: dict, part: tuple | None, waiting: bool = False) -> str:
    """A graded cell's verdict as HTML (escaped): the gradebook's score when there is one; a
    written answer without a hand grade yet says so instead of a score."""
    points, maximum = grade.get("points", 0), grade.get("max_points", 0)
    manual = False
    if part is not None:
        points, maximum, manual = part
    if waiting:
        return f"<div class='verdict'><p class='score'>{_waiting(points, maximum)}</p></div>"
    ok = points >= maximum
    messages = "".join(f"<li>{html.escape(str(m))}</li>" for m in grade.get("messages", []))
    note = f" <span class='manual'>({'graded' if grade.get('manual') else 'adjusted'} by hand)</span>" if manual else ""
    return (f"<div class='verdict {'pass' if ok else 'fail'}'><p class='score'>{points:g} / {maximum:g} "
            f"points{note}</p>{'<ul>' + messages + '</ul>' if messages else ''}</div>")


def _points(n: float) -> str:
    return f"{n:g} point{'' if n == 1 else 's'}"


def _waiting(points: float, maximum: float) -> str:
    """A written answer's score while it waits for the grader."""
    return f"{points:g} / {_points(maximum)} so far, waiting for a hand grade"


# What a page shows of the text a student can make long (issue 21, red team: 25 cells of
# '&(' * 95000, within preflight's caps, made a 124 MB page in 80 s and 3.2 GB: Pygments writes a
# span of about 26 bytes per character of such code). The course's largest page has 12,707
# characters of text, its largest cell 2,102 (the example class, measured); a cut ends in a note.
CELL_CHARS = 20_000  # of one cell's text (code, output, markdown); a test's visible source is never cut
PAGE_CHARS = 100_000  # over the page, each shown cell also counting CELL_COST (its frame)
CELL_COST = 200


class _Budget:
    """What is left of :data:`PAGE_CHARS` as the page is built, in order, and what was left out
    since the last note: the first cell that overruns it is cut, the cells after it (until
    something never cut: a test, a verdict, a comment) make one note."""

    def __init__(self):
        self.left, self.hidden, self.cells = PAGE_CHARS, 0, 0

    def take(self, text: str, cell: bool = True):
        """``(shown, cut)``: the part of ``text`` (a cell's, or an output's) the page shows
        (``None``: none of it, counted for the next :meth:`note`) and how many of its characters
        it leaves out."""
        if self.left < CELL_COST:
            self.leave_out(text, cell)
            return None, 0
        keep = min(len(text), CELL_CHARS, self.left - CELL_COST)
        self.left -= CELL_COST + keep
        return text[:keep], len(text) - keep

    def leave_out(self, text: str, cell: bool = True) -> None:
        """Count ``text`` (a cell, or the output of one left out) for the next :meth:`note`."""
        self.hidden, self.cells = self.hidden + len(text), self.cells + cell

    def note(self) -> str | None:
        """The note (HTML) for what was left out since the last one, if anything was."""
        cells, chars = self.cells, self.hidden
        self.hidden, self.cells = 0, 0
        if not cells:
            return _left_out(chars) if chars else None
        return _note(f"... {cells:,} more cell{'' if cells == 1 else 's'} ({_characters(chars)}) not shown")


def _characters(n: int) -> str:
    return f"{n:,} character{'' if n == 1 else 's'}"


def _note(text: str) -> str:
    return f"<div class='manual'>{html.escape(text)}</div>"


def _left_out(chars: int) -> str:
    """The note (HTML) that ends a cut cell: ``... 182,000 more characters not shown``."""
    return _note(f"... {chars:,} more character{'' if chars == 1 else 's'} not shown")


def feedback_notebook(result, parts: dict | None = None):
    """The feedback as an nbformat notebook: ``result.feedback_cells`` in order, each test cell
    followed by its verdict, the markdown's maths as MathML; of code, outputs and markdown at most
    :data:`CELL_CHARS` per cell and :data:`PAGE_CHARS` over the page, the rest replaced by a note
    saying how much was left out (:class:`_Budget`; tests, verdicts and comments are never cut)."""
    from nbformat import from_dict

    def markdown(source):  # cells built as plain nodes: nbformat's new_*_cell validates each (a fifth of a page)
        return from_dict({"cell_type": "markdown", "metadata": {}, "source": source})

    def shown_html(fragment):  # an output of the grader's: a verdict, a note
        return from_dict({"output_type": "display_data", "metadata": {}, "data": {"text/html": fragment}})

    parts = parts or {}
    scores, comments, waiting = parts.get("scores", {}), parts.get("comments", {}), parts.get("waiting", set())
    grades = {c["grade_id"]: c for c in result.cells}
    nb = from_dict({"nbformat": 4, "nbformat_minor": 5, "cells": [],
                    "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
                                 "language_info": {"name": "python"}}})
    budget = _Budget()

    def add(cell):  # after the note for what was left out before it
        pending = budget.note()
        if pending:
            nb.cells.append(markdown(pending))
        nb.cells.append(cell)
        return cell

    last_code = None  # the code cell an output belongs to; False: one left out (so are its outputs)
    for item in result.feedback_cells:
        kind, text, gid = item.get("kind"), str(item.get("text", "")), item.get("grade_id")
        if kind == "markdown":
            answer = gid in grades or gid in scores  # a written answer: the student's text, framed
            shown, cut = budget.take(text)
            if shown is not None:
                add(markdown(framed(shown, "class") if answer else student_html(shown)))
                if cut:
                    nb.cells.append(markdown(_left_out(cut)))
            last_code = None
            if answer:  # its hand grade, or that it waits
                add(markdown(_verdict(grades.get(gid, {"manual": True}), scores.get(gid), gid in waiting)))
        elif kind == "test":  # the instructor's visible source: never cut
            last_code = add(from_dict({"cell_type": "code", "metadata": {}, "source": text, "outputs": [],
                                       "execution_count": None}))
            if gid is not None:
                last_code.outputs.append(shown_html(_verdict(grades.get(gid, {}), scores.get(gid), gid in waiting)))
        elif kind == "code":
            shown, cut = budget.take(text)
            last_code = False
            if shown is not None:
                last_code = add(from_dict({"cell_type": "code", "metadata": {}, "source": shown, "outputs": [],
                                           "execution_count": None}))
                if cut:
                    last_code.outputs.append(shown_html(_left_out(cut)))
        elif kind == "output" and last_code is not None:
            if last_code is False:  # its cell was left out: so is its output, counted with it
                budget.leave_out(text, cell=False)
            else:
                shown, cut = budget.take(text, cell=False)
                if shown is not None:
                    last_code.outputs.append(from_dict({"output_type": "stream", "name": "stdout", "text": shown}))
                if cut:
                    last_code.outputs.append(shown_html(_left_out(cut)))
        if gid in comments and kind != "test":
            add(markdown(f"<div class='manual'>Grader's comment: {html.escape(str(comments[gid]))}</div>"))
    pending = budget.note()
    if pending:
        nb.cells.append(markdown(pending))
    return nb


def late_by(hours: float | None, short: bool = False) -> str:
    """How late, in the unit that shows it: seconds below a minute, minutes below an hour, hours
    below two days, then days (one decimal, none when whole): ``1.5 minutes`` (``1.5min`` with
    ``short``), never ``0.0 hours``.

    Example: ``late_by(0.025)`` is ``"1.5 minutes"``; ``late_by(30, short=True)`` is ``"30h"``.
    """
    seconds = max(0.0, (hours or 0.0) * 3600.0)
    for size, word, unit in ((86400.0, "day", "d"), (3600.0, "hour", "h"), (60.0, "minute", "min")):
        if seconds >= (2 * size if unit == "d" else size):
            value = round(seconds / size, 1)
            break
    else:
        value, word, unit = round(seconds), "second", "s"
    number = f"{value:g}"
    return f"{number}{unit}" if short else f"{number} {word}{'' if value == 1 else 's'}"


def _header(result, parts: dict, score: float) -> str:
    e = html.escape
    scores, waiting = parts.get("scores", {}), parts.get("waiting", set())

    def points(gid, s, m, manual):
        return _waiting(s, m) if gid in waiting else f"{s:g} / {m:g}{' (by hand)' if manual else ''}"

    rows = "".join(f"<tr><td>{e(gid)}</td><td>{points(gid, *part)}</td></tr>"
                   for gid, part in sorted(scores.items()))
    pending = sum(scores[gid][1] for gid in waiting if gid in scores)
    lines = [f"<h1>{e(result.assignment)} / {e(result.notebook)}</h1>",
             f"<p>Student: <b>{e(result.student)}</b></p>",
             f"<p class='score'>Score: {score:g} / {result.max_score:g}"
             + (f" ({_points(pending)} waiting for a hand grade)" if pending else "") + "</p>"]
    if rows:
        lines.append(f"<table class='parts'><tr><th>Part</th><th>Points</th></tr>{rows}</table>")
    if result.late == "yes":
        lines.append(f"<p><b>Late</b> by {late_by(result.hours_late)}: {_points(result.penalty or 0.0)} deducted.</p>")
    if result.status != "ok" or result.reason:
        lines.append(f"<p><b>Status:</b> {e(result.status)}{': ' + e(result.reason) if result.reason else ''}</p>")
    return "\n".join(lines)


def render_feedback(result, parts: dict | None = None) -> str:
    """The feedback page of one graded notebook (:class:`~ste_course.record.recorder.NotebookResult`),
    ``parts`` from :func:`ste_course.record.gradebook.part_scores` (hand edits included). Static HTML:
    no script, every piece sanitised."""
    parts = parts or {}
    score = result.score
    if parts.get("scores"):  # the gradebook's scores (hand edits included) are what the student is told
        score = max(0.0, sum(s for s, _, _ in parts["scores"].values()) - (result.penalty or 0.0))
    body, _ = _exporter().from_notebook_node(feedback_notebook(result, parts))
    title = html.escape(f"{result.assignment} feedback for {result.student}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>{title}</title><style>{_highlight_css()}{_STYLE}</style></head>\n<body>\n"
            f"{sanitize(_header(result, parts, score))}\n{sanitize(body)}\n</body></html>\n")
