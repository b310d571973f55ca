"""The JupyterLab set-up, without a browser: what `make setup` configured in the virtual
environment (scripts/lab-config.sh), what `make lab-instructor` turns back on
(jupyter-config/instructor/), and what `make lab` starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTOR_CONFIG = ROOT / "jupyter-config" / "instructor"
INSTRUCTOR_PLUGINS = {
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:course-list",
}
STUDENT_PLUGINS = {"@jupyter/nbgrader:validate-assignment", "@jupyter/nbgrader:assignment-list"}
ONLINE_PLUGINS = {"@jupyterlab/apputils-extension:announcements"}
INSTRUCTOR_SERVER = {"nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.course_list"}
STUDENT_SERVER = {
    "nbgrader.server_extensions.validate_assignment",
    "nbgrader.server_extensions.assignment_list",
}

# Jupyter reads its configuration paths from the environment when asked: run in a child process.
PROBE = """
import json
from jupyterlab_server.config import get_page_config
from jupyter_server.serverapp import ServerApp
from jupyterlab.labapp import LabApp
page = get_page_config([], None)
server = ServerApp()
server.find_server_extensions()
lab = LabApp()
lab.load_config_file()
print(json.dumps({
    "disabled": page["disabledExtensions"],
    "locked": page.get("lockedExtensions", []),
    "server": {k: v for k, v in server.jpserver_extensions.items() if "nbgrader" in k},
    "news_url": lab.news_url,
    "update_checker": lab.check_for_updates_class.__name__,
    "extension_manager": lab.extension_manager,
}))
"""


def jupyter_state(user_dir: Path, config_path: Path | None = None) -> dict:
    """Lab plugins, server extensions and LabApp settings as a server started now would see
    them, with ``user_dir`` (empty) as the user-level configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env["JUPYTER_CONFIG_DIR"] = str(user_dir)
    if config_path is not None:
        env["JUPYTER_CONFIG_PATH"] = str(config_path)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return jupyter_state(tmp_path_factory.mktemp("user-config"))


def test_plugin_ids_exist_in_the_installed_nbgrader():
    """A renamed plugin in a new nbgrader would otherwise leave the formgrader on, silently."""
    static = Path(sys.prefix) / "share/jupyter/labextensions/@jupyter/nbgrader/static"
    code = "".join(p.read_text(errors="replace") for p in static.glob("*.js"))
    for plugin in INSTRUCTOR_PLUGINS | STUDENT_PLUGINS:
        assert f'"{plugin}"' in code, f"nbgrader's lab extension has no plugin {plugin}"


def test_students_get_validate_and_assignment_list_only(student):
    disabled = set(student["disabled"])
    assert INSTRUCTOR_PLUGINS | ONLINE_PLUGINS <= disabled, (
        f"disabled: {sorted(disabled)}; run `make setup` (scripts/lab-config.sh)")
    assert INSTRUCTOR_PLUGINS | ONLINE_PLUGINS <= set(student["locked"]), student["locked"]
    assert not STUDENT_PLUGINS & disabled
    assert student["server"] == {**dict.fromkeys(INSTRUCTOR_SERVER, False),
                                 **dict.fromkeys(STUDENT_SERVER, True)}, student["server"]


def test_nothing_is_fetched_at_start_up(student):
    assert student["news_url"] is None
    assert student["update_checker"] == "NeverCheckForUpdate"
    assert student["extension_manager"] == "readonly"


def test_lab_instructor_turns_the_instructor_tools_on(tmp_path):
    instructor = jupyter_state(tmp_path, INSTRUCTOR_CONFIG)
    disabled = set(instructor["disabled"])
    assert not (INSTRUCTOR_PLUGINS | STUDENT_PLUGINS) & disabled, sorted(disabled)
    assert ONLINE_PLUGINS <= disabled  # still offline
    assert instructor["server"] == dict.fromkeys(INSTRUCTOR_SERVER | STUDENT_SERVER, True)


def test_instructor_config_names_exactly_the_disabled_tools():
    page = json.loads((INSTRUCTOR_CONFIG / "labconfig" / "page_config.json").read_text())
    server = json.loads((INSTRUCTOR_CONFIG / "jupyter_server_config.json").read_text())
    assert page["disabledExtensions"] == dict.fromkeys(INSTRUCTOR_PLUGINS, False)
    assert server["ServerApp"]["jpserver_extensions"] == dict.fromkeys(INSTRUCTOR_SERVER, True)


def test_make_lab_opens_the_landing_page_on_localhost_with_a_token():
    command = _make_lab_command()
    assert "jupyter lab" in command, command
    assert "--ServerApp.ip=127.0.0.1" in command, command
    assert "--LabApp.default_url=/lab/tree/course/00_start_here.ipynb" in command, command
    assert "token=" not in command.replace("--", " ").lower(), command  # Jupyter's own token
    assert (ROOT / "course" / "00_start_here.ipynb").is_file()


SELF_STUDY_CONFIG = ROOT / "jupyter-config" / "self-study"


def _make_lab_command() -> str:
    out = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return " ".join(out.stdout.replace("\\\n", " ").split())


def test_make_lab_serves_the_student_view_not_solutions():
    command = _make_lab_command()
    root = next(a.split("=", 1)[1] for a in command.split() if a.startswith("--ServerApp.root_dir="))
    assert root.endswith("/.venv/student-view"), command
    view = Path(root)
    subprocess.run(["make", view.relative_to(ROOT).as_posix()], cwd=ROOT, check=True,
                   capture_output=True, timeout=60)
    assert sorted(p.name for p in view.iterdir()) == ["course", "exercises"]
    assert (view / "course").resolve() == ROOT / "course"
    assert (view / "exercises").resolve() == ROOT / "exercises"
    assert not (view / "solutions").exists()


def test_make_lab_has_no_assignment_list_without_an_exchange(tmp_path):
    assert f"JUPYTER_CONFIG_PATH={SELF_STUDY_CONFIG}" in _make_lab_command()
    state = jupyter_state(tmp_path, SELF_STUDY_CONFIG)
    assert "@jupyter/nbgrader:assignment-list" in state["disabled"], state["disabled"]
    assert "@jupyter/nbgrader:validate-assignment" not in state["disabled"]
    assert state["server"]["nbgrader.server_extensions.assignment_list"] is False, state["server"]
    assert state["server"]["nbgrader.server_extensions.validate_assignment"] is True, state["server"]
