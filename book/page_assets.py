"""A Sphinx extension of the course website: the scripts every page loads, each once, MathJax
everywhere. Loaded by ``book/_config.yml`` (``sphinx.local_extensions``).

- **Each inline script once.** Sphinx 7.4 keeps a script that an extension registers with
  ``app.add_js_file(None, body=...)`` after the builder started twice: once as registered
  (file name ``None``) and once more when writing starts, copied from the registry with the
  file name ``''``; the two compare unequal, so both are written into every page. sphinx-thebe
  registers its settings that way (``const THEBE_JS_URL = ...``), so every page declared the
  constants twice and the browser threw *Identifier 'THEBE_JS_URL' has already been declared*
  (sphinx-togglebutton's ``var togglebuttonSelector`` was doubled as well, silently). Each page's
  script list keeps the first of equal scripts (same source or body, same attributes).
- **MathJax on every page.** The navigation shows chapter titles with maths on every page
  (chapter 5's x + sg(r - x)), but Sphinx loads MathJax only on pages whose own
  text has maths: on the guides of ``docs/`` the title's LaTeX stayed raw.

``tests/e2e/test_site_browser.py`` opens every page and fails on any console error;
``tests/test_site.py`` fails on a page whose maths has no MathJax.
"""

from __future__ import annotations

from typing import Any

# After every other html-page-context handler: some (the theme, MathJax) add scripts there.
LAST = 900


def script_key(script: Any) -> tuple:
    """What makes two scripts the same: the file (None and '' both mean inline) and the
    attributes (the body of an inline script among them)."""
    return (script.filename or "", tuple(sorted(script.attributes.items())))


def each_script_once(scripts: list) -> list:
    """The scripts in order, each kept at its first occurrence."""
    seen, kept = set(), []
    for script in scripts:
        key = script_key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    return kept


def _page_scripts_once(app, pagename, templatename, context, doctree) -> None:
    if isinstance(context.get("script_files"), list):
        context["script_files"] = each_script_once(context["script_files"])


def setup(app) -> dict:
    app.set_html_assets_policy("always")
    app.connect("html-page-context", _page_scripts_once, priority=LAST)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
