"""Binder (repo2docker) builds the course from binder/, which it reads instead of the
repository's root: the pins of requirements.txt, the Python of pyproject.toml, the packages
installed editable and the student set-up of JupyterLab, as `make setup` does."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"


def requirements(path: Path) -> dict[str, str]:
    """name (with its environment marker) -> exact version, following ``-r`` includes the way
    pip does (relative to the including file)."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            pins.update(requirements(path.parent / line.split(None, 1)[1]))
            continue
        assert not line.startswith("-"), f"{path.name}: option {line!r} is not expected here"
        req = Requirement(line)
        (spec,) = req.specifier  # exactly one, an exact pin
        assert spec.operator == "==", f"{path.name}: {line!r} is not an exact pin"
        pins[f"{req.name.lower()}; {req.marker}" if req.marker else req.name.lower()] = spec.version
    return pins


def test_binder_installs_the_same_pins_as_requirements_txt():
    pins = requirements(ROOT / "requirements.txt")
    assert pins, "requirements.txt has no pins"
    assert requirements(BINDER / "requirements.txt") == pins


def test_binder_python_is_the_one_pyproject_requires():
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert runtime.startswith("python-"), runtime
    version = runtime.removeprefix("python-")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(f"{version}.0"), f"{runtime} vs requires-python {requires}"


def test_binder_installs_the_packages_and_the_student_lab():
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    text = post_build.read_text()
    assert "pip install" in text and "-e ." in text, "postBuild must install the packages editable"
    assert "scripts/lab-config.sh" in text, "postBuild must run the student set-up of JupyterLab"


def test_binder_kernels_are_quiet():
    start = BINDER / "start"
    assert os.access(start, os.X_OK), "binder/start must be executable"
    text = start.read_text()
    for line in ("export TF_CPP_MIN_LOG_LEVEL=2", "export TF_ENABLE_ONEDNN_OPTS=0", 'exec "$@"'):
        assert line in text, f"binder/start lacks {line!r}"
