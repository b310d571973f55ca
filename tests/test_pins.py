"""The environment files agree: requirements.txt (exact pins, the source of truth),
environment.yml (conda-forge + pip) and pyproject.toml (ranges).

Fails when a version drifts, when a package is pinned on one side only, when a pin is not
exact, when a pyproject range no longer admits the pin, or when this venv has drifted from the
pins. The checks are plain functions returning the problems found, so the tests at the bottom
can feed them drifted copies and see each drift reported.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = (ROOT / "requirements.txt").read_text()
ENVIRONMENT = (ROOT / "environment.yml").read_text()
PYPROJECT = (ROOT / "pyproject.toml").read_text()
CONDA_TOOLS = {"python", "pip"}  # in environment.yml, not pins of requirements.txt


def _key(req: Requirement) -> tuple[str, str]:
    return canonicalize_name(req.name), str(req.marker or "")


def _show(key: tuple[str, str]) -> str:
    name, marker = key
    return f"{name}; {marker}" if marker else name


def _exact(req: Requirement, where: str, problems: list[str]) -> str | None:
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator not in ("==", "==="):
        problems.append(f"{where}: {req} is not an exact pin (name==version)")
        return None
    return specs[0].version


def parse_requirements(text: str, problems: list[str]) -> dict[tuple[str, str], str]:
    """(name, marker) -> exact version, from a requirements file (comments, blank lines ok)."""
    pins = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith("-"):
            problems.append(f"requirements.txt:{number}: option {line!r} is not expected")
            continue
        req = Requirement(line)
        version = _exact(req, f"requirements.txt:{number}", problems)
        if _key(req) in pins:
            problems.append(f"requirements.txt:{number}: {_show(_key(req))} pinned twice")
        if version is not None:
            pins[_key(req)] = version
    return pins


def _conda_spec(spec: str) -> tuple[str, str, bool]:
    """'numpy==2.4.6' -> ('numpy', '2.4.6', exact); 'python=3.11' -> ('python', '3.11', False)."""
    for operator, exact in (("==", True), ("=", False)):
        if operator in spec:
            name, version = spec.split(operator, 1)
            return canonicalize_name(name.strip()), version.strip(), exact
    return canonicalize_name(spec.strip()), "", False


def parse_environment(text: str, problems: list[str]):
    """(conda pins {name: version}, pip pins {(name, marker): version}, python version)."""
    data = yaml.safe_load(text)
    if data.get("name") != "ste-course":
        problems.append(f"environment.yml: name should be 'ste-course'. Received: {data.get('name')!r}")
    if data.get("channels") != ["conda-forge"]:
        problems.append(f"environment.yml: channels should be [conda-forge]. "
                        f"Received: {data.get('channels')!r}")
    conda, pip, python = {}, {}, None
    for item in data.get("dependencies") or []:
        if isinstance(item, dict):
            for line in item.get("pip") or []:
                req = Requirement(line)
                version = _exact(req, "environment.yml (pip)", problems)
                if version is not None:
                    pip[_key(req)] = version
            continue
        name, version, exact = _conda_spec(str(item))
        if name == "python":
            python = version
        elif name in CONDA_TOOLS:
            continue
        elif not exact:
            problems.append(f"environment.yml: {item} is not an exact pin (name==version)")
        else:
            conda[name] = version
    return conda, pip, python


def pin_drift(requirements_text: str, environment_text: str) -> list[str]:
    """Every difference between the pins of requirements.txt and environment.yml."""
    problems: list[str] = []
    pins = parse_requirements(requirements_text, problems)
    conda, pip, python = parse_environment(environment_text, problems)
    if python is None:
        problems.append("environment.yml does not pin python")
    for name in set(conda) & {n for n, _ in pip}:
        problems.append(f"environment.yml: {name} is both a conda and a pip dependency")
    for key, version in pins.items():
        name, marker = key
        if key in pip:
            found, where = pip[key], "pip"
        elif not marker and name in conda:
            found, where = conda[name], "conda"
        else:
            same_name = [_show(k) for k in pip if k[0] == name] + ([name] if name in conda else [])
            hint = f" (it has {', '.join(same_name)}: markers differ)" if same_name else ""
            problems.append(f"{_show(key)}=={version} is in requirements.txt but not in "
                            f"environment.yml{hint}")
            continue
        if found != version:
            problems.append(f"{_show(key)}: requirements.txt pins {version}, "
                            f"environment.yml ({where}) pins {found}")
    env_keys = set(pip) | {(name, "") for name in conda}
    for key in sorted(env_keys - set(pins)):
        version = pip.get(key) or conda.get(key[0])
        problems.append(f"{_show(key)}=={version} is in environment.yml but not in requirements.txt")
    return problems


def range_violations(pyproject_text: str, requirements_text: str,
                     environment_text: str | None = None) -> list[str]:
    """pyproject.toml's dependencies that requirements.txt does not pin, or pins outside the
    range; and the Python of environment.yml outside requires-python."""
    problems: list[str] = []
    pins = parse_requirements(requirements_text, problems)
    project = tomllib.loads(pyproject_text)["project"]
    for line in project.get("dependencies", []):
        req = Requirement(line)
        key = _key(req)
        if key not in pins:
            problems.append(f"pyproject.toml depends on {_show(key)} but requirements.txt "
                            f"does not pin it (with that marker)")
        elif not req.specifier.contains(pins[key], prereleases=True):
            problems.append(f"{_show(key)}: requirements.txt pins {pins[key]}, outside "
                            f"pyproject.toml's range {req.specifier}")
    if environment_text is not None:
        _, _, python = parse_environment(environment_text, problems)
        requires = SpecifierSet(project["requires-python"])
        if python is None or not requires.contains(python):
            problems.append(f"environment.yml: python={python} is outside requires-python {requires}")
    return problems


# ------------------------------------------------------------------ the real files
def test_environment_yml_mirrors_requirements_txt():
    assert pin_drift(REQUIREMENTS, ENVIRONMENT) == []


def test_pyproject_ranges_admit_the_pins():
    assert range_violations(PYPROJECT, REQUIREMENTS, ENVIRONMENT) == []


def test_every_requirement_is_an_exact_pin():
    problems: list[str] = []
    pins = parse_requirements(REQUIREMENTS, problems)
    assert problems == [] and len(pins) >= 15


def test_this_venv_has_the_pinned_versions():
    """The interpreter running the tests has what requirements.txt pins (`make setup`
    reinstalls when the pins change): otherwise the other tests test something else."""
    problems: list[str] = []
    environment = default_environment()
    for (name, marker), version in parse_requirements(REQUIREMENTS, problems).items():
        if marker and not Requirement(f"{name}; {marker}").marker.evaluate(environment):
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}=={version} is not installed")
            continue
        if installed != version:
            problems.append(f"{name}: pinned {version}, installed {installed}")
    assert problems == []


# ------------------------------------------------------------------ the checks can fail
def _edit(text: str, old: str, new: str) -> str:
    assert old in text, f"fixture text lacks {old!r}"
    return text.replace(old, new, 1)


@pytest.mark.parametrize("old,new,expected", [
    ("numpy==2.4.6", "numpy==2.4.5", "numpy: requirements.txt pins 2.4.6, environment.yml (conda) pins 2.4.5"),
    ("keras==3.15.1", "keras==3.15.0", "keras: requirements.txt pins 3.15.1, environment.yml (pip) pins 3.15.0"),
    ("  - pytest==9.2.0\n", "", "pytest==9.2.0 is in requirements.txt but not in environment.yml"),
    ("  - tqdm==4.70.1\n", "  - tqdm==4.70.1\n  - rich==14.0.0\n",
     "rich==14.0.0 is in environment.yml but not in requirements.txt"),
    ('platform_machine == "x86_64"\n', 'platform_machine == "aarch64"\n', "markers differ"),
    ("numpy==2.4.6", "numpy=2.4.6", "numpy=2.4.6 is not an exact pin"),
    ("  - pip:\n", "  - pip:\n      - numpy==2.4.6\n", "numpy is both a conda and a pip dependency"),
    ("channels:\n  - conda-forge\n", "channels:\n  - defaults\n", "channels should be [conda-forge]"),
    ("name: ste-course", "name: course", "name should be 'ste-course'"),
    ("  - python=3.11\n", "", "environment.yml does not pin python"),
])
def test_drift_in_environment_yml_is_reported(old, new, expected):
    problems = pin_drift(REQUIREMENTS, _edit(ENVIRONMENT, old, new))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("old,new,expected", [
    ("numpy==2.4.6", "numpy==2.5.0", "numpy: requirements.txt pins 2.5.0, environment.yml (conda) pins 2.4.6"),
    ("hypothesis==6.170.17", "hypothesis>=6", "hypothesis>=6 is not an exact pin"),
    ("keras==3.15.1\n", "", "keras==3.15.1 is in environment.yml but not in requirements.txt"),
    ("keras==3.15.1\n", "keras==3.15.1\nkeras==3.15.1\n", "keras pinned twice"),
])
def test_drift_in_requirements_txt_is_reported(old, new, expected):
    problems = pin_drift(_edit(REQUIREMENTS, old, new), ENVIRONMENT)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("old,new,expected", [
    ('"keras>=3,<4"', '"keras>=4"', "keras: requirements.txt pins 3.15.1, outside pyproject.toml's range >=4"),
    ('"tensorflow-cpu>=2.21,<2.22;', '"tensorflow-cpu>=2.22;', "tensorflow-cpu; sys_platform"),
    ('"tqdm",', '"tqdm",\n    "rich",', "pyproject.toml depends on rich but requirements.txt does not pin it"),
    ('requires-python = ">=3.11,<3.12"', 'requires-python = ">=3.12"', "python=3.11 is outside requires-python"),
])
def test_pyproject_range_violations_are_reported(old, new, expected):
    problems = range_violations(_edit(PYPROJECT, old, new), REQUIREMENTS, ENVIRONMENT)
    assert any(expected in p for p in problems), problems


def test_a_pin_moving_outside_the_range_is_reported():
    problems = range_violations(PYPROJECT, _edit(REQUIREMENTS, "keras==3.15.1", "keras==4.0.0"))
    assert any("keras: requirements.txt pins 4.0.0, outside" in p for p in problems), problems
