"""The hub's set-up as root against what a student may have put in its way (issue 21, attacks
8 and 10), without starting a hub: a throwaway system user per test, homes and checkouts in
folders every user can reach. (tests/e2e/test_hub.py runs the whole class in a browser.)"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from ste_course.classroom import hub

ROOT = Path(__file__).resolve().parents[1]
NOBODY = hub.NOBODY if hasattr(hub, "NOBODY") else 65534

# the student's loop: a link to the target where ~/course is, and back, without end
SWAP_LOOP = """
import os, sys
course, target = sys.argv[1], sys.argv[2]
hold = course + ".hold"
while True:
    try:
        os.rename(course, hold)
    except OSError:
        pass
    try:
        os.symlink(target, course)
        os.unlink(course)
    except OSError:
        pass
    try:
        os.rename(hold, course)
    except OSError:
        pass
"""


@pytest.fixture
def base():
    """A folder every user can enter (tmp_path's parents are root's alone)."""
    if os.geteuid() != 0:
        pytest.fail("the hub's set-up creates users and sets owners: run it as root", pytrace=False)
    folder = Path(tempfile.mkdtemp(prefix="ste-hub-setup-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def student(base):
    """A throwaway system user with a home of their own (0700) in ``base``."""
    name = f"h{secrets.token_hex(4)}"
    home = base / name
    made = subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin",
                           "--user-group", name], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    try:
        account = pwd.getpwnam(name)
        home.mkdir(mode=0o700)
        os.chown(home, account.pw_uid, account.pw_gid)
        yield account
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)


def chapters(base: Path) -> Path:
    """A small stand-in for the checkout's course/: a folder, a subfolder, two files."""
    course = base / "source"
    (course / "figures").mkdir(parents=True)
    (course / "00_start_here.ipynb").write_text("{}")
    (course / "figures" / "a.svg").write_text("<svg/>")
    return course


def owners(folder: Path) -> set:
    return {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in [folder, *folder.rglob("*")]}


def test_set_up_never_gives_a_student_what_a_link_points_to(base, student):
    """Attack 8: while root copies ~/course and gives it to the student, the student swaps it
    for a link to a folder of root's (standing in for /etc) in a tight loop; the folder and
    everything in it stay root's."""
    source, etc = chapters(base), base / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    home = Path(student.pw_dir)
    swapper = subprocess.Popen(["setpriv", f"--reuid={student.pw_uid}", f"--regid={student.pw_gid}", "--clear-groups",
                                "--", sys.executable, "-c", SWAP_LOOP, str(home / "course"), str(etc)])
    try:
        for _ in range(150):
            hub.furnish_home(student.pw_name, source)
            assert owners(etc) == {(0, 0)}, "root gave the student a folder a link pointed to"
            for leftover in ("course", "course.hold"):  # the loop goes on meanwhile
                try:
                    os.unlink(home / leftover)
                except IsADirectoryError:
                    shutil.rmtree(home / leftover, ignore_errors=True)
                except OSError:
                    pass
        assert swapper.poll() is None, "the swapping loop stopped early"
    finally:
        swapper.kill()
        swapper.wait()
    assert sorted(p.name for p in etc.iterdir()) == ["passwd"]


def test_a_dangling_link_is_that_students_problem_only(base, student):
    """Attack 8: a dangling ~/exercises link stopped set-up for the whole class; now it is
    reported for that student, and their ~/course is made all the same."""
    home = Path(student.pw_dir)
    os.symlink("/nonexistent/anything", home / "exercises")
    problems = hub.furnish_home(student.pw_name, chapters(base))
    assert len(problems) == 1 and student.pw_name in problems[0] and "~/exercises is a link" in problems[0], problems
    assert (home / "course" / "figures" / "a.svg").read_text() == "<svg/>"
    assert owners(home / "course") == {(student.pw_uid, student.pw_gid)}
    assert os.readlink(home / "exercises") == "/nonexistent/anything"  # left as it was


