"""A notebook is a sealed unit (issue 21, attack 1): nothing it starts outlives it or reaches a
later notebook on the same worker, and a death or interrupt from outside is not its row.

One sandboxed worker runs, in order: an attacker that leaves a survivor (a forked child whose
main thread alone exits through the raw ``exit`` system call after starting a thread: the
thread-group leader is a zombie while the thread runs on), and files, a SysV segment and an
abstract unix socket behind; then an observer that reports what of it reaches it: signals,
the socket, ``/tmp``, ``/dev/shm``, SysV IPC, files planted in its scratch, processes. The
host's ``/proc`` is scanned for the survivor too. A notebook killed (SIGKILL) from outside must
be an infrastructure error (status ``error``, retried by the next run), never ``crash`` or a
graded row; a SIGINT from outside never reaches a cell (the row is the notebook's own).

The red team's second round (RT1), each seen failing on the code before the fix: the channel's
value count was quadratic in a line of escaped quotes; the grader's session keyring was readable
and a key passed from one notebook to the next; a notebook's own code made its row an "outside"
error (a CPU limit whose SIGKILL the kernel sends, a SIGINT with a forged sender, an
``interrupted`` line on the channel); memory outside every limit (memfds, SysV segments); and
the uid lease folder was taken as found (a student's folder or link).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ste_course.inside.seccomp import NUMBERS
from ste_course.sandbox import Limits, Worker, bwrap_path

LIBC = ctypes.CDLL(None, use_errno=True)
SYSCALLS = NUMBERS[os.uname().machine]
KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING = 1, 10, -3

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


def _search_session_keyring(name: bytes) -> int:
    return LIBC.syscall(SYSCALLS["keyctl"], KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, b"user", name, 0)


@pytest.fixture(scope="module")
def worker():
    if bwrap_path() is None:
        pytest.fail("bubblewrap (bwrap) is needed: run scripts/system-deps.sh")
    # As a PAM login or a systemd service starts the grader: a session keyring holding the
    # instructor's keys (Kerberos KEYRING caches, ecryptfs, NFS tokens). This test process's own.
    assert LIBC.syscall(SYSCALLS["keyctl"], KEYCTL_JOIN_SESSION_KEYRING, None) > 0
    assert LIBC.syscall(SYSCALLS["add_key"], b"user", b"ste:instructor", b"instructor-secret", 17,
                        KEY_SPEC_SESSION_KEYRING) > 0
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


def test_a_death_from_outside_is_an_infrastructure_error(worker):
    result = _run_and_signal(worker, signal.SIGKILL)
    assert result.get("status") == "error", result
    assert "outside" in (result.get("reason") or ""), result


def test_an_interrupt_from_outside_never_reaches_a_cell(worker):
    """SIGINT is blocked in the notebook: it neither raises in the cell (a KeyboardInterrupt that
    would cost points) nor makes the row an error (which only the keeper's own observation may)."""
    result = _run_and_signal(worker, signal.SIGINT)
    assert result.get("status") is None, result
    ends = [e for e in result["events"] if e.get("event") == "end"]
    assert [e["error"] for e in ends] == [None, None] and ends[1]["stdout"].strip() == "after", result


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


def test_the_channels_value_count_is_linear_in_its_size():
    """RT1: a line of escaped quotes with no closing quote made the string pattern backtrack from
    every quote (quadratic: 128 KB took 107 s; under budget a notebook could write it and stall
    its worker past the parent's timeout, an ``error`` row paid again every run). 1 MB of each
    shape, counted in a child with a deadline (the old pattern would run for hours)."""
    code = """
import time
from ste_course.inside.server import json_values
shapes = [b'"' + b'\\\\"' * 2**19, b'"' * 2**20, b'"' + b'\\\\' * 2**20, b'"",' * 2**18, b'[' + b'"\\\\"' * 2**18]
started = time.perf_counter()
counts = [json_values(shape) for shape in shapes]
print(counts, time.perf_counter() - started)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    counts, seconds = out.stdout.rsplit("]", 1)
    assert counts.strip() == "[1, 1, 1, 262145, 3", out.stdout + out.stderr
    assert float(seconds) < 2.0, out.stdout  # 5 MB in all: about 0.3 s on a loaded 2-core machine


def _ends(result) -> list:
    return [e for e in result["events"] if e.get("event") == "end"]


def test_no_notebook_reads_or_clears_the_graders_session_keyring(worker):
    notebook = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                f"print(libc.syscall({SYSCALLS['keyctl']}, 10, -3, b'user', b'ste:instructor', 0) > 0)\n"
                f"cleared = libc.syscall({SYSCALLS['keyctl']}, 7, -3)\n")  # KEYCTL_SEARCH, then KEYCTL_CLEAR
    ends = _ends(worker.run(_job("keyring", notebook)))
    assert ends and ends[0]["stdout"].strip() == "False", ends
    assert _search_session_keyring(b"ste:instructor") > 0  # still there


def test_no_key_passes_from_one_notebook_to_a_later_one(worker):
    write = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
             f"print(libc.syscall({SYSCALLS['add_key']}, b'user', b'ste:left', b'answers', 7, -3) > 0)\n"
             f"print(libc.syscall({SYSCALLS['add_key']}, b'user', b'ste:left', b'answers', 7, -4) > 0)\n")
    read = ("import ctypes\nlibc = ctypes.CDLL(None)\n"
            f"print([libc.syscall({SYSCALLS['keyctl']}, 10, ring, b'user', b'ste:left', 0) > 0 for ring in (-3, -4, -5)])\n")
    assert [e["stdout"].split() for e in _ends(worker.run(_job("writer", write)))] == [["False", "False"]]
    assert [e["stdout"].strip() for e in _ends(worker.run(_job("reader", read)))] == ["[False, False, False]"]


SELF_KILL = "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (1, 1))\nwhile True:\n    pass\n"
SELF_SIGINT = f"""
import ctypes, os, signal
info = (ctypes.c_int * 32)()
info[0], info[2], info[4] = signal.SIGINT, -1, 0  # si_signo, si_code SI_QUEUE, si_pid 0 (forged)
ctypes.CDLL(None).syscall({SYSCALLS['rt_sigqueueinfo']}, os.getpid(), signal.SIGINT, ctypes.byref(info))
"""
CHANNEL_SIGINT = """
import gc, json, os
from ste_course.inside.harness import Notebook
fd = next(o.fd for o in gc.get_objects() if isinstance(o, Notebook))
os.write(fd, (json.dumps({"event": "interrupted", "cell": 0}) + "\\n").encode())
"""


@pytest.mark.parametrize("name,source", [("rlimit_cpu_sigkill", SELF_KILL), ("forged_siginfo", SELF_SIGINT),
                                         ("forged_event", CHANNEL_SIGINT)])
def test_a_notebooks_own_code_cannot_claim_an_outside_death_or_interrupt(worker, name, source):
    """RT1: each made the row ``error`` "from outside the notebook (not its code): graded again
    next run", retried by every run for ever. Now the CPU limit cannot be set (the filter), the
    forged SIGINT cannot be sent (the filter) and nothing reads it, and the channel carries no
    verdict: the server's row is the notebook's own (a forged line is for the judge to find)."""
    result = worker.run(_job(name, source, "print('after')"))
    assert result["status"] is None and "outside" not in (result.get("reason") or ""), result
    assert _ends(result)[-1]["stdout"].strip() == "after", result


HOG = r"""
import ctypes, json, mmap, os, resource
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
held, block = {"memfd": 0, "sysv": 0, "msg": 0}, b"x" * 2**20
try:
    while held["memfd"] < 2**30:
        fd = os.memfd_create("hog")
        for _ in range(32):
            held["memfd"] += os.write(fd, block)
except OSError:
    pass
for _ in range(8):
    seg = libc.shmget(0, 128 * 2**20, 0o1000 | 0o600)
    if seg < 0:
        break
    addr = libc.shmat(seg, None, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        break
    ctypes.memset(addr, 1, 128 * 2**20)
    libc.shmdt(ctypes.c_void_p(addr))
    held["sysv"] += 128 * 2**20
held["msg"] = libc.msgget(0, 0o1000 | 0o600) >= 0
held["sem"] = libc.semget(0, 1, 0o1000 | 0o600) >= 0
held["files"] = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (10, 10))
    held["lowered"] = True
except (ValueError, OSError):
    held["lowered"] = False
print(json.dumps(held))
"""


def test_no_memory_outside_the_address_space_and_the_tmpfs(worker):
    """RT1: with memory_bytes = 256 MB one process held 1 GB in memfds written with write() (no
    address space) and 1 GB in SysV segments (the kernel's default limits). Both are refused
    now (the filter), as are SysV message queues and semaphores, and open files are capped."""
    saved = worker.limits
    worker.limits = Limits(**dict(saved.as_dict(), memory_bytes=256 * 2**20))
    try:
        ends = _ends(worker.run(_job("hog", HOG)))
    finally:
        worker.limits = saved
    held = json.loads(ends[0]["stdout"].strip().splitlines()[-1])
    assert held == {"memfd": 0, "sysv": 0, "msg": False, "sem": False, "files": [256, 256], "lowered": False}, held


FILTER_PROBE = f"""
import ctypes, json, os, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
def refused(number, *args):
    return libc.syscall(number, *args) == -1 and ctypes.get_errno()
seen = {{"unshare": refused({SYSCALLS['unshare']}, 0x10000000),
        "pdeathsig": refused({SYSCALLS['prctl']}, 1, 15, 0, 0, 0),
        "clone3": refused({SYSCALLS['clone3']}, None, 0),
        "io_uring": refused({SYSCALLS['io_uring_setup']}, 8, None),
        "ptrace": refused({SYSCALLS['ptrace']}, 16, 0x3fffffff, None, None),  # PTRACE_ATTACH: ESRCH unfiltered
        "vm_read": refused({SYSCALLS['process_vm_readv']}, os.getpid(), None, 0, None, 0, 0),
        "vm_write": refused({SYSCALLS['process_vm_writev']}, os.getpid(), None, 0, None, 0, 0),
        "getfd": refused({SYSCALLS['pidfd_getfd']}, -1, 0, 0),
        "sync": refused({SYSCALLS['sync']}),
        "syncfs": refused({SYSCALLS['syncfs']}, 0),
        "io_setup": refused({SYSCALLS['io_setup']}, 1, None),
        "fsync": libc.syscall({SYSCALLS['fsync']}, -1),  # 0: not run (EBADF, -1, if it ran)
        "fdatasync": libc.syscall({SYSCALLS['fdatasync']}, -1),
        "dontneed": libc.syscall({SYSCALLS['fadvise64']}, -1, 0, 0, 4),  # 0: not run (EBADF if it ran)
        "willneed": refused({SYSCALLS['fadvise64']}, -1, 0, 0, 3)}}  # runs: EBADF
ptys = []  # the machine's pool is shared: a notebook gets a devpts of its own, of a few
try:
    while len(ptys) < 40:
        ptys.append(os.openpty())
except OSError:
    pass
seen["ptys"] = len(ptys)
thread = threading.Thread(target=lambda: seen.update(thread=True))
thread.start()
thread.join()
seen["spawned"] = subprocess.run(["python", "-c", "print(7 * 6)"], capture_output=True, text=True).stdout.strip()
print(json.dumps(seen))
"""


def test_the_filter_refuses_namespaces_and_a_death_signal_and_lets_processes_start(worker):
    ends = _ends(worker.run(_job("filter", FILTER_PROBE)))
    seen = json.loads(ends[0]["stdout"].strip().splitlines()[-1])
    assert seen == {"unshare": 1, "pdeathsig": 1, "clone3": 38, "io_uring": 1, "ptrace": 1, "vm_read": 1,
                    "vm_write": 1, "getfd": 1, "sync": 1, "syncfs": 1, "io_setup": 1, "fsync": 0, "fdatasync": 0,
                    "dontneed": 0, "willneed": 9, "ptys": 8, "thread": True, "spawned": "42"}, seen


LEASE = r"""
set -e
mount -t tmpfs -o mode=1777 tmpfs /run
mkdir -m 0777 {target} && chown 65534:65534 {target}
setpriv --reuid=65534 --regid=65534 --clear-groups {make}
{python} -c '
import os, sys
from ste_course.sandbox import lease_uid
try:
    lease_uid()
except Exception as err:
    print("refused:", err)
else:
    print("leased")
print("in the target:", os.listdir("{target}"))
'
"""


@pytest.mark.parametrize("make", ["ln -s {target} /run/ste-course", "mkdir -m 0777 /run/ste-course",
                                  "mkdir -p -m 0755 /run/ste-course/uids"])
def test_root_never_leases_in_a_folder_a_student_made(tmp_path, make):
    """RT1: the lease folder was /run/lock/ste-course-uids (/run/lock is 1777): a student made it
    first, as their own folder (and held every uid: every run stopped) or as a link (root made
    its lock files where it pointed). Now it is /run/ste-course/uids, which only root can make;
    here /run is made writable by all in a private mount namespace, so the student gets there
    first, and the folder they made is refused with a reason, nothing created in it."""
    if os.geteuid() != 0:
        pytest.fail("needs root (a private mount namespace and a student's uid): run it as root", pytrace=False)
    target = tmp_path / "student"
    os.chmod(tmp_path, 0o755)
    script = LEASE.format(target=target, make=make.format(target=target), python=sys.executable)
    out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "in the target: []" in out.stdout, out.stdout


def test_the_filter_is_built_for_both_architectures_and_fails_closed_elsewhere():
    from ste_course.inside.seccomp import program

    for machine in ("x86_64", "aarch64"):
        code = program(machine)
        assert code[-1][3] & 0xFFFF == 38 and all(0 <= jt <= 255 and 0 <= jf <= 255 for _, jt, jf, _ in code)
    with pytest.raises(ValueError, match="riscv64"):
        program("riscv64")
