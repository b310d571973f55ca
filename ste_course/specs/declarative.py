"""Checks declared in a few lines of TOML: how a course adds its own without editing this package.

A course keeps its checks in ``checks/*.toml`` next to ``solutions/`` (or the folder named by
``[course] checks = "..."`` in ``ste_course.toml``). Each table declares one check::

    [hard_tanh]                          # registers hard_tanh/value and hard_tanh/gradient
    kind = "function"
    reference = "ste_utils.ste_sign"     # a dotted name, or "refs.py:my_ref" in the checks folder
    params = [{clip_value = 1.0}, {clip_value = 0.5}]   # keyword arguments, each choice is used
    boundary = [0.0, "clip_value", "-clip_value", "1.5*clip_value", 3.0]   # where bugs live

    [levels_of_2_bits]                   # registers levels_of_2_bits
    kind = "scalar"
    answer = 4                           # or reference = "refs.py:levels" (no arguments)

``function``: the student's ``f(x, **params)`` against ``reference(x, **params)``, forward values
and gradients (upstream gradients other than 1 included) on drawn inputs: the boundary points,
their float neighbours and Gaussian values, float16/32/64, several shapes, every ``params``
choice (the same drawing as the built-in elementwise checks). ``scalar``: a number the student
computed, within ``rtol``/``atol``; a wrong answer is not revealed in the message.

Which side runs what: the reference runs in the grader and in the student's own kernel; in the
sandbox only the generic runners below (:data:`RUNNERS`) run the student's code, chosen by
name from the grader's plan, so nothing of a course's ``checks/`` folder is read or executed
in the sandbox.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
import sys
import tomllib
from pathlib import Path

import numpy as np

from ste_course.specs import base
from ste_course.specs.base import Spec, register
from ste_course.specs.common import distinct, to_array
from ste_course.specs.elementwise import _describe, _run_gradient, _run_value, make_cycling_cases

CHECKS_ENV = "STE_COURSE_CHECKS"  # a folder of course checks, for the student's kernel and `check`
KEYS = {"function": {"kind", "reference", "params", "boundary", "label", "scale"},
        "scalar": {"kind", "answer", "reference", "summary", "rtol", "atol"}}
_TERM = re.compile(r"^\s*(-?)\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([A-Za-z_]\w*)\s*$")


class ChecksError(ValueError):
    """A course check that cannot be declared; the message is one line: file, check, what to fix."""


def _run_scalar(obj, case):
    return {"value": to_array(obj, "your answer").astype(np.float64)}


# The runners a sandboxed kernel may be asked to use for a declared check (by name, in the plan).
RUNNERS = {"function/value": _run_value, "function/gradient": _run_gradient, "scalar": _run_scalar}
DECLARED: dict = {}  # spec name -> runner name, for every check declared here
_LOADED: dict = {}  # folder -> [(Spec, runner name)] declared from it in this process


def runner_spec(name: str, runner: str) -> Spec:
    """The spec a sandboxed kernel uses for a declared check: its runner and nothing else."""
    return Spec(name=name, summary=name, cases=lambda rng, hidden: [], run=RUNNERS[runner],
                reference=lambda case: {})


# ------------------------------------------------------------------------------ the kinds
def _boundary(terms: list, where: str, params: list):
    """``boundary(params) -> [float]`` from numbers and terms like ``"-1.5*clip_value"``."""
    parsed = []
    for term in terms:
        if isinstance(term, (int, float)) and not isinstance(term, bool):
            parsed.append((float(term), None))
            continue
        match = _TERM.match(term) if isinstance(term, str) else None
        if not match:
            raise ChecksError(f"{where}: boundary entry {term!r} is neither a number nor a term like "
                              "\"clip_value\", \"-clip_value\" or \"0.5*clip_value\"")
        sign, factor, name = match.groups()
        for choice in params:
            if name not in choice:
                raise ChecksError(f"{where}: boundary entry {term!r} names {name!r}, which params "
                                  f"{choice} lacks; add it to every params choice")
        parsed.append(((-1.0 if sign else 1.0) * float(factor or 1.0), name))
    return lambda p: [k if name is None else k * float(p[name]) for k, name in parsed]


def _explain(label: str, what: str):
    def explain(case, output, index, expected, got):
        x = float(np.asarray(case["x"]).ravel()[index])
        up = float(np.asarray(case["upstream"]).ravel()[index])
        params = {k: v for k, v in case.items() if k not in ("x", "upstream")}
        at = f"x = {x:.6g}" + (f" with upstream gradient {up:.4g}" if output == "gradient" and up != 1 else "")
        given = f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else ""
        e, g = distinct(expected, got)
        return (f"The {what} of {label} at {at} ({np.asarray(case['x']).dtype.name}){given} should be {e}; "
                f"yours is {g}.")
    return explain


def _function(name: str, table: dict, where: str, folder: Path) -> list:
    for key in ("reference", "boundary"):
        if key not in table:
            raise ChecksError(f"{where}: a function check needs {key} = ...; see docs/authoring.md")
    params = table.get("params", [{}])
    if not isinstance(params, list) or not params or not all(isinstance(p, dict) for p in params):
        raise ChecksError(f"{where}: params must be a list of tables, e.g. [{{clip_value = 1.0}}]")
    if not isinstance(table["boundary"], list) or not table["boundary"]:
        raise ChecksError(f"{where}: boundary must be a non-empty list of numbers or parameter terms")
    reference = resolve(table["reference"], folder, where)
    label = str(table.get("label", f"your {name}"))
    cases = make_cycling_cases(_boundary(table["boundary"], where, params), params,
                               float(table.get("scale", 2.0)))
    specs = []
    for part, run in (("value", _run_value), ("gradient", _run_gradient)):
        specs.append((Spec(name=f"{name}/{part}", summary=f"{'forward values' if part == 'value' else 'gradients'} "
                                                          f"of {label}",
                           cases=cases, run=run, reference=lambda case, run=run: run(reference, case),
                           describe=_describe, explain=_explain(label, part)), f"function/{part}"))
    return specs


def _scalar(name: str, table: dict, where: str, folder: Path) -> list:
    if ("answer" in table) == ("reference" in table):
        raise ChecksError(f"{where}: a scalar check needs exactly one of answer = <number> or "
                          "reference = \"module.function\"")
    if "answer" in table:
        answer = table["answer"]
        if not isinstance(answer, (int, float)) or isinstance(answer, bool):
            raise ChecksError(f"{where}: answer must be a number, received {answer!r}")
        value = lambda: answer  # noqa: E731
    else:
        value = resolve(table["reference"], folder, where)
    rtol, atol = float(table.get("rtol", 1e-6)), float(table.get("atol", 1e-9))
    summary = str(table.get("summary", f"the value of {name}"))

    def compare(case, expected, got):
        values, _ = got["value"]
        if values.size != 1:
            return [f"{summary}: your answer should be one number; yours has shape {tuple(values.shape)}."]
        mine = float(values.ravel()[0])
        if not np.isclose(mine, float(expected["value"]), rtol=rtol, atol=atol):
            return [f"{summary}: your answer {mine:.6g} is not right (checked to a relative tolerance "
                    f"of {rtol:g})."]
        return []

    return [(Spec(name=name, summary=summary, cases=lambda rng, hidden: [{}], run=_run_scalar,
                  reference=lambda case: {"value": np.float64(value())}, check_dtype=False,
                  compare=compare), "scalar")]


KINDS = {"function": _function, "scalar": _scalar}


# ------------------------------------------------------------------------------ loading
def resolve(name, folder: Path, where: str):
    """A callable from ``"package.module.function"`` or ``"file.py:function"`` (a file of the
    checks folder, imported as a module of its own)."""
    if not isinstance(name, str) or not name:
        raise ChecksError(f"{where}: reference must be a string such as \"ste_utils.ste_sign\"")
    try:
        if ":" in name:
            file, attr = name.split(":", 1)
            path = (folder / file).resolve()
            module_name = f"ste_course_checks_{abs(hash(str(path)))}"
            module = sys.modules.get(module_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(module_name, path)
                if spec is None or not path.is_file():
                    raise ChecksError(f"{where}: reference {name!r}: no file {path}")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules[module_name] = module
        else:
            module_path, _, attr = name.rpartition(".")
            module = importlib.import_module(module_path)
        target = getattr(module, attr)
    except ChecksError:
        raise
    except Exception as err:  # noqa: BLE001 - any import problem is the declaration's
        raise ChecksError(f"{where}: reference {name!r} cannot be imported ({type(err).__name__}: "
                          f"{err}); use \"package.module.function\" or \"file.py:function\"") from None
    if not callable(target):
        raise ChecksError(f"{where}: reference {name!r} is not callable")
    return target


def declare(name: str, table: dict, where: str, folder: Path) -> list:
    """Register the checks of one declaration; returns ``[(Spec, runner name)]``."""
    kind = table.get("kind")
    if kind not in KINDS:
        close = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ChecksError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}{hint}")
    unknown = sorted(set(table) - KEYS[kind])
    if unknown:
        close = difflib.get_close_matches(unknown[0], KEYS[kind], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ChecksError(f"{where}: unknown key {unknown[0]!r}{hint}; a {kind} check takes "
                          f"{', '.join(sorted(KEYS[kind]))}")
    # the built-in names are taken first: importing this module ran ste_course/specs/__init__.py
    made = KINDS[kind](name, table, where, folder)
    for spec, _ in made:
        if spec.name in base.SPECS:
            raise ChecksError(f"{where}: a check named {spec.name!r} already exists; choose another name")
    for spec, runner in made:
        register(spec)
        DECLARED[spec.name] = runner
    return made


def load_folder(folder: Path) -> list:
    """Declare every table of ``folder/*.toml`` (once per process); returns the check names.

    Raises:
        ChecksError: the first declaration that cannot be used (one line: where and what).
    """
    folder = Path(folder).resolve()
    if folder in _LOADED:  # again (e.g. after the harness restored the built-in registry)
        for spec, runner in _LOADED[folder]:
            base.SPECS.setdefault(spec.name, spec)
            DECLARED[spec.name] = runner
        return []
    if not folder.is_dir():
        return []
    made = _LOADED[folder] = []
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise ChecksError(f"{path}: not readable TOML ({err})") from None
        for name, table in data.items():
            if not isinstance(table, dict):
                raise ChecksError(f"{path} [{name}]: each check is a table: [{name}] then kind = ...")
            made += declare(name, table, f"{path} [{name}]", folder)
    return [spec.name for spec, _ in made]


def checks_folder(root: Path) -> Path:
    """The course's checks folder: ``[course] checks`` of ``root/ste_course.toml``, else ``checks/``."""
    root = Path(root)
    config = root / "ste_course.toml"
    if config.is_file():
        try:
            named = tomllib.loads(config.read_text(encoding="utf-8")).get("course", {}).get("checks")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            named = None  # reported where the configuration is read (ste_course.grading.late)
        if isinstance(named, str):
            return (root / named).resolve()
    return (root / "checks").resolve()


def discover() -> list:
    """In a student's or instructor's kernel: load the course checks of ``$STE_COURSE_CHECKS``, or
    of the course around the working folder (a folder with ``solutions/`` or ``exercises/``
    within three levels up). Returns the names declared now."""
    if os.environ.get(CHECKS_ENV):
        return load_folder(Path(os.environ[CHECKS_ENV]))
    here = Path.cwd()
    for root in [here, *here.parents][:4]:
        if (root / "solutions").is_dir() or (root / "exercises").is_dir():
            return load_folder(checks_folder(root))
    return []


__all__ = ["ChecksError", "RUNNERS", "DECLARED", "runner_spec", "load_folder", "checks_folder", "discover",
           "declare", "resolve", "CHECKS_ENV"]