def test_a_home_swapped_for_a_link_is_refused(base, student):
    home = Path(student.pw_dir)
    target = base / "elsewhere"
    target.mkdir()
    os.rename(home, base / "moved")
    os.symlink(target, home)
    problems = hub.furnish_home(student.pw_name, chapters(base))
    assert len(problems) == 1 and "cannot be opened as a folder" in problems[0], problems
    assert list(target.iterdir()) == []


def test_the_hub_sees_what_a_student_could_read_of_the_checkout(base, student):
    """Attack 10: making solutions/ root-only hid nothing while .git was readable. The check
    runs as the student (and as nobody): each path named, then none once they are closed."""
    repo = base / "repo"
    (repo / "solutions" / "03_ste").mkdir(parents=True)
    (repo / ".git" / "objects").mkdir(parents=True)
    os.chmod(repo / "solutions", 0o700)  # what the old set-up did, and all it did
    users = [(NOBODY, NOBODY, []), (student.pw_uid, student.pw_gid, [student.pw_gid])]
    problems = hub.course_tree_problems(repo, users)
    assert len(problems) == 1 and f"{repo / '.git'} can be read" in problems[0], problems
    os.chmod(repo / ".git", 0o711)  # entering is enough to open the names git's refs give away
    assert len(hub.course_tree_problems(repo, users)) == 1
    os.chmod(repo / ".git", 0o750)
    os.chown(repo / ".git", 0, student.pw_gid)  # the student's group: as they, not as nobody
    assert len(hub.course_tree_problems(repo, users)) == 1
    os.chmod(repo / ".git", 0o700)
    assert hub.course_tree_problems(repo, users) == []


def test_the_hub_refuses_to_start_on_a_readable_checkout(base):
    """``ste-course hub``'s set-up stops before it makes any user, naming the path and the fix."""
    repo = base / "repo"
    (repo / "solutions").mkdir(parents=True, mode=0o700)
    (repo / ".git").mkdir(mode=0o755)
    roster = base / "roster.csv"
    name = f"h{secrets.token_hex(4)}"
    roster.write_text(f"student_id\n{name}\n")
    with pytest.raises(hub.HubError, match=r"\.git can be read by a student: run `chmod"):
        hub.prepare(roster, repo, base / "state", base / "exchange")
    assert subprocess.run(["id", name], capture_output=True).returncode != 0  # no user made


# What a user's own ~/.jupyter may hold: the tools switched back on (as JupyterLab's Plugin Manager
# writes them at the user level when they are not locked). For a student, user-level configuration
# outranks the shared venv's (jupyter_core puts the environment first only for the venv's owner).
USER_LEVEL_PAGE = {"disabledExtensions": {"@jupyter/nbgrader:create-assignment": False,
                                          "@jupyter/nbgrader:formgrader": False,
                                          "@jupyter/nbgrader:course-list": False,
                                          "@jupyterlab/apputils-extension:announcements": False}}
USER_LEVEL_SERVER = {"ServerApp": {"jpserver_extensions": {"nbgrader.server_extensions.formgrader": True}}}
INSTRUCTOR_TOOLS = {"@jupyter/nbgrader:create-assignment", "@jupyter/nbgrader:formgrader",
                    "@jupyter/nbgrader:course-list"}
ANNOUNCEMENTS = "@jupyterlab/apputils-extension:announcements"
STUDENT_TOOLS = {"@jupyter/nbgrader:assignment-list", "@jupyter/nbgrader:validate-assignment"}


