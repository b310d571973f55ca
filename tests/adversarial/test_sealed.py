"""A notebook is a sealed unit (issue 21, attack 1): nothing it starts outlives it or reaches a
later notebook on the same worker, and a death or interrupt from outside is not its row.

One sandboxed worker runs, in order: an attacker that leaves a survivor (a forked child whose
main thread alone exits through the raw ``exit`` system call after starting a thread: the
thread-group leader is a zombie while the thread runs on), and files, a SysV segment and an
abstract unix socket behind; then an observer that reports what of it reaches it: signals,
the socket, ``/tmp``, ``/dev/shm``, SysV IPC, files planted in its scratch, processes. The
host's ``/proc`` is scanned for the survivor too. Last, a notebook killed (SIGKILL) and one
interrupted (SIGINT) from outside must be infrastructure errors (status ``error``, retried by
the next run), never ``crash`` or a graded row.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from ste_course.sandbox import Limits, Worker, bwrap_path

SYS_EXIT = {"x86_64": 60, "aarch64": 93}[os.uname().machine]

ATTACKER = f"""
import ctypes, os, signal, socket, threading, time
libc = ctypes.CDLL(None, use_errno=True)
signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the survivor signals every process it reaches
for path in ("/tmp/ste-left-tmp", "/dev/shm/ste-left-shm", "ste-left-scratch"):
    try:
        open(path, "w").write("left behind")
    except OSError as err:
        print("could not write", path, err)
libc.shmget(0x5e1ed, 4096, 0o1000 | 0o666)  # IPC_CREAT

roots = ("/tmp", os.path.dirname(os.getcwd()))

def survive():
    libc.prctl(15, b"ste-survivor", 0, 0, 0)  # PR_SET_NAME: the host test looks for it
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\\0ste-sealed-test")
    server.listen(8)
    end = time.monotonic() + 25
    while time.monotonic() < end:
        try:
            os.kill(-1, signal.SIGUSR1)  # every process of this uid it can reach
        except OSError:
            pass
        for root in roots:
            try:
                for name in os.listdir(root):
                    try:
                        open(os.path.join(root, name, "ste-planted"), "w").write("planted")
                    except OSError:
                        pass
            except OSError:
                pass
        time.sleep(0.05)
    os._exit(0)

if os.fork() == 0:
    threading.Thread(target=survive).start()
    time.sleep(0.3)
    libc.syscall({SYS_EXIT}, 0)  # the main thread alone: the leader becomes a zombie
time.sleep(0.6)
print("attacked")
"""

OBSERVER = """
import ctypes, json, os, signal, socket, time
libc = ctypes.CDLL(None, use_errno=True)
hits = []
signal.signal(signal.SIGUSR1, lambda signum, frame: hits.append(signum))
time.sleep(1.5)
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    client.connect("\\0ste-sealed-test")
    abstract = True
except OSError:
    abstract = False

def comms():
    names = []
    for pid in os.listdir("/proc"):
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                names.append(open(f"/proc/{pid}/task/{tid}/comm").read().strip())
        except OSError:
            pass
    return names

print(json.dumps({"signals": len(hits), "abstract": abstract,
                  "tmp": sorted(os.listdir("/tmp")), "shm": sorted(os.listdir("/dev/shm")),
                  "sysv": libc.shmget(0x5e1ed, 0, 0) != -1,
                  "scratch": sorted(os.listdir(".")), "survivor": "ste-survivor" in comms()}))
