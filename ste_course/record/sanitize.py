"""Student text made inert: the one helper for every place a student's words are shown as HTML.

A written answer is markdown, and both places that show it render markdown to HTML: the
feedback page (nbconvert) and nbgrader's formgrader, whose template renders a markdown cell
with ``markdown2html`` and no sanitising at all (``sanitize_html`` covers outputs only), on a
page that runs scripts with the instructor's session. So the text never reaches either as
markdown. :func:`student_html` renders it here, once, as formgrader would (nbconvert's
``markdown2html``; maths as MathML, which browsers show without a script), cleans the HTML
with nh3 (Ammonia) against an allowlist, and puts the result on a single line: a markdown
renderer (formgrader's, the feedback page's) then sees one HTML block and passes it through
unchanged, so nothing of the student's text is read as markdown twice.

What the allowlist keeps: text formatting, lists, tables, code, links to ``http``, ``https``
and ``mailto`` (no ``javascript:``, no ``data:``), MathML. What it drops: scripts, styles,
event handlers, forms, frames, SVG, images (a beacon to another host), and every ``class``,
``id`` and ``style``: a student cannot dress text as the grader's verdict or formgrader's
controls. :func:`framed` then marks the answer visibly as the student's.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

MATHML_TAGS = {"math", "semantics", "annotation", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace",
               "msup", "msub", "msubsup", "mfrac", "msqrt", "mroot", "mover", "munder", "munderover",
               "mtable", "mtr", "mtd", "mstyle", "mpadded", "mphantom", "menclose", "merror"}
MATHML_ATTRIBUTES = {"display", "xmlns", "mathvariant", "stretchy", "fence", "separator", "lspace",
                     "rspace", "columnalign", "columnspacing", "rowspacing", "displaystyle",
                     "scriptlevel", "accent", "accentunder", "width", "height", "depth",
                     "linethickness", "minsize", "maxsize", "movablelimits", "form", "notation",
                     "symmetric", "largeop", "encoding"}
URL_SCHEMES = {"http", "https", "mailto"}
DROPPED_TAGS = {"img", "map", "area"}
# Maths in markdown: display first, then inline; code spans and fences are left alone.
_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)
_OPENERS = re.compile(r"\$\$|\\\[|\\\(|\$")
# A cell with more * and _ than this is shown as plain text: mistune 3.4 takes cubic time on nested
# strong emphasis ('**a ' * n + 'b' + ' a**' * n: 40,000 characters 12.7 s, a 200,000-character
# cell about 25 min); an honest cell has far fewer (red team, round 3).
MAX_EMPHASIS_MARKS = 1000
# The frame of a written answer where no stylesheet of ours applies (formgrader's page).
FRAME_STYLE = "border-left:4px solid #8a6d3b;background:#fcf8e3;padding:.2em .8em;margin:.4em 0"


def math_to_mathml(markdown: str) -> str:
    """``markdown`` with each TeX formula replaced by MathML (a formula latex2mathml cannot read
    stays as its TeX, escaped, in a ``<code>``); code spans and fences are untouched."""
    from latex2mathml.converter import convert

    def one(tex, whole, display):
        try:
            return convert(tex.strip(), display="block" if display else "inline")
        except Exception:  # noqa: BLE001 - a student's TeX is data: show it as written
            return f"<code>{html.escape(whole)}</code>"

    pieces = _CODE.split(markdown)
    return "".join(p if i % 2 else _replace_math(p, one) for i, p in enumerate(pieces))


def _math_spans(text: str):
    """``(start, end, tex, display)`` for each formula of ``text``, left to right: ``$$...$$``
    and ``\\[...\\]`` (display), ``\\(...\\)`` and ``$...$`` (inline: not after ``\\`` or ``$``,
    no space inside its ends, on one line, not followed by a digit). One pass: each closer is
    looked for once from its opener, and a closer that occurs nowhere later is known without a
    search (a student's cell of 200,000 unclosed ``\\[`` took 71 s with a regular expression)."""
    last = {"$$": text.rfind("$$"), "\\[": text.rfind("\\]"), "\\(": text.rfind("\\)")}
    closer = {"$$": "$$", "\\[": "\\]", "\\(": "\\)"}
    at = 0
    while (match := _OPENERS.search(text, at)) is not None:
        start, opener = match.start(), match.group()
        at = start + 1  # unless a formula starts here, the next attempt is one character on
        if opener in closer:
            if last[opener] >= start + 3:  # content of at least one character, then the closer
                stop = text.find(closer[opener], start + 3)
                at = stop + 2
                yield start, at, text[start + 2:stop], opener != "\\("
            continue
        if (start and text[start - 1] in "\\$") or start + 1 >= len(text) or text[start + 1].isspace():
            continue
        stop = text.find("$", start + 2)
        if stop < 0 or text.find("\n", start + 1, stop) >= 0 or text[stop - 1].isspace() \
                or text[stop + 1:stop + 2].isdigit():
            continue
        at = stop + 1
        yield start, at, text[start + 1:stop], False


def _replace_math(text: str, one) -> str:
    out, at = [], 0
    for start, end, tex, display in _math_spans(text):
        out += [text[at:start], one(tex, text[start:end], display)]
        at = end
    return "".join(out + [text[at:]])


def clean_html(fragment: str, classes: bool = False) -> str:
    """``fragment`` with only the allowlisted HTML and MathML kept (nh3); ``classes`` keeps
    ``class`` attributes (the grader's own page markup, never a student's text)."""
    import nh3

    tags = (set(nh3.ALLOWED_TAGS) | MATHML_TAGS) - DROPPED_TAGS
    attributes = {"*": {"title"} | ({"class"} if classes else set()), "a": {"href"},
                  "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"},
                  **{t: MATHML_ATTRIBUTES for t in MATHML_TAGS}}
    return nh3.clean(fragment, tags=tags, attributes=attributes, url_schemes=URL_SCHEMES,
                     link_rel="noopener noreferrer nofollow")


@lru_cache(maxsize=512)  # a notebook's own markdown is the same on every student's page
def student_html(markdown: str) -> str:
    """A student's markdown as inert HTML on one line: rendered (maths as MathML), cleaned with
    no ``class``, ``id`` or ``style`` (:func:`clean_html`), every line break an entity, in a
    ``<div>``: CommonMark reads a line opening with ``<div`` as one HTML block, to its end, and
    renders none of it as markdown (so ``[a](javascript:...)`` left as text stays text)."""
    from nbconvert.filters.markdown import markdown2html

    markdown = str(markdown)
    try:
        if markdown.count("*") + markdown.count("_") > MAX_EMPHASIS_MARKS:
            raise ValueError("too many emphasis marks")  # nested emphasis costs mistune cubic time
        rendered = markdown2html(math_to_mathml(markdown))
    except Exception:  # noqa: BLE001 - text the renderer cannot read is shown as text
        rendered = f"<pre>{html.escape(markdown)}</pre>"
    cleaned = clean_html(rendered).replace("\r", "&#13;").replace("\n", "&#10;")
    return f"<div>{cleaned}</div>"  # a line that opens with <div is one HTML block to the end


def framed(markdown: str, how: str = "style") -> str:
    """:func:`student_html` inside a visible frame saying it is the student's text: ``how`` is
    ``"style"`` (inline, for formgrader) or ``"class"`` (the feedback page's stylesheet)."""
    frame = f'style="{FRAME_STYLE}"' if how == "style" else 'class="student-text"'
    return (f'<div {frame} title="written by the student"><div><small>Student\'s answer (shown as text; '
            f"no script, style or class of theirs is kept)</small></div>{student_html(markdown)}</div>")
