"""Forbid by derivation: which ``ste_utils`` functions would give a check's answer.

A part that grades a straight-through estimator must be the student's own work, so it forbids
every ``ste_utils`` function whose forward *or* backward gives its answer. That list is derived,
never kept by hand: :func:`derived_forbid` evaluates every function the library's modules define
(private helpers too: ``discrete._pass_through(x, result)`` is ``straight_through``) on the
spec's probe inputs (the visible cases and the first hidden ones of the instructor's stand-in
seed), called as a student would wrap it (:func:`call_styles`: ``f(x, *args, **kwargs)``,
``f(x, *values)``, ``f(x)``, without keywords ``f`` does not take, and with an extra parameter
filled with 0 at each place, as ``lsq_plus_quantize(x, step, 0.0, bits)`` is LSQ), and compares
each output of the spec (e.g. ``value``, ``gradient``) with the reference, one output at a time.
A function matching an output that a trivial answer (identity, zeros) does not match gives that
output: wrapped as in ``h = f(x, c); return h + tf.stop_gradient(sign(x) - h)`` it would score,
so it is forbidden. So is every function that returns the same private helper as a forbidden one
(:func:`same_mechanism`, from the library's call graph read with ``ast``: ``lsq_quantize`` and
``lsq_plus_quantize`` both return ``_learned_grid``), and that helper.

Runs in the grader and in ``ste-course check`` (never in the sandbox while grading), in a child
process, cached on disk by a digest of the code it depends on (:func:`derived_forbids`).
:func:`prove_forbidden` is ``ste-course check``'s proof, run in the solution's own kernel.
"""

from __future__ import annotations

import ast
import inspect

from ste_course.evidence import encode_array
from ste_course.files import atomic_write
from ste_course.specs.base import SOLUTION_HIDDEN_SEED, compare, draw_cases, get_spec, student_case

PROBE_HIDDEN_CASES = 3  # hidden cases of the stand-in seed probed besides the visible ones


def library_functions() -> dict:
    """``{"ste_utils.<name>": function}`` for every function defined in a module of ``ste_utils``
    that ``import ste_utils`` loads, private helpers included (``discrete._pass_through`` is an
    answer as much as ``straight_through`` is). Labelled as the tripwires label them
    (:func:`ste_course.inside.forbid.reference_codes`: the first name a function has, ``ste_utils``
    first, then its modules in order)."""
    import sys

    import ste_utils

    found, seen = {}, set()
    modules = [m for n, m in sorted(sys.modules.items()) if n == "ste_utils" or n.startswith("ste_utils.")]
    for module in [ste_utils] + [m for m in modules if m is not ste_utils]:
        names = ste_utils.__all__ if module is ste_utils else sorted(vars(module))
        for name in names:
            f = getattr(module, name, None)
            if inspect.isfunction(f) and f.__module__.startswith("ste_utils") and f not in seen:
                seen.add(f)
                found.setdefault(f"ste_utils.{name}", f)
    return found


NEUTRAL = 0.0  # what fills a sibling's extra parameter (an offset of 0, a False flag)


def call_styles(f):
    """``f`` called the ways a student wraps a sibling: all arguments, parameters positionally
    (``ste_heaviside(x, clip_value)`` for ``clip_value=...``), ``x`` alone, without the keywords
    ``f`` does not take (its defaults instead), and with one extra parameter filled with a neutral
    value at each place (``lsq_plus_quantize(x, step, 0.0, bits, ...)``: LSQ+ with offset 0 is
    LSQ)."""
    try:
        params = inspect.signature(f).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def own_keywords(x, *a, **k):
        return f(x, *a, **{n: v for n, v in k.items() if takes_any or n in params})

    def neutral_at(j, by_name):
        def style(x, *a, **k):
            a = a[:j] + (NEUTRAL,) + a[j:]
            return f(x, *a, **k) if by_name else f(x, *a, *k.values())
        return style

    return (lambda x, *a, **k: f(x, *a, **k),
            lambda x, *a, **k: f(x, *a, *k.values()),
            lambda x, *a, **k: f(x),
            own_keywords,
            *(neutral_at(j, by_name) for j in range(8) for by_name in (True, False)))


def _call_shape(spec, case):
    """``(x, args, kwargs)``: how ``spec`` calls the student's function on ``case`` (recorded
    with a stand-in returning ``x``), or None when it calls no function of ``x``."""
    seen = []

    def stand_in(x, *args, **kwargs):
        seen.append((x, args, kwargs))
        return x

    try:
        spec.run(stand_in, student_case(spec, case))
    except Exception:  # noqa: BLE001 - a spec that wants another kind of object
        pass
    return seen[0] if seen else None


