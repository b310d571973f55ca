"""A hub that stays up (issue 27): ``ste-course hub --background`` / ``--stop`` (pid file, log)
on a stand-in for JupyterHub (a small HTTP server answering ``/hub/api``, so no users are
made), the shipped systemd unit's paths, and ``make hub`` using the shared venv only."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from ste_course.classroom.hub import DEFAULT_VENV, HubError, Settings, free_port
from ste_course.classroom.service import LOG_FILE, PID_FILE, running, start_background, stop
from ste_course.cli import main
from ste_course.cli.classroom import DEFAULT_EXCHANGE, DEFAULT_STATE
from ste_course.cli.commands import build_parser

ROOT = Path(__file__).resolve().parents[1]
FAKE_HUB = """#!{python}
# a stand-in for jupyterhub: serves STATE (its working folder) over HTTP, so /hub/api answers
import http.server, json, sys
s = json.load(open("settings.json"))
http.server.ThreadingHTTPServer(("127.0.0.1", s["port"]), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def _settings(tmp_path: Path) -> Settings:
    venv, state = tmp_path / "venv", tmp_path / "state"
    (venv / "bin").mkdir(parents=True)
    (state / "hub").mkdir(parents=True)
    (state / "hub" / "api").write_text("{}")
    hub = venv / "bin" / "jupyterhub"
    hub.write_text(FAKE_HUB.format(python=sys.executable))
    hub.chmod(0o755)
    (state / "jupyterhub_config.py").write_text("")
    settings = Settings(students=["ada"], instructor="teacher", course_id="c", graders_group="c-graders",
                        exchange=str(tmp_path / "exchange"), state=str(state), venv=str(venv), proxy="",
                        ip="127.0.0.1", port=free_port(), hub_port=0, proxy_api_port=0, student_config="",
                        instructor_config="")
    (state / "settings.json").write_text(__import__("json").dumps(settings.__dict__))
    return settings


def test_background_start_writes_pid_and_log_and_stop_ends_it(tmp_path):
    settings = _settings(tmp_path)
    state = Path(settings.state)
    pid, log = start_background(settings, timeout=30)
    try:
        assert running(state) == pid and (state / PID_FILE).read_text().strip() == str(pid)
        assert os.getsid(pid) == pid  # a session of its own: the terminal's Ctrl-C or hangup does not reach it
        with pytest.raises(HubError, match="already runs"):
            start_background(settings, timeout=5)
        assert f"http://127.0.0.1:{settings.port}/" in log.read_text()
        assert log == state / LOG_FILE and (log.stat().st_mode & 0o077) == 0
    finally:
        said = stop(state, timeout=20)
    assert f"stopped the hub (pid {pid})" in said
    assert running(state) is None and not (state / PID_FILE).exists()
    assert not Path(f"/proc/{pid}").exists()
    assert "no hub runs" in stop(state)


def test_a_pid_file_naming_another_process_is_not_trusted(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / PID_FILE).write_text(f"{os.getpid()}\n")  # this test's own process: not a hub of this state
    assert running(state) is None
    assert "no hub runs" in stop(state) and not (state / PID_FILE).exists()


def test_hub_needs_a_roster_but_to_stop(capsys):
    assert main(["hub", "--state", "/nonexistent-t27"]) == 2
    assert "--students" in capsys.readouterr().err
    assert main(["hub", "--stop", "--state", "/nonexistent-t27"]) == 0


def test_the_systemd_unit_names_the_paths_the_course_installs():
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str
    unit.read(ROOT / "hub" / "ste-course-hub.service")
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == str(DEFAULT_VENV / "bin" / "ste-course")
    venv_default = re.search(r"VENV=\$\{STE_SHARED_VENV:-([^}]+)\}", (ROOT / "scripts" / "shared-venv.sh").read_text())
    assert venv_default and Path(venv_default.group(1)) == DEFAULT_VENV
    args = build_parser(ROOT).parse_args(argv[1:])
    assert args.func.__name__ == "cmd_hub" and not args.background and not args.stop  # systemd keeps it in front
    assert args.state == DEFAULT_STATE and args.exchange == DEFAULT_EXCHANGE
    assert args.students.is_absolute() and Path(service["WorkingDirectory"]).is_absolute()
    assert unit["Install"]["WantedBy"] == "multi-user.target" and service["Restart"] == "on-failure"
    assert int(service["TimeoutStopSec"]) >= 60  # JupyterHub stops the users' servers first


def test_make_hub_uses_the_shared_venv_only():
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^hub:(.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert rule, "no hub target in the Makefile"
    prerequisites, recipe = rule.group(1).split(), rule.group(2)
    assert "setup" not in prerequisites, f"make hub builds .venv too: hub:{rule.group(1)}"
    assert "$(BIN)" not in recipe and ".venv" not in recipe, recipe
    assert "/opt/ste-course/venv" in makefile and "ste-course hub" in recipe


def test_make_lab_instructor_opens_formgrader_on_the_graded_course(tmp_path):
    import subprocess

    graded = tmp_path / "graded"
    out = subprocess.run(["make", "-n", "lab-instructor", f"GRADED={graded}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    recipe = out.stdout[out.stdout.rfind("test -f"):]
    assert f"test -f {graded}/nbgrader_config.py" in recipe  # refuses a folder grade did not write
    assert f"cd {graded} &&" in recipe and f"--ServerApp.root_dir={graded}" in recipe, recipe
    assert f"root_dir={ROOT}\n" not in out.stdout and f"root_dir={ROOT} " not in out.stdout
