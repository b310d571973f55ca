"""The README and the guides of docs/ say nothing false about the repository's own files.

- every relative link and image of README.md and docs/*.md points at a file of the repository,
  and every anchor (``page.md#section``, ``#section``) at a heading of that page, named as
  GitHub names it (the site's build checks the same links once more, as HTML);
- every ``ste-course`` command in their code blocks parses with the real parser, and every
  ``make`` target they name, in a code block or inline, exists in the Makefile.

Fast (no build, no subprocess): the files are read as text.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from ste_course.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
COMMAND = re.compile(r"^(?:\.venv/bin/)?(ste-course|make)\s")


def split_markdown(text: str) -> tuple[str, list[str]]:
    """(the prose, with code blocks blanked out), [the lines of its fenced code blocks]."""
    prose, code, fence = [], [], None
    for line in text.splitlines():
        marker = FENCE.match(line.lstrip())
        if fence is None and marker:
            fence = marker.group(1)
            prose.append("")
        elif fence is not None:
            if line.lstrip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            else:
                code.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), code


def github_slug(heading: str) -> str:
    """The anchor GitHub (and MyST's heading anchors) give a heading: markup and punctuation
    dropped, lower case, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    """The anchors of a Markdown file or a notebook's Markdown cells (repeated headings get
    -1, -2, ... as on GitHub)."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = path.read_text(encoding="utf-8")
    prose, _ = split_markdown(text)
    found: set[str] = set()
    for line in prose.splitlines():
        match = HEADING.match(line)
        if match:
            slug = base = github_slug(match.group(2))
            n = 0
            while slug in found:
                n += 1
                slug = f"{base}-{n}"
            found.add(slug)
    return found


def links_of(text: str) -> list[str]:
    """The targets of the links and images of Markdown prose (not inside code)."""
    prose, _ = split_markdown(text)
    prose = COMMENT.sub("", CODE_SPAN.sub("", prose))
    return [m.group(1) for m in LINK.finditer(prose)]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the relative links of one Markdown file, one line each."""
    problems = []
    for link in links_of(path.read_text(encoding="utf-8")):
        if SCHEME.match(link) or link.startswith("//"):
            continue
        where = f"{path.relative_to(root)}: ({link})"
        target_text, _, anchor = link.partition("#")
        target = (path.parent / target_text).resolve() if target_text else path
        if not target.is_relative_to(root.resolve()):
            problems.append(f"{where} leaves the repository")
        elif not target.exists():
            problems.append(f"{where}: no {target.relative_to(root.resolve())}")
        elif anchor:
            if target.suffix not in (".md", ".ipynb"):
                problems.append(f"{where}: an anchor into a file that has no headings")
            elif anchor not in anchors_of(target):
                problems.append(f"{where}: {target.name} has no heading #{anchor} "
                                f"(it has: {', '.join(sorted(anchors_of(target)))})")
    return problems


def commands_of(text: str) -> tuple[list[str], list[str]]:
    """(``ste-course`` and ``make`` command lines of the code blocks, ``make`` commands
    written inline), without comments."""
    prose, code = split_markdown(text)
    blocks = [line.split("#")[0].strip() for line in code]
    inline = [m.group(2).strip() for m in CODE_SPAN.finditer(COMMENT.sub("", prose))]
    return ([c for c in blocks if COMMAND.match(c)],
            [c for c in inline if c.startswith("make ") and "\n" not in c])


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(path):
    assert not broken_links(path), "broken links:\n" + "\n".join(broken_links(path))


def test_the_link_check_finds_what_is_broken(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/other.md").write_text("# Other page\n\n## A `code` section: here\n")
    page = tmp_path / "docs/page.md"
    page.write_text(
        "# Page\n\n## Twice\n\n## Twice\n\n"
        "[ok](other.md) [ok](other.md#a-code-section-here) [ok](#twice-1) [ok](#page)\n"
        "[web](https://example.org/x#y) `[in code](missing.md)`\n\n```\n[in a block](missing.md)\n```\n"
        "[gone](missing.md) [no anchor](other.md#nowhere) [out](../../etc/passwd)\n"
        "![image](pic.png) [self](#twice-2)\n")
    found = broken_links(page, tmp_path)
    assert len(found) == 5, found
    for expected in ("(missing.md): no docs/missing.md", "other.md has no heading #nowhere",
                     "leaves the repository", "(pic.png): no docs/pic.png", "no heading #twice-2"):
        assert any(expected in line for line in found), (expected, found)


def test_the_guides_are_in_the_readme_and_on_the_site():
    """Every page of docs/ is linked from the README and listed in the site's table of contents."""
    readme = set(links_of((ROOT / "README.md").read_text(encoding="utf-8")))
    toc = (ROOT / "book/_toc.yml").read_text(encoding="utf-8")
    for page in DOCS[1:]:
        name = page.relative_to(ROOT).as_posix()
        assert name in readme, f"the README does not link {name}"
        assert f"file: {name[:-3]}\n" in toc, f"book/_toc.yml does not list {name}"


def test_every_command_parses_and_every_make_target_exists():
    parser = build_parser(ROOT)
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    seen = []
    for path in DOCS:
        blocks, inline = commands_of(path.read_text(encoding="utf-8"))
        for command in blocks + inline:
            seen.append(command)
            words = shlex.split(command)
            where = f"{path.relative_to(ROOT)}: {command}"
            if words[0] == "make":
                assert words[1] in targets, f"{where}: no make target {words[1]!r}"
            else:
                try:
                    parser.parse_args(words[1:])
                except SystemExit as exc:
                    pytest.fail(f"{where}: the parser refuses it (exit {exc.code})")
    assert any(c.startswith("ste-course grade") for c in seen)
    assert any(c.startswith("make hub") for c in seen) and any(c.startswith(".venv/bin/ste-course") for c in seen)


def test_the_command_check_reads_blocks_and_inline_make():
    text = ("Run `make lab` or `make nowhere X=1`.\n\n```\nste-course grade s/ --out g/   # a comment\n"
            "make site\n.venv/bin/ste-course check\necho ste-course\n```\n`ste-course grade` inline\n")
    blocks, inline = commands_of(text)
    assert blocks == ["ste-course grade s/ --out g/", "make site", ".venv/bin/ste-course check"]
    assert inline == ["make lab", "make nowhere X=1"]
