"""The trust boundary is visible in the tree: what runs inside the sandbox lives in
``ste_course/inside/`` and imports nothing from the parent's side.

The sandbox's code may import ``ste_course.inside``, the kernel-side checking helpers
(``checks``, ``specs``, ``evidence``), ``ste_utils``, the standard library and third-party
packages. The rule is checked on the import closure (following every ``ste_course`` import the
inside makes, at any depth, including imports inside functions), read from the source with
``ast`` so that it costs no TensorFlow import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ste_course

PACKAGE = Path(ste_course.__file__).resolve().parent
INSIDE = PACKAGE / "inside"
# modules the sandbox may reach (besides ste_course.inside.*)
SHARED = ("ste_course.checks", "ste_course.evidence", "ste_course.specs")


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _path_of(module: str, package: Path):
    base = package.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, root: Path) -> set:
    """Every ``ste_course`` module ``path`` imports, anywhere in its code."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from ste_course import checks`` imports the submodule ste_course.checks
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "ste_course" or name.startswith("ste_course."):
                found.add(name)
    return found


def inside_closure(root: Path = PACKAGE) -> dict:
    """module -> the module that first imported it, for everything ``root/inside`` reaches."""
    start = sorted(_module_name(p, root) for p in (root / "inside").rglob("*.py"))
    seen = {name: None for name in start}
    todo = list(start)
    while todo:
        module = todo.pop()
        path = _path_of(module, root)
        if path is None:
            continue
        for name in _imports(path, root):
            # ``from ste_course.checks import Spec`` names an attribute, not a module: skipped
            if _path_of(name, root) is not None and name not in seen:
                seen[name] = module
                todo.append(name)
    return seen


def _allowed(module: str) -> bool:
    return module in ("ste_course", "ste_course.inside") or any(
        module == prefix or module.startswith(prefix + ".") for prefix in SHARED + ("ste_course.inside",))


def test_inside_imports_nothing_from_the_parents_side():
    closure = inside_closure()
    assert "ste_course.inside.server" in closure and "ste_course.inside.harness" in closure
    assert "ste_course.checks" in closure, "the closure follows imports (the server imports the checks)"
    parent_side = {m: by for m, by in closure.items() if not _allowed(m)}
    assert not parent_side, "the sandbox's code imports the parent's side: " + ", ".join(
        f"{m} (imported by {by})" for m, by in sorted(parent_side.items()))


def test_the_rule_catches_a_parent_import(tmp_path):
    """The checker itself can fail: a module that imports the judge is reported."""
    fake = tmp_path / "ste_course"
    (fake / "inside").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "inside" / "__init__.py").write_text("")
    (fake / "inside" / "server.py").write_text("def f():\n    from ..judge import judge\n")
    (fake / "judge.py").write_text("")
    closure = inside_closure(fake)
    assert closure.get("ste_course.judge") == "ste_course.inside.server"
    assert not _allowed("ste_course.grading.judge") and _allowed("ste_course.specs.backprop")


def test_parent_modules_live_outside_the_inside_package():
    """The fork server and the harness moved; the ``check`` command is ``selfcheck``."""
    for old in ("runner.py", "harness.py", "check.py"):
        assert not (PACKAGE / old).exists(), f"ste_course/{old} should have moved"
    assert (INSIDE / "server.py").is_file() and (INSIDE / "harness.py").is_file()
    assert (PACKAGE / "authoring" / "selfcheck.py").is_file()
