"""Grading as an unprivileged instructor (issue 11: non-root instructors get the same limits).

A throwaway system user (removed afterwards, with any process of theirs) grades a small class
in a folder they own with ``ste-course grade`` from the shared venv (``make shared-venv``:
Debian's python3.11, readable by every user), so bubblewrap runs unprivileged (user
namespaces). The class: a complete student, a blank one, a fork bomb, a memory bomb, one that
leaves processes behind, one that tries to read a classmate's and the instructor's files, and a
probe that reports the limits it runs under. Asserts exact grades, the bombs as rows of their
own, the limits in force (measured, not only set), no process or IPC object of the user left,
and a secret and output folder that belong to the user. A second run with user namespaces
refused by the kernel must refuse to grade, with a message that says why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ste_course.sandbox import bwrap_path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED_VENV = Path(os.environ.get("STE_SHARED_VENV", "/opt/ste-course/venv"))
if "adversarial_cases" not in sys.modules:  # the adversarial suite's notebooks (as test_adversarial loads them)
    _spec = importlib.util.spec_from_file_location("adversarial_cases", HERE / "adversarial" / "cases.py")
    sys.modules["adversarial_cases"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["adversarial_cases"])
cases = sys.modules["adversarial_cases"]

MEMORY_MB = 1024
PROCESSES = 32
FLAGS = ["--jobs", "2", "--cell-timeout", "15", "--notebook-timeout", "60",
         "--memory-mb", str(MEMORY_MB), "--processes", str(PROCESSES)]

# Reports the limits this notebook runs under, set and measured: how many processes it could
# start (they wait on a pipe, so all are alive at once) beside its own threads, and whether it
# could allocate past its memory limit.
PROBE = r"""
import json, os, resource
def _forks():
    r, w = os.pipe()
    pids = []
    try:
        while len(pids) < 1000:
            pid = os.fork()
            if pid == 0:
                os.close(w)
                os.read(r, 1)
                os._exit(0)
            pids.append(pid)
    except OSError:
        pass
    os.close(w)
    for pid in pids:
        os.waitpid(pid, 0)
    return len(pids)
def _allocates(n):
    try:
        block = bytearray(n)
        return True
    except MemoryError:
        return False
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print("PROBE " + json.dumps({
    "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0], "as": resource.getrlimit(resource.RLIMIT_AS)[0],
    "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
    "uid": os.getuid(), "forks": _forks(), "threads": len(os.listdir("/proc/self/task")), "allocates_past_limit": _allocates(CTX["memory_bytes"] + 2**28),
    "user_ns": os.readlink("/proc/self/ns/user"), "ipc_ns": os.readlink("/proc/self/ns/ipc")}))
"""

# Tries the classmate's notebook, the instructor's source (hidden tests), secret and home.
SNOOP = cases.TRY + r"""
import os
for path in (CTX["other_nb"], CTX["source_nb"], CTX["secret"], CTX["home"]):
    seen = _try(lambda: os.listdir(path) if os.path.isdir(path) else open(path).read())
    print("SNOOP " + path + " -> " + (seen if isinstance(seen, str) else repr(seen))[:200])