"""

VICTIM = """
import ctypes, time
ctypes.CDLL(None).prctl(15, b"ste-victim", 0, 0, 0)
time.sleep(4)
"""


def _job(name, *sources):
    return {"id": name, "cells": [{"index": i, "source": s, "locked": False} for i, s in enumerate(sources)],
            "calls": {}, "seed": 0}


def _host_threads_named(name: str) -> list:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    if f.read().strip() == name:
                        found.append(int(tid))
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def worker():
    if bwrap_path() is None:
        pytest.fail("bubblewrap (bwrap) is needed: run scripts/system-deps.sh")
    worker = Worker(0, sandbox=True, limits=Limits(cell_seconds=30, notebook_seconds=40, scratch_bytes=64 * 2**20,
                                                   shm_bytes=16 * 2**20, processes=32))
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def observed(worker):
    attack = worker.run(_job("attacker", ATTACKER))
    assert [e.get("error") for e in attack["events"] if e.get("event") == "end"] == [None], attack
    survivors = _host_threads_named("ste-survivor")
    seen = worker.run(_job("observer", OBSERVER))
    ends = [e for e in seen["events"] if e.get("event") == "end"]
    assert ends and not ends[0].get("error"), seen
    return survivors, json.loads(ends[0]["stdout"].strip().splitlines()[-1])


def test_no_process_outlives_its_notebook(observed):
    survivors, seen = observed
    assert survivors == [], "the zombie-leader survivor outlived its notebook (host's /proc)"
    assert not seen["survivor"], seen


def test_no_signal_reaches_a_later_notebook(observed):
    assert observed[1]["signals"] == 0, observed[1]


def test_no_abstract_socket_reaches_a_later_notebook(observed):
    assert not observed[1]["abstract"], observed[1]


def test_no_tmp_file_reaches_a_later_notebook(observed):
    assert "ste-left-tmp" not in observed[1]["tmp"], observed[1]


def test_no_shm_file_reaches_a_later_notebook(observed):
    assert "ste-left-shm" not in observed[1]["shm"], observed[1]


def test_no_sysv_object_reaches_a_later_notebook(observed):
    assert not observed[1]["sysv"], observed[1]


def test_nothing_is_planted_in_a_later_notebooks_scratch(observed):
    seen = observed[1]
    assert "ste-planted" not in seen["scratch"] and "ste-left-scratch" not in seen["scratch"], seen


def _run_and_signal(worker, signum):
    """Run the victim; signal its process from outside (the host) once it sleeps."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(worker.run(_job("victim", VICTIM, "print('after')"))))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (victims := _host_threads_named("ste-victim")):
        time.sleep(0.05)
    assert victims, "the victim notebook never started"
    time.sleep(0.3)
    os.kill(victims[0], signum)
    thread.join(60)
    return result


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT])
def test_a_death_or_interrupt_from_outside_is_an_infrastructure_error(worker, signum):
    result = _run_and_signal(worker, signum)
    assert result.get("status") == "error", result
    assert "outside" in (result.get("reason") or ""), result


LIMITS_PROBE = """
import json, os
def fill(folder):
    written, block = 0, b"x" * 2**20
    try:
        with open(os.path.join(folder, "fill"), "wb", buffering=0) as f:
            while written < 2**31:
                written += f.write(block)
    except OSError:
        pass
    os.unlink(os.path.join(folder, "fill"))
    return written
def forks():
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
    return len(pids) + len(os.listdir("/proc/self/task"))
def readable():
    me, seen = os.readlink("/proc/self"), []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != me:
            try:
                open(f"/proc/{pid}/environ", "rb").read()
                seen.append(pid)
            except OSError:
                pass
    return seen
try:
    bytearray(%(memory)d)
    allocated = True
except MemoryError:
    allocated = False
print(json.dumps({"tmp": fill("/tmp"), "shm": fill("/dev/shm"), "processes": forks(), "allocated": allocated,
                  "pid": os.getpid(), "readable": readable()}))
"""


def test_the_limits_that_hold_without_cgroups(worker):
    """This machine delegates no cgroup v2 controller, so these are the limits: processes for the
    notebook as a whole (RLIMIT_NPROC counted in its own user namespace), the private tmpfs
    sizes of /tmp and /dev/shm, address space per process (RLIMIT_AS). Memory for the notebook as
    a whole is NOT bounded (each of its processes may use memory_bytes). Under bubblewrap the
    kernel refuses the notebook a /proc of its own; the sandbox's shows the server, zygote and
    keeper, whose memory and environment it cannot read."""
    limits = worker.limits
    result = worker.run(_job("limits", LIMITS_PROBE % {"memory": limits.memory_bytes + 2**29}))
    ends = [e for e in result["events"] if e.get("event") == "end"]
    assert ends and not ends[0].get("error"), result
    seen = json.loads(ends[0]["stdout"].strip().splitlines()[-1])
    assert seen["pid"] == 1, seen  # PID 1 of its own namespace
    assert seen["readable"] == [], seen  # whatever /proc shows of the sandbox, none of its memory
    assert limits.scratch_bytes - 2**21 <= seen["tmp"] <= limits.scratch_bytes, seen
    assert limits.shm_bytes - 2**21 <= seen["shm"] <= limits.shm_bytes, seen
    assert seen["processes"] <= limits.processes, seen
    assert not seen["allocated"], seen


def test_a_notebook_reaches_nothing_outside_itself_by_process_group(worker):
    """``kill(0)`` (its process group; ``os.kill(os.getppid(), ...)`` is one, as PID 1's parent
    reads 0) and ``kill(-1)`` reach only the notebook: its keeper lives on, the row is its own."""
    result = worker.run(_job("reach", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                                      "os.kill(-1, signal.SIGKILL)", "print('alive')"))
    assert result["status"] is None, result
    assert [e["stdout"].strip() for e in result["events"] if e.get("event") == "end"][-1] == "alive", result
