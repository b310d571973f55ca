"""The course website in a real browser: the landing page and a chapter as a reader sees them,
served from 127.0.0.1 with every other address blocked (the site must need no network),
MathJax typesetting the maths, every figure loaded, a working search and a Binder button that
opens the page in JupyterLab; and every page of the site (chapters, exercises, the guides of
docs/, references, index, search) opened in turn: any uncaught exception, console error or
failed request on any of them fails. Screenshots: docs/screenshots/site-*.png (docs/website.md
shows one).
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from book import build as site

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHAPTER = "course/03_straight_through_estimator"
VIEWPORT = {"width": 1280, "height": 800}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the standard library's name)
        pass


@pytest.fixture(scope="module")
def served():
    """The built site on a free port of 127.0.0.1."""
    try:
        html = site.build()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def reader(browser, served):
    """A tab that may load only the site: what else it asks for, or fails to load, is recorded."""
    context = browser.new_context(viewport=VIEWPORT)
    outside, failed, errors = [], [], []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(served + "/") or url.startswith("data:"):
            request_route.continue_()
        else:
            outside.append(url)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith(served) else None)
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("console", lambda message: errors.append(f"console.{message.type}: {message.text}")
            if message.type in ("error", "assert") else None)
    try:
        yield page, outside, failed, errors
    finally:
        context.close()


def _typeset(page) -> dict:
    page.wait_for_function("() => window.MathJax && window.MathJax.startup"
                           " && window.MathJax.startup.promise", timeout=30_000)
    page.evaluate("() => window.MathJax.startup.promise")
    return page.evaluate("""() => ({
        typeset: document.querySelectorAll('article mjx-container').length,
        errors: document.querySelectorAll('mjx-merror').length,
        images: [...document.querySelectorAll('article img')].map(
            i => ({src: i.getAttribute('src'), width: i.naturalWidth})),
    })""")


def test_landing_page_lists_the_course_and_renders(reader, served):
    page, outside, failed, errors = reader
    page.goto(served + "/index.html")
    page.wait_for_url("**/course/00_start_here.html")
    page.locator("article h1").first.wait_for()
    nav = page.locator("nav.bd-links").inner_text()
    for notebook in site.chapters()[1:] + site.exercises():
        heading = site._title(notebook).split("`")[0].split("$")[0].strip()
        assert heading[:20] in nav, f"the navigation does not list {notebook.name} ({heading!r})"
    assert "References" in nav
    page.screenshot(path=str(SCREENSHOTS / "site-landing.png"))
    assert outside == [], f"the landing page asked the network for {outside}"
    assert failed == [] and errors == [], f"failed requests {failed}, errors {errors}"


def test_a_chapter_shows_its_maths_figures_and_a_binder_button(reader, served):
    page, outside, failed, errors = reader
    page.goto(f"{served}/{CHAPTER}.html")
    state = _typeset(page)
    assert state["typeset"] > 10 and state["errors"] == 0, state
    assert state["images"] and all(i["width"] > 100 for i in state["images"]), state["images"]

    binder = page.locator("a[href*='/v2/gh/']").first
    href = binder.get_attribute("href")
    parts = urlsplit(href)
    assert parts.query == f"urlpath=lab/tree/{CHAPTER}.ipynb", href
    assert parts.path.endswith("/main"), f"Binder opens another branch: {href}"

    page.locator("article img").first.scroll_into_view_if_needed()
    page.evaluate("() => window.scrollBy(0, -250)")
    page.screenshot(path=str(SCREENSHOTS / "site-chapter.png"))
    assert outside == [], f"the chapter asked the network for {outside}"
    assert failed == [] and errors == [], f"failed requests {failed}, errors {errors}"


def test_search_finds_a_chapter(reader, served):
    page, outside, failed, errors = reader
    page.goto(f"{served}/search.html?q=stop_gradient")
    page.locator("#search-results li").first.wait_for(timeout=30_000)
    found = page.locator("#search-results").inner_text()
    assert "stop" in found.lower(), found[:500]
    assert outside == [] and failed == [] and errors == [], (outside, failed, errors)


REFRESH = re.compile(r'<meta http-equiv="refresh" content="\d+;\s*url=([^"]+)"', re.I)


def _wait_until_settled(page, file: Path) -> None:
    """The page loaded (after its redirect, for index.html), its maths typeset if it has any
    (MathJax runs after the load event)."""
    redirect = REFRESH.search(file.read_text(encoding="utf-8"))
    if redirect:
        page.wait_for_url(f"**/{redirect.group(1)}")
    page.wait_for_load_state("load")
    if page.evaluate("() => Boolean(window.MathJax && window.MathJax.startup)"):
        _typeset(page)


def test_no_page_of_the_site_has_a_console_error(reader, served):
    """Every HTML page a reader can reach (the theme's own files under _static aside)."""
    page, outside, failed, errors = reader
    html = site.HTML
    found = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                   if "_static" not in p.parts)
    assert len(found) >= len(site.chapters()) + len(site.exercises()), found
    assert any(name.startswith("docs/") for name in found), f"no page of docs/ in the site: {found}"
    problems = []
    for name in found:
        del outside[:], failed[:], errors[:]
        page.goto(f"{served}/{name}")
        _wait_until_settled(page, html / name)
        problems += [f"{name}: {what}" for what in errors + failed
                     + [f"asked the network for {url}" for url in outside]]
    assert not problems, "\n".join(problems)