"""

MEMORY_BOMB = "blocks = []\nwhile True:\n    blocks.append(bytearray(10**8))"


def _class(ctx):
    """student -> (notebook, expected score, expected statuses)."""
    nb = cases.notebook
    return {
        "complete": (nb(ctx, answer=cases.CORRECT), cases.FULL, {"ok"}),
        "blank": (nb(ctx), 0.0, {"ok"}),
        "value-only": (nb(ctx, answer=cases.VALUE_ONLY), 2.0, {"ok"}),
        "probe": (nb(ctx, answer=cases.CORRECT, after=[PROBE]), cases.FULL, {"ok"}),
        "snoop": (nb(ctx, attack=SNOOP), 0.0, {"ok"}),
        "fork-bomb": (nb(ctx, attack=cases.FORK_BOMB), 0.0, {"ok", "error", "timeout", "crash"}),
        "memory-bomb": (nb(ctx, attack=MEMORY_BOMB), 0.0, {"ok", "error", "memory", "crash"}),
        "leaves-processes": (nb(ctx, answer=cases.CORRECT, after=[cases.BACKGROUND]), cases.FULL,
                             {"ok", "error", "timeout"}),
    }


def _pids_of(uid: int) -> list:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    pids.append(int(name))
            except OSError:
                pass
    return pids


def _kill_all(uid: int) -> None:
    for _ in range(200):
        pids = _pids_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


def _survivors(uid: int, grace: float = 5.0) -> list:
    """Processes of ``uid`` still there ``grace`` seconds after the run (a killed sandbox's
    processes take a moment to be torn down): (pid, state, command line) each."""
    deadline = time.monotonic() + grace
    while True:
        left = []
        for pid in _pids_of(uid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_bytes()
                left.append((pid, stat.rsplit(b")", 1)[1].split()[0].decode(),
                             Path(f"/proc/{pid}/cmdline").read_bytes()[:120]))
            except (OSError, IndexError):
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _ipc_objects_of(uid: int) -> list:
    found = []
    for table in ("shm", "msg", "sem"):
        lines = Path(f"/proc/sysvipc/{table}").read_text().splitlines()
        header = lines[0].split()
        found += [(table, line) for line in lines[1:] if line.split()[header.index("uid")] == str(uid)]
    return found


@pytest.fixture(scope="module")
def instructor():
    """A throwaway system user with a private home; removed (with its processes) afterwards."""
    if os.geteuid() != 0:
        pytest.fail("tests/test_nonroot.py creates a user: run it as root (make test does)")
    if not bwrap_path():
        pytest.fail("bubblewrap is required (make system-deps)")
    built = subprocess.run([str(REPO / "scripts" / "shared-venv.sh"), "requirements-hub.txt"],
                           capture_output=True, text=True)  # the same pins as make hub-deps: no reinstall
    assert built.returncode == 0, f"make shared-venv failed:\n{built.stderr[-3000:]}"
    name = f"ste-nr{os.getpid() % 10**8}"
    home = Path(tempfile.mkdtemp(prefix="ste-nonroot-"))
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(home),
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        user = pwd.getpwnam(name)
        os.chown(home, user.pw_uid, user.pw_gid)
        os.chmod(home, 0o700)
        yield {"name": name, "uid": user.pw_uid, "gid": user.pw_gid, "home": home}
    finally:
        uid = pwd.getpwnam(name).pw_uid
        _kill_all(uid)
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _as_user(user, args, timeout=900):
    env = ["env", "-i", f"PATH={SHARED_VENV}/bin:/usr/bin:/bin", f"HOME={user['home']}", "LANG=C.UTF-8"]
    return subprocess.run(["runuser", "-u", user["name"], "--", *env, *args], cwd=user["home"] / "course",
                          capture_output=True, text=True, timeout=timeout)


def _layout(user) -> dict:
    course = user["home"] / "course"
    shutil.copytree(HERE / "adversarial" / "source", course / "solutions")
    subs = course / "submissions"
    ctx = {"source_nb": str(course / "solutions" / cases.ASSIGNMENT / f"{cases.ASSIGNMENT}.ipynb"),
           "other_nb": str(subs / "complete" / cases.ASSIGNMENT / f"{cases.ASSIGNMENT}.ipynb"),
           "secret": str(user["home"] / ".config" / "ste-course" / "secret"), "home": str(user["home"]),
           "memory_bytes": MEMORY_MB * 2**20}
    students = _class(ctx)
    for student, (notebook, _, _) in students.items():
        cases.write_nb(subs / student / cases.ASSIGNMENT, notebook)
    subprocess.run(["chown", "-R", f"{user['uid']}:{user['gid']}", str(course)], check=True)
    return students


@pytest.fixture(scope="module")
def graded(instructor):
    students = _layout(instructor)
    started = time.monotonic()
    run = _as_user(instructor, ["ste-course", "grade", "submissions", "--out", "graded",
                                "--solutions", "solutions", *FLAGS])
    seconds = time.monotonic() - started
    left = _survivors(instructor["uid"])
    out = instructor["home"] / "course" / "graded"
    print(f"\nnon-root grading of {len(students)} notebooks: {seconds:.1f} s\n{run.stdout}")
    probe = [c["text"] for c in _result({"out": out}, "probe")["feedback_cells"] if c["kind"] == "output"] \
        if (out / "results" / "probe").exists() else []
    print("\n".join(probe))
    return {"run": run, "students": students, "out": out, "left": left, "seconds": seconds,
            "ipc": _ipc_objects_of(instructor["uid"])}


def _result(graded, student) -> dict:
    path = graded["out"] / "results" / student / cases.ASSIGNMENT / f"{cases.ASSIGNMENT}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _output(graded, student) -> str:
    """Everything the notebook printed (its feedback's output cells)."""
    return "\n".join(c["text"] for c in _result(graded, student)["feedback_cells"] if c["kind"] == "output")


def test_the_run_completes_as_the_user(graded):
    run = graded["run"]
    assert run.returncode == 0, f"ste-course grade failed as a non-root user:\n{run.stdout}\n{run.stderr[-3000:]}"


def test_every_student_gets_the_expected_grade(graded):
    wrong = []
    for student, (_, score, statuses) in graded["students"].items():
        r = _result(graded, student)
        if r["score"] != score or r["status"] not in statuses:
            wrong.append(f"{student}: {r['score']:g} ({r['status']}: {r['reason'][:200]}), expected {score:g} {statuses}")
        if r["status"] != "ok":
            assert r["reason"], f"{student}: status {r['status']} without a reason"
    assert not wrong, "\n".join(wrong)


def test_limits_are_in_force_for_the_notebook(graded):
    lines = [line for line in _output(graded, "probe").splitlines() if line.startswith("PROBE ")]
    assert len(lines) == 1, f"the probe printed no report: {_output(graded, 'probe')[:2000]}"
    probe = json.loads(lines[0][len("PROBE "):])
    assert probe["nproc"] == PROCESSES
    # RLIMIT_NPROC counts tasks (threads too) of the notebook's user namespace: this notebook's
    # threads and the processes it started reach the limit and no more. Counted per uid, the
    # instructor's grader and TensorFlow servers would have used up most of it already.
    assert PROCESSES - 4 <= probe["forks"] + probe["threads"] <= PROCESSES, probe
    assert 0 < probe["as"] < 8 * 2**30, probe  # the warm server's footprint plus --memory-mb
    assert probe["allocates_past_limit"] is False, probe
    assert int(probe["cap_eff"], 16) == 0 and int(probe["cap_bnd"], 16) == 0, probe
    assert probe["no_new_privs"] == "1", probe
    outside = {os.readlink(f"/proc/self/ns/{kind}") for kind in ("user", "ipc")}
    assert probe["user_ns"] not in outside and probe["ipc_ns"] not in outside, probe


def test_bombs_are_their_own_rows(graded):
    memory = _result(graded, "memory-bomb")
    assert memory["status"] != "ok" or "MemoryError" in _output(graded, "memory-bomb") + json.dumps(memory), memory


def test_no_process_or_ipc_object_of_the_user_survives(graded):
    assert not graded["left"], f"processes of the grading user left after the run: {graded['left']}"
    assert not graded["ipc"], f"SysV IPC objects of the grading user left: {graded['ipc']}"


def test_a_notebook_sees_nothing_outside_its_sandbox(graded, instructor):
    lines = [line for line in _output(graded, "snoop").splitlines() if line.startswith("SNOOP ")]
    assert len(lines) == 4, _output(graded, "snoop")[:2000]
    for line in lines:
        assert "FileNotFoundError" in line, line
    secret = (instructor["home"] / ".config" / "ste-course" / "secret").read_text().strip()
    leaked = [p for p in graded["out"].rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked, f"the grading secret is in {leaked}"


def test_secret_and_output_belong_to_the_user(graded, instructor):
    secret = instructor["home"] / ".config" / "ste-course" / "secret"
    st = secret.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (instructor["uid"], 0o600)
    foreign = [p for p in [graded["out"], *graded["out"].rglob("*")] if p.lstat().st_uid != instructor["uid"]]
    assert not foreign, f"not the instructor's: {foreign[:5]}"


@pytest.mark.parametrize("allowed, refused", [(1, "bubblewrap could not start the sandbox"),
                                              (3, "the kernel refused each notebook its own user and IPC namespace")])
def test_grading_refuses_when_the_kernel_refuses_namespaces(graded, instructor, allowed, refused):
    """The user's own user namespace allows ``allowed`` more below it (``max_user_namespaces``):
    1 leaves none for bubblewrap (which takes two: one to set up the sandbox, one to run it as
    the user), 3 leaves bubblewrap's but none for a notebook's own. Either way nothing is
    graded, and the instructor is told why and what to do."""
    inner = ["unshare", "--user", f"--map-user={instructor['uid']}", f"--map-group={instructor['gid']}"]
    limit = f"echo {allowed} > /proc/sys/user/max_user_namespaces && exec \"$@\""
    out = f"refused-{allowed}"
    run = _as_user(instructor, ["unshare", "--user", "--map-root-user", "sh", "-c", limit, "sh", *inner,
                                "ste-course", "grade", "submissions", "--out", out, "--solutions", "solutions", *FLAGS],
                   timeout=300)
    assert run.returncode == 2, f"graded anyway:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    assert refused in run.stderr and "user.max_user_namespaces" in run.stderr, run.stderr[-2000:]
    assert not (instructor["home"] / "course" / out / "grades.csv").exists()
