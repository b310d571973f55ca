"""The package's layout is its architecture, and these tests hold it there.

``ste_course`` keeps the trust boundary and its wire format at the top (``checks``, ``evidence``,
``sandbox``, ``untrusted``, ``files``, ``inside/``, ``specs/``) and one package per role
(``authoring/``, ``grading/``, ``record/``, ``classroom/``, ``cli/``). Read from the source with
``ast`` (no import, so no TensorFlow), imports inside functions included:

* no import circle between modules anywhere in the package (a package's ``__init__`` importing
  its own modules is not one; two modules importing each other, directly or around, are);
* a module imports only what :data:`MAY_IMPORT` allows its package (or top-level module);
* what runs inside the sandbox (``inside/``) reaches nothing of the parent's side, at any depth;
* the spec registry (``specs/registry.py``) is a leaf.

Each rule is also shown failing on a copy of the package with a deliberate violation.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import ste_course

PACKAGE = Path(ste_course.__file__).resolve().parent
INSIDE = PACKAGE / "inside"
# modules the sandbox may reach (besides ste_course.inside.*)
SHARED = ("ste_course.checks", "ste_course.evidence", "ste_course.specs")

# What each part of the package may import (besides itself). Everything points one way, from the
# command line down to the wire format: cli -> classroom, grading, authoring; grading -> record ->
# authoring (the source notebooks); grading and authoring -> sandbox -> inside -> specs -> evidence.
# The one pair that points both ways is ``checks`` and ``inside``: ``checks`` is what test cells
# import, a face over ``inside.kernel``, and the fork server imports it before any notebook runs.
MAY_IMPORT = {
    "evidence": set(),
    "untrusted": set(),
    "files": set(),
    "specs": {"evidence", "references"},  # references: imported when a NumpyReference is called (never in the sandbox)
    "references": set(),
    "inside": {"checks", "specs", "evidence"},
    "checks": {"inside", "specs", "evidence"},
    "sandbox": {"inside", "untrusted", "files"},  # files: the uid leases' folder (a leaf mechanism)
    "authoring": {"sandbox", "specs", "evidence", "files", "untrusted"},  # evidence: derive.py grades probes as the judge does
    "record": {"authoring", "files", "untrusted"},
    "grading": {"record", "authoring", "sandbox", "checks", "specs", "evidence", "files", "untrusted"},
    "classroom": {"record", "specs", "files", "untrusted"},
    "cli": {"classroom", "grading", "record", "authoring", "sandbox", "specs", "files", "untrusted"},
    "exchange": {"classroom"},  # the shim that keeps ste_course.exchange.PrivateSubmit for running hubs
}
ROLES = ("cli", "classroom", "grading", "record", "authoring")
TOP_LEVEL = {"__init__.py", "checks.py", "evidence.py", "files.py", "sandbox.py", "untrusted.py", "exchange.py"}


# ------------------------------------------------------------------ the import graph, from the source
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
    """Every ``ste_course`` name ``path`` imports, anywhere in its code (``from m import n``
    gives ``m`` and ``m.n``: the submodule when ``n`` is one)."""
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
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n == "ste_course" or n.startswith("ste_course."))
    return found


def _targets(path: Path, root: Path) -> set:
    """The modules ``path`` imports: ``from m import n`` is an edge to ``m.n`` when that is a
    module, else to ``m``; importing a module is not counted as importing its parent packages."""
    names = _imports(path, root)
    modules = {n for n in names if _path_of(n, root) is not None}
    edges = set()
    for name in modules:
        submodules = {m for m in modules if m.rpartition(".")[0] == name and m != name}
        attributes = {n for n in names if n.rpartition(".")[0] == name and n not in modules}
        # ``from pkg import sub`` names pkg and pkg.sub: only pkg.sub unless pkg's own names are used too
        if not submodules or attributes or _plain_import(path, name):
            edges.add(name)
    edges.discard(_module_name(path, root))
    return edges


def _plain_import(path: Path, module: str) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(n, ast.Import) and any(a.name == module for a in n.names) for n in ast.walk(tree))


def import_graph(root: Path = PACKAGE) -> dict:
    """module -> the package's modules it imports (anywhere in its code)."""
    return {_module_name(p, root): _targets(p, root) for p in sorted(root.rglob("*.py"))
            if "__pycache__" not in p.parts}


def circles(graph: dict) -> list:
    """Every import circle of ``graph`` (Tarjan's strongly connected components), each as a
    path ``a -> b -> ... -> a``."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):  # iterative: no recursion limit on a long chain
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                if len(component) > 1:
                    found.append(_cycle_in(set(component), graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _cycle_in(component: set, graph: dict) -> str:
    start = min(component)
    path, seen = [start], {start}
    while True:
        nxt = sorted(graph[path[-1]] & component)
        back = start if start in nxt else None
        if back:
            return " -> ".join(path + [start])
        step = next((n for n in nxt if n not in seen), nxt[0])
        if step in seen:
            return " -> ".join(path[path.index(step):] + [step])
        path.append(step)
        seen.add(step)


def unit(module: str) -> str:
    """The part of the package a module belongs to: its subpackage, or itself at the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ste_course"


