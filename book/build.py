"""Build the course website (``make site``): jupyter-book over the repository root.

    python book/build.py [--repository URL]

Output: ``book/_build/html/index.html``. What this adds to a plain ``jupyter-book build``:

- **No network.** MathJax comes from ``book/vendor/mathjax/`` (``book/vendor-mathjax.sh`` puts
  it there at set-up time); nothing else is fetched.
- **An execution cache that knows the library.** jupyter-cache re-executes a chapter when its
  code changes, not when ``ste_utils`` (or a pin) does; the cache is therefore kept in a folder
  named after a hash of ``ste_utils/`` and ``requirements.txt``, and older ones are removed.
- **A references page** generated from the chapters' own "References" sections (one source).
- **Pages without console errors** (``book/page_assets.py``, a Sphinx extension): each inline
  script once, MathJax on every page.
- **The Binder repository** of the launch buttons can be set for one build (``--repository``);
  otherwise it is ``repository.url`` in ``book/_config.yml``.

A failing chapter fails the build (``nb_execution_raise_on_error``); the exercises are shown,
never executed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
BUILD = BOOK / "_build"
HTML = BUILD / "html"
MATHJAX = BOOK / "vendor" / "mathjax" / "tex-chtml-full.js"
GENERATED = BOOK / "generated"
CACHE_PREFIX = "jupyter_cache-"
# What the executed outputs depend on besides each notebook's own code.
CACHE_INPUTS = ("ste_utils", "requirements.txt")
CHAPTER = re.compile(r"[0-9][0-9]_.*\.ipynb")
# ipykernel's note, once per kernel, that it talks to the build over loopback TCP: not shown
NOISE = "Kernel is running over TCP without encryption"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def chapters() -> list[Path]:
    """course/NN_*.ipynb in order: the landing page (00) first."""
    return sorted(p for p in (ROOT / "course").glob("*.ipynb") if CHAPTER.fullmatch(p.name))


def exercises() -> list[Path]:
    """exercises/NN_*/*.ipynb in order."""
    return sorted(p for p in (ROOT / "exercises").glob("*/*.ipynb")
                  if re.fullmatch(r"[0-9][0-9]_.*", p.parent.name)
                  and ".ipynb_checkpoints" not in p.parts)


def guides() -> list[Path]:
    """docs/*.md: the guides, published beside the chapters."""
    return sorted((ROOT / "docs").glob("*.md"))


def cache_key(root: Path = ROOT) -> str:
    """A hash of every file under ste_utils/ (but compiled ones) and of the pins."""
    digest = hashlib.sha256()
    for name in CACHE_INPUTS:
        path = root / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_folder() -> Path:
    """The execution cache of this ste_utils and these pins."""
    return BUILD / f"{CACHE_PREFIX}{cache_key()}"


def execution_cache() -> Path:
    """This library's execution cache folder; caches of other library versions are removed."""
    current = cache_folder()
    if BUILD.is_dir():
        for old in BUILD.glob(f"{CACHE_PREFIX}*"):
            if old != current:
                print(f"site: ste_utils or the pins changed: removing {old.relative_to(ROOT)}")
                shutil.rmtree(old)
    return current


def _title(notebook: Path) -> str:
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return notebook.stem


def _references_section(notebook: Path) -> str:
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and re.match(r"#+ References\s*\n", text):
            return text.split("\n", 1)[1].strip()
    return ""


def _split_references(section: str) -> tuple[list[str], list[str]]:
    """(list items, other paragraphs) of a chapter's References section."""
    items, notes = [], []
    for block in re.split(r"\n\s*\n", section):
        if block.lstrip().startswith("- "):
            for item in re.split(r"\n(?=- )", block.strip()):
                items.append(" ".join(line.strip() for line in item[2:].splitlines()))
        elif block.strip():
            notes.append(" ".join(line.strip() for line in block.splitlines()))
    return items, notes


def references_page() -> str:
    """The papers every chapter cites (each once, in order of first citation), then what
    each chapter adds."""
    papers: dict[str, list[Path]] = {}
    per_chapter = []
    for notebook in chapters():
        items, notes = _split_references(_references_section(notebook))
        for item in items:
            papers.setdefault(item, []).append(notebook)
        if notes:
            per_chapter.append((notebook, notes))
    link = lambda nb: f"[{_title(nb)}](../../course/{nb.name})"  # noqa: E731
    lines = ["# References", "",
             "Collected from the chapters' own *References* sections.", "", "## Papers", ""]
    for item, cited_by in papers.items():
        lines.append(f"- {item} Cited in: {', '.join(link(nb) for nb in cited_by)}.")
    if per_chapter:
        lines += ["", "## Per chapter", ""]
        for notebook, notes in per_chapter:
            lines += [f"**{link(notebook)}.** " + " ".join(notes), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_if_changed(path: Path, text: str) -> None:
    """Leave an unchanged file alone, so that Sphinx does not rebuild its page."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def book_config(repository: str | None, cache: Path) -> Path:
    """book/_config.yml with this build's execution cache (and repository, if given)."""
    config = yaml.safe_load((BOOK / "_config.yml").read_text(encoding="utf-8"))
    config["execute"]["cache"] = str(cache)
    extensions = config.get("sphinx", {}).get("local_extensions") or {}
    for name, folder in extensions.items():  # relative to the repository, not to this copy
        extensions[name] = str(ROOT / folder)
    if repository:
        config["repository"]["url"] = repository.rstrip("/")
    path = BUILD / "_config.yml"
    write_if_changed(path, yaml.safe_dump(config, sort_keys=False))
    return path


def build(repository: str | None = None) -> Path:
    """Build the site; returns the folder of its HTML. Raises RuntimeError when it fails."""
    if not MATHJAX.is_file():
        raise RuntimeError(f"MathJax is missing ({MATHJAX.relative_to(ROOT)}): run "
                           "book/vendor-mathjax.sh once (make site does), then build again")
    BUILD.mkdir(parents=True, exist_ok=True)
    config = book_config(repository, execution_cache())
    write_if_changed(GENERATED / "references.md", references_page())
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")
    command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
               "build", str(ROOT),
               "--path-output", str(BOOK), "--config", str(config),
               "--toc", str(BOOK / "_toc.yml"), "--warningiserror", "--keep-going", "--quiet"]
    start = time.monotonic()
    problems = []
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as process:
        for line in process.stdout:
            if NOISE in line:
                continue
            print(line, end="", flush=True)
            if "WARNING" in line or "ERROR" in line or "Error" in line:
                problems.append(ANSI.sub("", line).strip())
    if process.returncode != 0:
        raise RuntimeError(f"the site build failed (exit {process.returncode}): "
                           + ("\n".join(problems[:20]) or " ".join(command)))
    print(f"site: built {HTML.relative_to(ROOT)}/index.html in {time.monotonic() - start:.1f} s")
    return HTML


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", metavar="URL",
                        help="the repository the Binder buttons launch (default: repository.url "
                             "of book/_config.yml)")
    args = parser.parse_args(argv)
    try:
        build(args.repository)
    except RuntimeError as exc:
        print(f"site: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
