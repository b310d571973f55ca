"""Every module path the README, the docs and the hub's files name still exists.

``ste_course.grading.run.grade`` (a module, then an attribute) and ``ste_course/grading/run.py``
(a file or folder of the repository) are read from ``README.md``, ``docs/**/*.md`` and every text
file under ``hub/``; the dotted ones are resolved from the source with ``ast`` (no import), so a
name moved or renamed in the package fails here instead of in a reader's hands or a running hub.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOTTED = re.compile(r"\bste_course(?:\.[A-Za-z_]\w*)+")
SLASHED = re.compile(r"\bste_course(?:/[\w.-]+)+/?")
NOT_MODULES = {"ste_course.toml"}  # the course's configuration file


def _documents() -> list:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found += [p for p in sorted((ROOT / "hub").rglob("*")) if p.is_file() and "node_modules" not in p.parts]
    return [p for p in found if p.is_file()]


def _module_file(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _names(body) -> dict:
    """name -> node for what a module or class body defines (functions, classes, assignments, imports)."""
    names = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, (ast.If, ast.Try)):
            names.update(_names(node.body))
    return names


def resolve(dotted: str) -> str:
    """Why ``dotted`` names nothing, or ``""`` when it is a module or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = _module_file(".".join(parts[:cut]))
        if path is None:
            continue
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for i, attribute in enumerate(parts[cut:]):
            node = _names(body).get(attribute)
            if node is None:
                return f"{'.'.join(parts[:cut + i])} has no {attribute}"
            if not isinstance(node, ast.ClassDef):
                return ""  # an attribute of a function or a value: not followed further
            body = node.body
        return ""
    return "no such module"


def test_every_module_path_in_the_docs_and_the_hub_resolves():
    documents = _documents()
    assert ROOT / "README.md" in documents and any(p.parts[-2] == "hub" for p in documents)
    missing, seen = [], 0
    for doc in documents:
        text = doc.read_text(encoding="utf-8", errors="replace")
        for dotted in sorted(set(DOTTED.findall(text)) - NOT_MODULES):
            seen += 1
            if why := resolve(dotted):
                missing.append(f"{doc.relative_to(ROOT)}: {dotted} ({why})")
        for slashed in sorted(set(SLASHED.findall(text))):
            seen += 1
            if not (ROOT / slashed.rstrip(".")).exists():
                missing.append(f"{doc.relative_to(ROOT)}: {slashed} (no such file)")
    assert seen > 10
    assert not missing, "paths that name nothing: " + "; ".join(missing)


def test_the_resolver_can_fail():
    assert resolve("ste_course.grading.run.grade") == "" and resolve("ste_course.exchange.PrivateSubmit") == ""
    assert resolve("ste_course.record.recorder.Recorder.record") == ""
    assert resolve("ste_course.grade.grade") == "ste_course has no grade"  # the module before the split
    assert resolve("ste_course.grading.run.grade_one") == "ste_course.grading.run has no grade_one"
    assert resolve("ste_course.record.recorder.Recorder.no_such_method") == \
        "ste_course.record.recorder.Recorder has no no_such_method"