def candidate_styles(spec, case, f) -> list:
    """The :func:`call_styles` of ``f`` worth grading on ``spec``: those that call it differently
    for the way ``spec`` calls an answer, and whose plain forward on ``case`` runs (most
    functions fail here, in microseconds, instead of in a gradient or a Jacobian)."""
    styles = call_styles(f)
    shape = _call_shape(spec, case)
    if shape is None:
        return list(styles[:3])
    x, args, kwargs = shape
    distinct = [styles[0]] + ([styles[1]] if kwargs else []) + ([styles[2]] if args or kwargs else [])
    try:
        signature = inspect.signature(f)
    except (TypeError, ValueError):
        return _running(distinct, x, args, kwargs)

    def binds(*a, **k):
        try:
            signature.bind(x, *a, **k)
            return True
        except TypeError:
            return False

    values = tuple(kwargs.values())
    if kwargs and not binds(*args, **kwargs):  # a keyword it does not take: its default instead
        distinct.append(styles[3])
    if not binds(*args, **kwargs):  # e.g. one parameter more than the call: filled at each place
        for j in range(min(len(args) + 1, 8)):
            a = args[:j] + (NEUTRAL,) + args[j:]
            distinct += [style for style, ok in ((styles[4 + 2 * j], binds(*a, **kwargs)),
                                                  (styles[5 + 2 * j], kwargs and binds(*a, *values))) if ok]
    return _running(distinct, x, args, kwargs)


def _running(styles, x, args, kwargs) -> list:
    """The ``styles`` whose plain forward on the spec's call runs."""
    kept = []
    for style in styles:
        try:
            style(x, *args, **kwargs)
        except Exception:  # noqa: BLE001 - cannot even run forward: gives nothing
            continue
        kept.append(style)
    return kept


def _evidence(spec, fn, case):
    try:
        outputs = spec.run(fn, student_case(spec, case))
        return {"outputs": {str(k): encode_array(v) for k, v in outputs.items()}}
    except Exception:  # noqa: BLE001 - a function that cannot answer gives nothing
        return None


def _matches(spec, cases, references, fn) -> set:
    """The outputs of ``spec`` that ``fn`` gets right on every case (``{"*"}``: the spec's own
    comparison, e.g. a threshold, passes as a whole). Case by case, stopping at the first that
    leaves nothing matched (most functions fail the first case: one run, not one per case)."""
    left = {"*"} if spec.compare is not None else set(references[0])
    for case, reference in zip(cases, references):
        evidence = _evidence(spec, fn, case)
        if evidence is None:
            return set()
        if spec.compare is not None:
            left = left if not compare(spec, case, reference, evidence) else set()
        else:
            left = {name for name in left if not compare(spec, case, {name: reference[name]}, evidence)}
        if not left:
            break
    return left


def probe_cases(spec) -> list:
    return draw_cases(spec, False, 0) + draw_cases(spec, True, SOLUTION_HIDDEN_SEED)[:PROBE_HIDDEN_CASES]


def _derive(spec_name: str, skip=()):
    """Yields ``(label, gives)`` for each :func:`library_functions` entry on ``spec_name`` (in this process)."""
    spec = get_spec(spec_name)
    cases = probe_cases(spec)
    try:
        references = [spec.reference(c) for c in cases]
    except Exception:  # noqa: BLE001 - a spec without a reference to compare with derives nothing
        return
    import tensorflow as tf

    trivial = set()
    for control in (lambda x, *a, **k: x, lambda x, *a, **k: tf.zeros_like(x)):
        trivial |= _matches(spec, cases, references, control)
    for label, f in library_functions().items():
        if label not in skip:
            yield label, any(_matches(spec, cases, references, style) - trivial
                             for style in candidate_styles(spec, cases[0], f))


def _returned_helpers(tree) -> dict:
    """``{function: private helpers it returns}`` for the module-level functions of a module's
    ``ast``: the private module-level function whose call is the whole value of one of its own
    ``return`` statements (not in nested functions), e.g. ``lsq_quantize -> {_learned_grid}``
    (a helper called inside a larger expression, such as a check of an argument, is not one)."""
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    returned = {}
    for name, node in functions.items():
        found, todo = set(), list(node.body)
        while todo:
            stmt = todo.pop()
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            if isinstance(stmt, ast.Return):
                call = stmt.value
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) \
                        and call.func.id.startswith("_") and call.func.id in functions:
                    found.add(call.func.id)
            else:
                todo.extend(ast.iter_child_nodes(stmt))
        returned[name] = found
    return returned


