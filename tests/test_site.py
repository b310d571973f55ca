"""The course website (``make site``, book/build.py), built as ``make site`` builds it.

The build is incremental: after a first build only changed chapters are executed again, so
this module costs a few seconds when the site is up to date (and a full build, about the time
of running every chapter once, on a fresh clone). Checked on the HTML a reader gets:

- every chapter, every exercise and every guide of docs/ has its page, and the navigation
  lists them all;
- every figure a chapter draws is on its page (an <img> whose file exists and is not empty);
- no internal link or anchor is broken;
- maths is left for MathJax, which is served from the site itself (no CDN), and no LaTeX is
  left raw in the text;
- no chapter prints a warning (or anything on stderr) that its text does not account for.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

from book import build as site

ROOT = Path(__file__).resolve().parents[1]

# Warnings a chapter shows on purpose: (pattern of the stderr text, why). Each is allowed only
# in a chapter whose Markdown also quotes the pattern's phrase, i.e. whose text explains it.
EXPECTED_WARNINGS = [
    (r"UserWarning: Gradients do not exist for variables",
     "a network without an STE has no gradient: Keras says so; the chapter explains it"),
]


@pytest.fixture(scope="module")
def html() -> Path:
    try:
        return site.build()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


class Page(HTMLParser):
    """What the checks need from one HTML page: links, ids, images, scripts and text."""

    SKIP_TEXT = {"script", "style", "pre", "code", "math", "title"}  # <title>: plain text only

    def __init__(self, path: Path):
        super().__init__(convert_charrefs=True)
        self.path = path
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.images: list[tuple[str, bool]] = []  # (src, inside a cell's output)
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, skips text, cell output)
        self.feed(path.read_text(encoding="utf-8"))

    def _state(self) -> tuple[bool, bool]:
        return (self._stack[-1][1], self._stack[-1][2]) if self._stack else (False, False)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        skip, output = self._state()
        # "onlyprint": the theme's print-only header repeats the title without its maths
        skip = skip or tag in self.SKIP_TEXT or bool({"math", "notranslate", "onlyprint"} & set(classes))
        output = output or "cell_output" in classes
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "link" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append((attrs.get("src") or "", output))
            self.links.append(attrs.get("src") or "")
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
            self.links.append(attrs["src"])
        if tag not in {"img", "link", "meta", "br", "hr", "input", "source", "wbr", "col"}:
            self._stack.append((tag, skip, output))

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break

    def handle_data(self, data):
        if not self._state()[0]:
            self.text.append(data)


def pages(html: Path) -> list[Path]:
    return sorted(p for p in html.rglob("*.html") if "_static" not in p.parts)


def page_of(html: Path, notebook: Path) -> Path:
    return html / notebook.relative_to(ROOT).with_suffix(".html")


def executed(notebook: Path) -> dict:
    """The notebook with the outputs the site shows: its record in the execution cache."""
    from jupyter_cache import get_cache

    source = nbformat.read(notebook, as_version=4)
    try:
        _, merged = get_cache(site.cache_folder()).merge_match_into_notebook(source)
    except KeyError:
        pytest.fail(f"{notebook.relative_to(ROOT)} is not in the execution cache "
                    f"{site.cache_folder().relative_to(ROOT)}", pytrace=False)
    return merged


def test_every_chapter_exercise_and_guide_has_a_page_in_the_navigation(html):
    expected = site.chapters() + site.exercises() + site.guides()
    assert len(site.chapters()) >= 7 and len(site.exercises()) >= 6 and len(site.guides()) >= 5, expected
    landing = Page(page_of(html, site.chapters()[0]))
    for notebook in expected + [ROOT / "book/generated/references.md"]:
        target = page_of(html, notebook)
        assert target.is_file(), f"no page for {notebook.relative_to(ROOT)} ({target})"
        if notebook != site.chapters()[0]:
            linked = {(landing.path.parent / unquote(urlsplit(link).path)).resolve()
                      for link in landing.links if not urlsplit(link).scheme}
            assert target.resolve() in linked, (
                f"the landing page's navigation does not link {target.relative_to(html)}")
    assert (html / "search.html").is_file() and (html / "searchindex.js").is_file()
    index = (html / "index.html").read_text(encoding="utf-8")
    assert "course/00_start_here.html" in index, "index.html does not open the landing page"


def test_every_figure_a_chapter_draws_is_on_its_page(html):
    for notebook in site.chapters():
        drawn = sum("image/png" in output.get("data", {}) or "image/svg+xml" in output.get("data", {})
                    for cell in executed(notebook)["cells"] if cell["cell_type"] == "code"
                    for output in cell["outputs"])
        page = Page(page_of(html, notebook))
        shown = [src for src, in_output in page.images if in_output]
        assert len(shown) == drawn, (
            f"{page.path.relative_to(html)}: {len(shown)} figures shown, the chapter drew {drawn}")
        for src in shown:
            if src.startswith("data:"):
                assert len(src) > 100, f"{page.path.relative_to(html)}: an empty data image"
                continue
            file = (page.path.parent / unquote(urlsplit(src).path)).resolve()
            assert file.is_file() and file.stat().st_size > 1000, (
                f"{page.path.relative_to(html)}: figure {src} is missing or empty")
    assert sum(1 for nb in site.chapters() for _ in Page(page_of(html, nb)).images) > 0


def test_no_internal_link_is_broken(html):
    broken = []
    parsed = {path: Page(path) for path in pages(html)}
    for path, page in parsed.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//") or not link:
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if not target.exists():
                broken.append(f"{path.relative_to(html)}: {link} (no {target})")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else Page(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(html)}: {link} (no #{parts.fragment})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_maths_is_rendered_by_a_local_mathjax_and_none_is_left_raw(html):
    raw = re.compile(r"\$[^$\s][^$]*\$|\\(frac|mathbb|mathrm|partial|nabla|sum|in|le|ge)\b"
                     r"|\\\(|\\\[")
    with_maths = 0
    for path in pages(html):
        page = Page(path)
        remote = [s for s in page.scripts if urlsplit(s).scheme or s.startswith("//")]
        assert not remote, f"{path.relative_to(html)} loads scripts from the network: {remote}"
        if path.parent == html or path.name in ("genindex.html", "search.html"):
            continue
        source = path.read_text(encoding="utf-8")
        if 'class="math' in source:
            with_maths += 1
            mathjax = [s for s in page.scripts if "mathjax/tex-chtml-full.js" in s]
            assert mathjax, f"{path.relative_to(html)} has maths but no local MathJax"
            assert (path.parent / urlsplit(mathjax[0]).path).is_file()
        text = " ".join(page.text)
        found = raw.search(text)
        assert not found, (f"{path.relative_to(html)}: LaTeX left raw in the text: "
                           f"...{text[max(found.start() - 60, 0):found.end() + 60]}...")
    assert with_maths >= 3, f"only {with_maths} pages with maths: is the maths being parsed?"


def _markdown(notebook: dict) -> str:
    return "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")


def unexpected_stderr(notebook: dict) -> list[str]:
    """The stderr text (and warnings shown any other way) of a notebook's outputs that no
    EXPECTED_WARNINGS entry allows, or that the notebook's Markdown does not mention."""
    markdown = " ".join(_markdown(notebook).split())
    found = []
    for i, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                text = output["text"] if isinstance(output["text"], str) else "".join(output["text"])
            elif output.get("output_type") == "stream" and re.search(r"\w+Warning: ", "".join(output["text"])):
                text = "".join(output["text"])
            else:
                continue
            rest = text
            for pattern, _why in EXPECTED_WARNINGS:
                phrase = pattern.split(": ", 1)[-1]
                if re.search(pattern, rest) and phrase.lower() in markdown.lower():
                    rest = re.sub(rf"[^\n]*{pattern}[^\n]*\n(\s+warnings\.warn\([^\n]*\n?)?", "", rest)
            if rest.strip():
                found.append(f"cell {i}: {rest.strip()[:400]}")
    return found


