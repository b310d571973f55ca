"""Fixtures of the browser tests: JupyterLab on a free port serving a temporary copy of the
course, and a real headless Chromium (Debian's ``chromium`` package) driven by Playwright.

Nothing here skips. A missing browser or Playwright fails the test with the command that
installs it (``make system-deps``, ``make setup``): these tests are the proof that a student
can open, solve and validate an exercise, and a silent skip would hide the loss of that proof.

The server always stops, whatever happens: the finalizer asks it to shut down (which also
stops its kernels), then kills its whole process group.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's own sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
SERVER_START_TIMEOUT = 120  # seconds; JupyterLab imports every server extension first
IGNORE = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc")


def course_notebooks() -> list[Path]:
    """The notebooks a student opens, relative to the repository: chapters, then exercises."""
    found = sorted(ROOT.glob("course/*.ipynb")) + sorted(ROOT.glob("exercises/*/*.ipynb"))
    return [p.relative_to(ROOT) for p in found if ".ipynb_checkpoints" not in p.parts]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


@dataclass
class Lab:
    """A running JupyterLab: its address, token and the folder it serves."""

    url: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen = field(repr=False)

    def tree_url(self, path: str | Path) -> str:
        """The address that opens ``path`` (relative to ``root``) in a fresh workspace."""
        return f"{self.url}/lab/tree/{quote(Path(path).as_posix())}?reset&token={self.token}"

    def api(self, path: str, method: str = "GET") -> dict:
        request = urllib.request.Request(
            f"{self.url}/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else {}


def _stop(lab: Lab) -> None:
    """Shut the server down (its kernels with it), then kill whatever is left of its group."""
    if lab.process.poll() is None:
        try:
            lab.api("api/shutdown", method="POST")
            lab.process.wait(timeout=20)
        except (OSError, urllib.error.URLError, subprocess.TimeoutExpired):
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(lab.process.pid, sig)
        except ProcessLookupError:
            break
        try:
            lab.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue


def start_lab(root: Path, state: Path) -> Lab:
    """Start JupyterLab serving ``root`` on a free port of 127.0.0.1, with a token of ours.

    The server uses this virtual environment's configuration (the student set-up of
    ``scripts/lab-config.sh``); user-level settings, workspaces and runtime files go to
    ``state`` so that nothing of the developer's own JupyterLab leaks in.
    """
    token = secrets.token_hex(16)
    port = _free_port()
    env = dict(os.environ)
    env.update(
        TF_CPP_MIN_LOG_LEVEL="2",
        TF_ENABLE_ONEDNN_OPTS="0",
        JUPYTER_CONFIG_DIR=str(state / "config"),
        JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
    )
    env.pop("JUPYTER_CONFIG_PATH", None)  # no instructor configuration
    command = [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: kernel and plugin checks
    ]
    if os.geteuid() == 0:
        command.append("--ServerApp.allow_root=True")
    log = state / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    lab = Lab(f"http://127.0.0.1:{port}", token, root, log, process)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{_log_tail(log)}")
            try:
                lab.api("api/status")
                return lab
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"JupyterLab did not answer on {lab.url} within {SERVER_START_TIMEOUT} s:\n"
                    f"{_log_tail(log)}"
                )
            time.sleep(0.5)
    except BaseException:
        _stop(lab)
        raise


@pytest.fixture(scope="session")
def lab(request, tmp_path_factory) -> Lab:
    """JupyterLab serving a temporary copy of ``course/`` and ``exercises/``."""
    root = tmp_path_factory.mktemp("lab-root")
    for folder in ("course", "exercises"):
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, root / folder, ignore=IGNORE)
    server = start_lab(root, tmp_path_factory.mktemp("lab-state"))
    request.addfinalizer(lambda: _stop(server))
    return server


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, through Playwright; fails (never skips) when missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"The browser tests need Debian's Chromium at {CHROMIUM}, which is missing: "
            "run `make system-deps` (apt-get install chromium) as root.",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(
            f"The browser tests need Playwright for Python ({exc}): run `make setup` "
            "(it installs the pinned playwright of requirements.txt).",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """A browser tab on JupyterLab that records every JavaScript error it sees."""

    def __init__(self, page, lab: Lab):
        self.page, self.lab = page, lab
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"console.error: {message.text}")

    def open_notebook(self, path: str | Path, timeout: float = 60_000) -> None:
        """Open ``path`` and wait until its cells are shown and its kernel is idle."""
        self.page.goto(self.lab.tree_url(path))
        self.page.locator(".jp-NotebookPanel:visible .jp-Cell").first.wait_for(timeout=timeout)
        self.page.wait_for_function(
            """name => {
                const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                if (!w || !w.context || w.context.path !== name) return false;
                const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
                return !!kernel && kernel.status === 'idle';
            }""",
            arg=Path(path).as_posix(),
            timeout=timeout,
        )

    def evaluate(self, script: str, arg=None):
        return self.page.evaluate(script, arg)


def _tab(browser, lab: Lab):
    """A fresh browser context (no cookies, no storage) with one tab on ``lab``."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        yield Page(context.new_page(), lab)
    finally:
        context.close()


@pytest.fixture
def page(browser, lab):
    """A tab on the session's JupyterLab."""
    yield from _tab(browser, lab)


AUTOSAVE_SECONDS = 2  # JupyterLab's default is 120 s; the student clone's user settings shorten it


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` (as a student would, with an identity of its own); its output."""
    done = subprocess.run(["git", "-c", "user.name=student", "-c", "user.email=student@localhost",
                           *args], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def clone_lab(tmp_path_factory) -> Lab:
    """JupyterLab serving a student's clone: course/, exercises/ and .gitignore, committed,
    with autosave every AUTOSAVE_SECONDS."""
    root = tmp_path_factory.mktemp("student-clone")
    for folder in ("course", "exercises"):
        shutil.copytree(ROOT / folder, root / folder, ignore=IGNORE)
    shutil.copy2(ROOT / ".gitignore", root / ".gitignore")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "the course as published")
    state = tmp_path_factory.mktemp("clone-lab-state")
    settings = state / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(
        json.dumps({"autosave": True, "autosaveInterval": AUTOSAVE_SECONDS}))
    server = start_lab(root, state)
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture
def clone_git(clone_lab):
    """git in the student's clone: ``clone_git("status", "--porcelain")``."""
    return lambda *args: git(clone_lab.root, *args)


@pytest.fixture
def autosave_seconds() -> int:
    return AUTOSAVE_SECONDS


@pytest.fixture
def clone_page(browser, clone_lab):
    """A tab on the student's clone."""
    yield from _tab(browser, clone_lab)


def pytest_generate_tests(metafunc):
    """``notebook``: every chapter and exercise, or ``None`` (a failing case) when none exists."""
    if "notebook" in metafunc.fixturenames:
        notebooks = course_notebooks()
        metafunc.parametrize("notebook", notebooks or [None],
                             ids=[p.as_posix() for p in notebooks] or ["no-notebooks"])