def library_cores() -> dict:
    """``{"ste_utils.<name>": private helpers its result comes from, transitively}`` for every
    module-level function of ``ste_utils``, read from the source with ``ast`` (no import): two
    functions whose results come from one helper are one mechanism (``lsq_quantize`` and
    ``lsq_plus_quantize`` both return ``_learned_grid``)."""
    import importlib.util
    from pathlib import Path

    library = Path(importlib.util.find_spec("ste_utils").origin).parent  # found, not imported
    cores = {}
    for path in sorted(library.glob("*.py")):
        returned = _returned_helpers(ast.parse(path.read_text(encoding="utf-8")))
        for name in returned:
            reached, todo = set(), list(returned[name])
            while todo:
                helper = todo.pop()
                if helper not in reached:
                    reached.add(helper)
                    todo.extend(returned.get(helper, ()))
            cores.setdefault(f"ste_utils.{name}", {f"ste_utils.{h}" for h in reached})
    return cores


def same_mechanism(labels) -> set:
    """``labels`` with every function that shares a core helper with one of them
    (:func:`library_cores`), and those helpers."""
    cores = library_cores()
    shared = set().union(*(cores.get(label, set()) | ({label} if label.rpartition(".")[2].startswith("_") else set())
                           for label in labels)) if labels else set()
    return set(labels) | shared | {label for label, core in cores.items() if core & shared}


def _code_digest() -> str:
    """sha256 of the code a derivation depends on (``ste_utils`` and the specs)."""
    import hashlib
    import importlib.util
    from pathlib import Path

    library = Path(importlib.util.find_spec("ste_utils").origin).parent  # found, not imported (TensorFlow)
    digest = hashlib.sha256()
    specs = Path(importlib.util.find_spec("ste_course.specs").origin).parent
    for path in sorted(library.glob("*.py")) + sorted(specs.glob("*.py")) + [Path(__file__)]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


_DERIVED: dict = {}


