"""The project installs as a user gets it (``pip install .``, not editable) with every subpackage.

A missing entry in ``pyproject.toml``'s package list passes every other test (the tests import the
working tree) and breaks a real installation. Here the project is installed into a throwaway
virtual environment by this environment's pip (no download: ``--no-deps --no-index
--no-build-isolation``; the test environment's packages are visible to it through a ``.pth``
file, so TensorFlow is not installed again), then every module of the installed package is imported from the installed copy, the
``ste-course`` console script runs, and the old exchange path of a running hub's configuration
still resolves.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = r"""
import importlib, pathlib, sys
import ste_course
installed = pathlib.Path(ste_course.__file__).resolve().parent
assert installed.is_relative_to(pathlib.Path(sys.prefix).resolve()), installed
names = sorted(".".join(p.relative_to(installed.parent).with_suffix("").parts).removesuffix(".__init__")
               for p in installed.rglob("*.py") if p.name != "__main__.py")
for name in names:
    module = importlib.import_module(name)
    assert pathlib.Path(module.__file__).resolve().is_relative_to(installed), (name, module.__file__)
from ste_course.exchange import PrivateSubmit  # a hub configured before the split names this path
from ste_course.classroom.exchange import PrivateSubmit as moved
assert PrivateSubmit is moved
print(len(names))
"""


def test_a_non_editable_install_has_every_subpackage(tmp_path):
    source = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside pyproject.toml
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("ste_course", "ste_utils"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the installed copy is importable
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # this environment's packages (TensorFlow, nbgrader, ...) after the venv's own
    Path(purelib, "test-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", "--no-build-isolation", str(source)], check=True, cwd=tmp_path)
    expected = sorted(p.parent.relative_to(ROOT).as_posix().replace("/", ".")
                      for p in (ROOT / "ste_course").rglob("__init__.py") if "__pycache__" not in p.parts)
    installed = Path(purelib, "ste_course")
    assert sorted(p.parent.relative_to(Path(purelib)).as_posix().replace("/", ".")
                  for p in installed.rglob("__init__.py")) == expected, "pyproject.toml misses a subpackage"
    done = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 40
    help_text = subprocess.run([venv / "bin" / "ste-course", "--help"], capture_output=True, text=True, cwd=tmp_path,
                               env=env)
    assert help_text.returncode == 0 and "grade" in help_text.stdout, help_text.stderr[-1000:]