def test_no_chapter_prints_a_warning_its_text_does_not_account_for(html):
    problems = {nb.name: unexpected_stderr(executed(nb)) for nb in site.chapters()}
    problems = {name: found for name, found in problems.items() if found}
    assert not problems, "unexpected stderr in executed chapters:\n" + "\n".join(
        f"{name}: {line}" for name, found in problems.items() for line in found)


def test_the_warning_check_fails_on_an_unexplained_warning():
    warning = ("/x/keras/base_optimizer.py:862: UserWarning: Gradients do not exist for "
               "variables ['dense/kernel'] when minimizing the loss.\n  warnings.warn(\n")
    cell = {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stderr", "text": warning}]}
    silent = {"cells": [{"cell_type": "markdown", "source": "No word about it."}, cell]}
    explained = {"cells": [{"cell_type": "markdown", "source": "Keras warns: *Gradients do not\n"
                            "exist for variables* ..., as expected here."}, cell]}
    other = {"cells": [explained["cells"][0], {"cell_type": "code", "outputs": [
        {"output_type": "stream", "name": "stderr", "text": warning + "W0000 tf log line\n"}]}]}
    assert unexpected_stderr(silent) and not unexpected_stderr(explained)
    assert unexpected_stderr(other) == ["cell 1: W0000 tf log line"]


def test_the_execution_cache_is_keyed_on_ste_utils_and_the_pins(tmp_path):
    """jupyter-cache knows only each notebook's code: the cache folder changes with the library."""
    (tmp_path / "ste_utils/__pycache__").mkdir(parents=True)
    (tmp_path / "ste_utils/estimators.py").write_text("def ste(): pass\n")
    (tmp_path / "requirements.txt").write_text("keras==3.15.1\n")
    key = site.cache_key(tmp_path)
    (tmp_path / "ste_utils/__pycache__/estimators.cpython-311.pyc").write_bytes(b"compiled")
    assert site.cache_key(tmp_path) == key, "a compiled file changed the key"
    (tmp_path / "ste_utils/estimators.py").write_text("def ste(): return 1\n")
    assert site.cache_key(tmp_path) != key, "an edit of ste_utils kept the key"
    key = site.cache_key(tmp_path)
    (tmp_path / "requirements.txt").write_text("keras==3.15.2\n")
    assert site.cache_key(tmp_path) != key, "a new pin kept the key"