def wrong_way(graph: dict) -> list:
    """Imports that :data:`MAY_IMPORT` does not allow, as ``a -> b`` lines."""
    return [f"{a} -> {b}" for a, targets in sorted(graph.items()) for b in sorted(targets)
            if unit(a) != unit(b) and unit(b) != "ste_course" and unit(b) not in MAY_IMPORT.get(unit(a), set())]


# ------------------------------------------------------------------ the rules on the package
def test_no_import_circle_anywhere_in_the_package():
    graph = import_graph()
    assert "ste_course.grading.run" in graph and "ste_course.grading.judges" in graph["ste_course.grading.run"]
    assert "ste_course.specs.registry" in graph["ste_course.specs.base"], "the graph follows imports"
    found = circles(graph)
    assert not found, "import circles: " + "; ".join(found)


def test_every_import_points_the_allowed_way():
    graph = import_graph()
    assert set(map(unit, graph)) - {"ste_course", "__main__"} <= set(MAY_IMPORT), \
        f"a part of the package the table does not know: {set(map(unit, graph)) - set(MAY_IMPORT)}"
    bad = wrong_way(graph)
    assert not bad, "imports against the layout's direction (tests/test_layout.py MAY_IMPORT): " + ", ".join(bad)


def test_the_table_itself_points_one_way_between_roles():
    """The role packages form a chain (cli over classroom over grading over record over authoring):
    none may import one above it."""
    for i, upper in enumerate(ROLES):
        for lower in ROLES[i + 1:]:
            assert upper not in MAY_IMPORT[lower], f"{lower} may import {upper}"


def test_the_top_level_holds_only_the_trust_boundary_and_its_wire_format():
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert modules == TOP_LEVEL, f"move these into a role package: {sorted(modules - TOP_LEVEL)}"
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} == \
        {"inside", "specs", "references", *ROLES}


def test_the_spec_registry_is_a_leaf():
    assert not _imports(PACKAGE / "specs" / "registry.py", PACKAGE)


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


# Named by the specs' grader-side functions (a NumpyReference, deploy's case drawing), which the
# sandbox never calls; the sandbox hides the folder, so an import there raises
# (tests/test_numpy_references.py::test_the_sandbox_hides_the_references).
GRADER_ONLY = ("ste_course.references",)


def _allowed(module: str) -> bool:
    return module in ("ste_course", "ste_course.inside") or any(
        module == prefix or module.startswith(prefix + ".") for prefix in SHARED + GRADER_ONLY + ("ste_course.inside",))


def test_inside_imports_nothing_from_the_parents_side():
    closure = inside_closure()
    assert "ste_course.inside.server" in closure and "ste_course.inside.harness" in closure
    assert "ste_course.checks" in closure, "the closure follows imports (the server imports the checks)"
    parent_side = {m: by for m, by in closure.items() if not _allowed(m)}
    assert not parent_side, "the sandbox's code imports the parent's side: " + ", ".join(
        f"{m} (imported by {by})" for m, by in sorted(parent_side.items()))


def test_parent_modules_live_outside_the_inside_package():
    """The fork server and the harness moved; the ``check`` command is ``authoring.selfcheck``."""
    for old in ("runner.py", "harness.py", "check.py", "selfcheck.py", "grade.py", "judging.py", "record.py"):
        assert not (PACKAGE / old).exists(), f"ste_course/{old} should have moved"
    assert (INSIDE / "server.py").is_file() and (INSIDE / "harness.py").is_file()
    assert (PACKAGE / "authoring" / "selfcheck.py").is_file()


# ------------------------------------------------------------------ each rule can fail
def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "ste_course"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code + "\n", encoding="utf-8")


def test_a_circle_through_an_import_inside_a_function_is_found(tmp_path):
    copy = _copy(tmp_path)
    assert not circles(import_graph(copy)), "the copy starts clean"
    _append(copy / "record" / "recorder.py", "def _late():\n    from ste_course.grading.run import grade\n")
    graph = import_graph(copy)
    found = circles(graph)
    assert any("ste_course.record.recorder" in c and "ste_course.grading.run" in c for c in found), found
    assert "ste_course.record.recorder -> ste_course.grading.run" in wrong_way(graph)


def test_a_circle_between_siblings_under_a_package_init_is_found(tmp_path):
    """specs/__init__ importing its modules is fine; base <-> declarative (as before the split) is not."""
    copy = _copy(tmp_path)
    _append(copy / "specs" / "base.py", "def _discover():\n    from ste_course.specs.declarative import discover\n")
    found = circles(import_graph(copy))
    assert any("ste_course.specs.base" in c and "ste_course.specs.declarative" in c for c in found), found


def test_the_registry_stops_being_a_leaf_when_it_imports(tmp_path):
    copy = _copy(tmp_path)
    _append(copy / "specs" / "registry.py", "def _spec():\n    from ste_course.specs import base\n")
    assert _imports(copy / "specs" / "registry.py", copy)


def test_the_inside_rule_catches_a_parent_import(tmp_path):
    copy = _copy(tmp_path)
    _append(copy / "inside" / "server.py", "def _judge():\n    from ..grading.judge import judge\n")
    closure = inside_closure(copy)
    assert closure.get("ste_course.grading.judge") == "ste_course.inside.server"
    assert not _allowed("ste_course.grading.judge") and _allowed("ste_course.specs.backprop")
    assert "ste_course.inside.server -> ste_course.grading.judge" in wrong_way(import_graph(copy))
