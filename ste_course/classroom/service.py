"""The hub as a service: ``ste-course hub --background`` and ``ste-course hub --stop``.

``--background`` sets everything up as ``ste-course hub`` does, then starts JupyterHub in a
session of its own (:func:`ste_course.classroom.hub.start`, detached from the terminal) with its
output appended to ``STATE/hub.log`` and its process id in ``STATE/hub.pid``; it returns once
the hub answers on its address (or says why it did not, with the log's last lines).
``--stop`` sends that process SIGTERM (JupyterHub then stops the users' servers and its proxy,
``cleanup_servers``) and waits for it, bounded; the pid file is only trusted for a process whose
command line names this state folder's ``jupyterhub_config.py``.

On a machine with systemd, ``hub/ste-course-hub.service`` runs the same command in the
foreground under systemd instead (``systemctl enable --now ste-course-hub``; logs in the
journal); use one or the other.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ste_course.classroom.hub import HubError, Settings, start

PID_FILE = "hub.pid"
LOG_FILE = "hub.log"
START_TIMEOUT = 120.0  # seconds for the hub to answer
STOP_TIMEOUT = 60.0  # seconds for JupyterHub to stop its users' servers and exit
POLL = 0.5


def _config(state: Path) -> str:
    return str(Path(state).resolve() / "jupyterhub_config.py")


def running(state: Path) -> int | None:
    """The pid of the hub started in the background for ``state``, if it still runs: the pid
    file's process, when its command line names this state's ``jupyterhub_config.py``."""
    try:
        pid = int((Path(state) / PID_FILE).read_text(encoding="ascii").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if os.fsencode(_config(state)) in cmdline else None


def start_background(settings: Settings, timeout: float = START_TIMEOUT) -> tuple[int, Path]:
    """Start the hub of ``settings`` detached (new session, stdin from /dev/null, output
    appended to ``STATE/hub.log``); return ``(pid, log)`` once it answers on its address.

    Raises:
        HubError: a hub of this state already runs, or it exited or did not answer in ``timeout``.
    """
    state = Path(settings.state)
    if running(state):
        raise HubError(f"a hub already runs for {state} (pid {running(state)}): `ste-course hub --stop "
                       f"--state {state}` first")
    log = state / LOG_FILE
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: its own session, then JupyterHub in its place
        try:
            os.setsid()
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            sys.stdout = sys.stderr = open(2, "w", closefd=False)  # print() reaches the log too
            start(settings)
        finally:
            os._exit(127)  # start() only returns if exec failed
    (state / PID_FILE).write_text(f"{pid}\n", encoding="ascii")
    url = f"http://{'127.0.0.1' if settings.ip in ('0.0.0.0', '') else settings.ip}:{settings.port}/hub/api"
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            (state / PID_FILE).unlink(missing_ok=True)
            raise HubError(f"the hub exited at start (status {status}); the end of {log}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return pid, log
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise HubError(f"the hub (pid {pid}) did not answer on {url} within {timeout:g} s; it still "
                           f"runs (`ste-course hub --stop --state {state}`); the end of {log}:\n{tail(log)}")
        time.sleep(POLL)


def stop(state: Path, timeout: float = STOP_TIMEOUT) -> str:
    """Stop the hub started in the background for ``state`` (SIGTERM, then wait up to
    ``timeout``); returns what was done, in one line.

    Raises:
        HubError: it did not exit in ``timeout`` (it is left to finish; ``kill -KILL PID`` ends it).
    """
    state = Path(state)
    pid = running(state)
    if pid is None:
        (state / PID_FILE).unlink(missing_ok=True)
        return f"no hub runs in the background for {state}"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running(state) == pid:
        try:  # our own child when started by this process (a test); else someone else reaps it
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        except ChildProcessError:
            pass
        if time.monotonic() > deadline:
            raise HubError(f"the hub (pid {pid}) did not stop within {timeout:g} s of SIGTERM; "
                           f"`kill -KILL {pid}` ends it (its users' servers may then keep running)")
        time.sleep(POLL)
    try:  # reap it when it is our own child (exiting: its command line is already gone)
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    (state / PID_FILE).unlink(missing_ok=True)
    return f"stopped the hub (pid {pid}) of {state}; its log is {state / LOG_FILE}"


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(no log: {err.strerror})"