def derived_forbids(spec_names) -> dict:
    """``{spec name: sorted labels}``: the ``ste_utils`` functions whose forward or backward
    gives an output of each spec, and those of the same mechanism (:func:`same_mechanism`).

    Computed in a child process (calling library functions on inputs they were not written for
    can crash TensorFlow itself: a crash while probing a function means it gives nothing, and the
    child goes on from the next one), cached in this process and on disk under
    ``$XDG_CACHE_HOME/ste_course`` by a digest of the code it depends on (a course's own
    declared checks, ``checks/*.toml``, are derived again in each process)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    wanted = [n for n in dict.fromkeys(spec_names) if n not in _DERIVED]
    if wanted:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ste_course" \
            / f"derived-{_code_digest()}.json"
        try:
            stored = json.loads(cache.read_text())
        except (OSError, ValueError):
            stored = {}
        stored = stored if isinstance(stored, dict) else {}
        from ste_course.specs.declarative import DECLARED  # a course's own checks: not in the digest

        missing = [n for n in wanted if n in DECLARED or not isinstance(stored.get(n), list)]
        done: dict = {name: {} for name in missing}
        crashed: dict = {name: [] for name in missing}
        while missing:
            request = json.dumps({"specs": missing, "done": done})
            child = subprocess.run([sys.executable, "-m", "ste_course.authoring.derive"], input=request,
                                   capture_output=True, text=True, timeout=1800)
            probing = None
            for line in child.stdout.splitlines():
                word, name, label, *verdict = line.split(" ") + [""]
                if word == "probing":
                    probing = (name, label)
                elif word == "gives" and name in done:
                    done[name][label], probing = verdict[0] == "yes", None
            if child.returncode == 0:
                break
            if probing is None or probing[0] not in done:
                raise RuntimeError(f"deriving the forbidden functions failed: {child.stderr[-300:]}")
            done[probing[0]][probing[1]] = False  # it crashed probing this one: it gives nothing
            crashed[probing[0]].append(probing[1])
        for name in missing:
            stored[name] = sorted(same_mechanism({label for label, gives in done[name].items() if gives}))
            stored[f"crashed {name}"] = sorted(crashed[name])
        _DERIVED.update({n: tuple(stored[n]) for n in wanted})
        _DERIVED.update({f"crashed {n}": tuple(stored.get(f"crashed {n}", ())) for n in wanted})
        if missing:
            try:
                kept = {k: v for k, v in stored.items() if k.rpartition(" ")[2] not in DECLARED}
                atomic_write(cache, json.dumps(kept, sort_keys=True), parents=True)
            except OSError:
                pass
    return {n: _DERIVED[n] for n in spec_names}


def crashed(spec_name: str) -> tuple:
    """The functions whose probe on ``spec_name`` crashed the probing process (derived after
    :func:`derived_forbids`; never called again on that spec's inputs)."""
    derived_forbids([spec_name])
    return _DERIVED.get(f"crashed {spec_name}", ())


def derived_forbid(spec_name: str) -> tuple:
    """:func:`derived_forbids` of one spec."""
    return derived_forbids([spec_name])[spec_name]


def asks_own(cell) -> bool:
    """Whether a test cell asks for the student's own implementation: a ``forbid`` key (even an
    empty list) in its ``ste_course`` metadata."""
    metadata = getattr(cell, "metadata", None) or {}
    return isinstance(metadata.get("ste_course"), dict) and "forbid" in metadata["ste_course"]


def part_forbid(cell) -> list:
    """What a test cell forbids. A part that asks for the student's own implementation says so
    with a ``forbid`` list in its ``ste_course`` metadata (functions named there by hand, such
    as layers, which no probe calls, may be added); it then forbids, besides, every function
    :func:`derived_forbid` finds for each of its check calls. A part without the key forbids
    nothing (an exercise that may use the library)."""
    if not asks_own(cell):
        return sorted(set(cell.forbid))
    derived = derived_forbids([call.spec for call in getattr(cell, "checks", ())])
    return sorted(set(cell.forbid) | {label for labels in derived.values() for label in labels})


def derive_all(cells) -> None:
    """Derive the lists of every marked check part of ``cells`` at once (one child process,
    not one per notebook, when the cache is cold)."""
    derived_forbids([call.spec for cell in cells if "forbid" in ((getattr(cell, "metadata", None) or {})
                                                                   .get("ste_course") or {})
                     for call in getattr(cell, "checks", ())])


def prove_forbidden(namespace: dict, parts: list) -> list:
    """``ste-course check``'s proof, run in the solution's kernel: for each part
    (``[grade_id, spec name, object expression, forbidden labels]``) whose object is a plain
    function, every ``ste_utils`` function not forbidden is wrapped as a student would
    (its backward with the solution's forward, ``h + tf.stop_gradient(solution - h)``, and its
    forward with the solution's backward) and graded on the spec's probe cases. Returns one line
    per wrapper that scores (it should have been forbidden)."""
    import tensorflow as tf

    problems = []
    for grade_id, spec_name, expression, forbid in parts:  # forbid: forbidden or not callable here
        try:
            solution = eval(expression, namespace)  # noqa: S307 - the instructor's own check call
        except Exception:  # noqa: BLE001
            continue
        if not inspect.isfunction(solution):
            continue
        spec = get_spec(spec_name)
        cases = probe_cases(spec)
        references = [spec.reference(c) for c in cases]
        outputs = {"*"} if spec.compare is not None else set(references[0])

        def wrappers(f):
            def backward_of_f(x, *a, **k):
                h = f(x, *a, **k)
                return h + tf.stop_gradient(solution(x, *a, **k) - h)

            def forward_of_f(x, *a, **k):
                r = solution(x, *a, **k)
                return r + tf.stop_gradient(f(x, *a, **k) - r)
            return backward_of_f, forward_of_f

        def scores(w):
            return bool(outputs) and _matches(spec, cases, references, w) == outputs

        # A wrapper that scores with a trivial sibling (identity, zeros) shows nothing about f:
        # e.g. the solution's forward alone passes a part that checks values only. The zeros are
        # also the solution's own shape and dtype: zeros like ``x`` do not even run when the answer
        # is another dtype (int32 accumulators to int8), another shape (a Jacobian) or ``x`` is
        # not a tensor (a proxy's name), and any sibling that runs would then seem to score.
        controls = (lambda x, *a, **kw: x, lambda x, *a, **kw: tf.zeros_like(x),
                    lambda x, *a, **kw: tf.zeros_like(solution(x, *a, **kw)))
        informative = [k for k in range(2) if not any(scores(wrappers(control)[k]) for control in controls)]
        for label, f in library_functions().items():
            if label in forbid or not informative:
                continue
            if any(scores(wrappers(style)[k]) for style in candidate_styles(spec, cases[0], f) for k in informative):
                problems.append(f"[{grade_id}] {spec_name}: an answer wrapping {label} scores; it is not forbidden")
    return problems


def main() -> None:
    """``python -m ste_course.authoring.derive`` < ``{"specs": [...], "done": {spec: {label: bool}}}``:
    ``probing SPEC LABEL`` before each function, ``gives SPEC LABEL yes|no`` after (skipping
    those done)."""
    import json
    import sys

    import ste_course.specs  # noqa: F401 - registers the specs

    request = json.loads(sys.stdin.read())
    for name in request["specs"]:
        done = request["done"].get(name, {})
        results = _derive(name, set(done))
        for label in (l for l in library_functions() if l not in done):
            print(f"probing {name} {label}", flush=True)
            got, gives = next(results, (label, False))
            print(f"gives {name} {got} {'yes' if gives else 'no'}", flush=True)


if __name__ == "__main__":
    main()
