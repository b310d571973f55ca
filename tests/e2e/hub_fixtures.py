"""A real JupyterHub for the browser tests: ``ste-course hub`` (the command an instructor runs)
on a free port of 127.0.0.1, for a roster of two students and an instructor, all of them
system users created for this run, with their own course id, exchange and state folder.

The teardown always runs (fixture finalizer): the hub's process group is stopped (JupyterHub
stops the servers it started), then every process still owned by the run's users is killed by
its pid, the users are removed with their homes, and the run's group and folders go.
"""

from __future__ import annotations

import csv
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STE_COURSE = Path(sys.executable).parent / "ste-course"
HUB_START_TIMEOUT = 120  # seconds
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Hub:
    """A running hub: its address, users and passwords, and the folders of this run."""

    url: str
    course: str
    students: list[str]
    instructor: str
    passwords: dict[str, str]
    base: Path
    log: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def exchange(self) -> Path:
        return self.base / "exchange"

    def home(self, user: str) -> Path:
        return Path(pwd.getpwnam(user).pw_dir)


def as_user(user: str, *command: str) -> subprocess.CompletedProcess:
    """``command`` run as ``user`` (runuser keeps root's PATH: give an explicit one)."""
    return subprocess.run(["runuser", "-u", user, "--", "env", f"PATH={SAFE_PATH}", *command],
                          capture_output=True, text=True, timeout=60)


def _pids_of(uids: set[int]) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid in uids:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _teardown(process: subprocess.Popen | None, users: list[str], group: str, base: Path) -> None:
    if process is not None and process.poll() is None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
    uids = set()
    for user in users:
        try:
            uids.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            pass
    for pid in _pids_of(uids):  # the run's users' processes, one by one
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for user in users:
        subprocess.run(["userdel", "--remove", user], capture_output=True)
    subprocess.run(["groupdel", group], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def wait_for_hub(process: subprocess.Popen, url: str, log: Path, timeout: float = HUB_START_TIMEOUT) -> None:
    """Until the hub started as ``process`` answers on ``url`` (RuntimeError with its log's end
    when it exits or does not answer within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"ste-course hub exited with {process.returncode}:\n{_log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/hub/api", timeout=5):
                return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the hub did not answer on {url} within {timeout:g} s:\n{_log_tail(log)}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def hub(request) -> Hub:
    """``ste-course hub`` for students ``e2e<id>a``, ``e2e<id>b`` and instructor ``e2e<id>i``."""
    if os.geteuid() != 0:
        pytest.fail("The hub test creates system users: run it as root (CI and the dev machines are).",
                    pytrace=False)
    installed = subprocess.run([str(ROOT / "scripts" / "shared-venv.sh"), "requirements-hub.txt"],
                               cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert installed.returncode == 0, f"scripts/shared-venv.sh failed:\n{installed.stderr[-2000:]}"
    run = secrets.token_hex(3)
    course = f"e2e{run}"
    students, instructor = [f"e2e{run}a", f"e2e{run}b"], f"e2e{run}i"
    base = Path(f"/srv/ste-course-e2e-{run}")
    base.mkdir(parents=True, mode=0o755)
    process = None
    request.addfinalizer(lambda: _teardown(process, students + [instructor], f"{course}-graders", base))
    roster = base / "roster.csv"
    roster.write_text("student_id,name\n" + "".join(f"{s},Student {s}\n" for s in students))
    # the checkout hidden from the students, as docs/classroom.md tells the instructor: the hub
    # refuses to start while a student could read or enter solutions/, .git or the checks
    for private in (ROOT / "solutions", ROOT / ".git", ROOT / "checks"):
        if private.exists():
            os.chmod(private, 0o700)
    from ste_course.classroom.hub import free_port

    port = free_port()
    log = base / "hub.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(STE_COURSE), "hub", "--students", str(roster), "--instructor", instructor,
             "--course", course, "--state", str(base / "state"), "--exchange", str(base / "exchange"),
             "--port", str(port), "--publish", "03_ste", "--graded", str(base / "graded")],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for_hub(process, url, log)
    with (base / "state" / "passwords.csv").open(encoding="utf-8") as fh:
        passwords = {row["user"]: row["password"] for row in csv.DictReader(fh)}
    return Hub(url, course, students, instructor, passwords, base, log, process)
