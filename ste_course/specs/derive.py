"""Forbid by derivation: which ``ste_utils`` functions would give a check's answer.

A part that grades a straight-through estimator must be the student's own work, so it forbids
every public ``ste_utils`` function whose forward *or* backward gives its answer. That list is
derived, never kept by hand: :func:`derived_forbid` evaluates each public function on the
spec's probe inputs (the visible cases and the first hidden ones of the instructor's stand-in
seed), called as a student would wrap it (``f(x, *args, **kwargs)``, ``f(x, *values)``,
``f(x)``), and compares each output of the spec (e.g. ``value``, ``gradient``) with the
reference, one output at a time. A function matching an output that a trivial answer
(identity, zeros) does not match gives that output: wrapped as in
``h = f(x, c); return h + tf.stop_gradient(sign(x) - h)`` it would score, so it is forbidden.

Runs in the grader and in ``ste-course check`` (never in the sandbox while grading): each
spec's list is computed once per process (~0.2 s for an elementwise spec).
:func:`prove_forbidden` is ``ste-course check``'s proof, run in the solution's own kernel.
"""

from __future__ import annotations

import inspect

from ste_course.evidence import encode_array
from ste_course.specs.base import SOLUTION_HIDDEN_SEED, compare, draw_cases, get_spec, student_case

PROBE_HIDDEN_CASES = 3  # hidden cases of the stand-in seed probed besides the visible ones


def public_functions() -> dict:
    """``{"ste_utils.<name>": function}`` for every plain function ``ste_utils`` exports."""
    import ste_utils

    return {f"ste_utils.{name}": getattr(ste_utils, name) for name in ste_utils.__all__
            if inspect.isfunction(getattr(ste_utils, name, None))}


def call_styles(f):
    """``f`` called the ways a student wraps a sibling: all arguments, parameters positionally
    (``ste_heaviside(x, clip_value)`` for ``clip_value=...``), ``x`` alone."""
    return (lambda x, *a, **k: f(x, *a, **k),
            lambda x, *a, **k: f(x, *a, *k.values()),
            lambda x, *a, **k: f(x))


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
        return list(styles)
    x, args, kwargs = shape
    distinct = [styles[0]] + ([styles[1]] if kwargs else []) + ([styles[2]] if args or kwargs else [])
    kept = []
    for style in distinct:
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
    """Yields ``(label, gives)`` for each public function of ``spec_name`` (in this process)."""
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
    for label, f in public_functions().items():
        if label not in skip:
            yield label, any(_matches(spec, cases, references, style) - trivial
                             for style in candidate_styles(spec, cases[0], f))


def _code_digest() -> str:
    """sha256 of the code a derivation depends on (``ste_utils`` and the specs)."""
    import hashlib
    import importlib.util
    from pathlib import Path

    library = Path(importlib.util.find_spec("ste_utils").origin).parent  # found, not imported (TensorFlow)
    digest = hashlib.sha256()
    for folder in (library, Path(__file__).parent):
        for path in sorted(folder.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


_DERIVED: dict = {}


def derived_forbids(spec_names) -> dict:
    """``{spec name: sorted labels}``: the public ``ste_utils`` functions whose forward or
    backward gives an output of each spec.

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
            child = subprocess.run([sys.executable, "-m", "ste_course.specs.derive"], input=request,
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
            stored[name] = sorted(label for label, gives in done[name].items() if gives)
            stored[f"crashed {name}"] = sorted(crashed[name])
        _DERIVED.update({n: tuple(stored[n]) for n in wanted})
        _DERIVED.update({f"crashed {n}": tuple(stored.get(f"crashed {n}", ())) for n in wanted})
        if missing:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps({k: v for k, v in stored.items() if k.rpartition(" ")[2] not in DECLARED},
                                          sort_keys=True))
                os.replace(tmp, cache)
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


def part_forbid(cell) -> list:
    """What a test cell forbids. A part that asks for the student's own implementation says so
    with a ``forbid`` list in its ``ste_course`` metadata (functions named there by hand, such
    as layers, which no probe calls, may be added); it then forbids, besides, every function
    :func:`derived_forbid` finds for each of its check calls. A part without the key forbids
    nothing (an exercise that may use the library)."""
    metadata = getattr(cell, "metadata", None) or {}
    marked = isinstance(metadata.get("ste_course"), dict) and "forbid" in metadata["ste_course"]
    if not marked:
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
    function, every public ``ste_utils`` function not forbidden is wrapped as a student would
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
        # e.g. the solution's forward alone passes a part that checks values only.
        informative = [k for k in range(2) if not any(
            scores(wrappers(control)[k]) for control in (lambda x, *a, **kw: x, lambda x, *a, **kw: tf.zeros_like(x)))]
        for label, f in public_functions().items():
            if label in forbid or not informative:
                continue
            if any(scores(wrappers(style)[k]) for style in candidate_styles(spec, cases[0], f) for k in informative):
                problems.append(f"[{grade_id}] {spec_name}: an answer wrapping {label} scores; it is not forbidden")
    return problems


def main() -> None:
    """``python -m ste_course.specs.derive`` < ``{"specs": [...], "done": {spec: {label: bool}}}``:
    ``probing SPEC LABEL`` before each function, ``gives SPEC LABEL yes|no`` after (skipping
    those done)."""
    import json
    import sys

    import ste_course.specs  # noqa: F401 - registers the specs

    request = json.loads(sys.stdin.read())
    for name in request["specs"]:
        done = request["done"].get(name, {})
        results = _derive(name, set(done))
        for label in (l for l in public_functions() if l not in done):
            print(f"probing {name} {label}", flush=True)
            got, gives = next(results, (label, False))
            print(f"gives {name} {got} {'yes' if gives else 'no'}", flush=True)


if __name__ == "__main__":
    main()