def spawner_environment(settings: hub.Settings, user: str, tmp: Path) -> dict:
    """The environment hub/jupyterhub_config.py gives ``user``'s server (its pre-spawn hook run)."""
    from types import SimpleNamespace

    from traitlets.config import Config

    (tmp / "settings.json").write_text(json.dumps(settings.__dict__))
    config, old = Config(), os.environ.get("STE_HUB_SETTINGS")
    os.environ["STE_HUB_SETTINGS"] = str(tmp / "settings.json")
    try:
        exec(compile((ROOT / "hub" / "jupyterhub_config.py").read_text(), "jupyterhub_config.py", "exec"),
             {"get_config": lambda: config})
    finally:
        if old is None:
            del os.environ["STE_HUB_SETTINGS"]
        else:
            os.environ["STE_HUB_SETTINGS"] = old
    spawner = SimpleNamespace(user=SimpleNamespace(name=user), environment=dict(config.Spawner.environment),
                              default_url=config.Spawner.default_url)
    config.Spawner.pre_spawn_hook(spawner)
    return spawner.environment


def served_lab(account: pwd.struct_passwd, environment: dict) -> tuple[dict, str]:
    """JupyterLab of the hub's venv started as ``account`` with the hub's environment for them:
    the page config its /lab page sends the browser, and the server's log."""
    token, port = secrets.token_hex(16), hub.free_port()
    venv = Path(environment["PATH"].split(":")[0])
    command = ["runuser", "-u", account.pw_name, "--", "env", "-i", f"HOME={account.pw_dir}",
               *[f"{k}={v}" for k, v in environment.items()], str(venv / "jupyter"), "lab", "--no-browser",
               "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={account.pw_dir}"]
    log = Path(account.pw_dir) / "lab.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=5) as page:
                    html = page.read().decode()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    data = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(data.group(1)), log.read_text()


def test_the_hubs_students_get_the_student_lab_whatever_their_own_config_says(base, student, tmp_path):
    """The page config a student's server sends comes from the config ``ste-course hub`` writes
    (JUPYTER_CONFIG_PATH): the instructor's tools and the news pop-up off and locked, the student's
    tools on, formgrader's server extension off, even with ~/.jupyter switching them on; the
    instructor's server has formgrader and create-assignment on."""
    state = base / "state"
    settings = hub.Settings(students=[student.pw_name], instructor="teacher", course_id="ste", graders_group="g",
                            exchange=str(base / "exchange"), state=str(state), venv=str(hub.DEFAULT_VENV),
                            proxy="/p", ip="127.0.0.1", port=1, hub_port=2, proxy_api_port=3,
                            student_config=str(state / "config" / "student"),
                            instructor_config=str(state / "config" / "instructor"))
    hub.write_user_config(state, settings, ROOT)
    user_config = Path(student.pw_dir) / ".jupyter"
    (user_config / "labconfig").mkdir(parents=True)
    (user_config / "labconfig" / "page_config.json").write_text(json.dumps(USER_LEVEL_PAGE))
    (user_config / "jupyter_server_config.json").write_text(json.dumps(USER_LEVEL_SERVER))
    subprocess.run(["chown", "-R", f"{student.pw_uid}:{student.pw_gid}", str(user_config)], check=True)

    page, log = served_lab(student, spawner_environment(settings, student.pw_name, tmp_path))
    disabled, locked = set(page["disabledExtensions"]), set(page.get("lockedExtensions", []))
    assert INSTRUCTOR_TOOLS | {ANNOUNCEMENTS} <= disabled, sorted(disabled)
    assert INSTRUCTOR_TOOLS | {ANNOUNCEMENTS} <= locked, sorted(locked)
    assert not STUDENT_TOOLS & disabled, sorted(disabled)
    assert "nbgrader.server_extensions.formgrader | extension was successfully loaded" not in log, log[-3000:]
    assert "nbgrader.server_extensions.assignment_list | extension was successfully loaded" in log, log[-3000:]

    page, log = served_lab(student, spawner_environment(settings, "teacher", tmp_path))
    assert not (INSTRUCTOR_TOOLS | STUDENT_TOOLS) & set(page["disabledExtensions"]), page["disabledExtensions"]
    assert "nbgrader.server_extensions.formgrader | extension was successfully loaded" in log, log[-3000:]
