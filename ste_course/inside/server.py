"""The fork server: import TensorFlow once, then run each notebook in a fresh forked child.

Started by :mod:`ste_course.sandbox` (inside bubblewrap, or directly with ``--no-sandbox``) as
``python -m ste_course.inside.server``. It reads one job per line on stdin (JSON: cells to run, the
cases the grader drew, limits) and answers one result per line on stdout.

Right after importing TensorFlow, before reading any job, the server forks a *zygote*: a
process that never holds any job data (it closes the server's stdin and reply channel). For
each job the server makes pipes, hands their ends to the zygote, which forks the notebook's
*keeper*; the keeper reads its own job from its own pipe. So a notebook's memory holds TensorFlow
and its own job, never an earlier notebook's source, output or evidence.

A notebook is a sealed unit (:func:`_seal`): the keeper drops to the worker's uid (root only),
enters a user namespace of its own and with it new PID, mount, network and IPC namespaces,
mounts a private size-bounded tmpfs on ``/tmp`` (its scratch, ``HOME`` and working directory)
and ``/dev/shm``, then forks the notebook's process, which is PID 1 of the new PID namespace:
when it exits, the kernel kills every process left in it (zombie thread-group leaders and their
threads included), so nothing a notebook starts outlives it, and with it go its mounts, its
abstract unix sockets and its SysV objects. Nothing in it can address a process outside it
(pids are resolved in its own namespace), nor anything outside address it except its keeper and
the server. The keeper stays outside, waits for the notebook's process and reports how it ended.

1. the notebook's process, before any student code: takes a session of its own, mounts its own
   ``/proc`` (where the kernel allows it: not under bubblewrap, see :func:`_enter`), sets the process
   limit (counted in its own user namespace since Linux 5.14) and drops every capability,
   bounding set included (no-new-privs), then installs its system-call filter
   (:mod:`ste_course.inside.seccomp`: no forged signal sender, no changed limit, no keyring, no
   memory outside the address space and the tmpfs, no namespace of its own); SIGINT is
   blocked (:func:`ste_course.inside.harness.block_interrupts`): one from outside never raises
   in a cell, and nothing the notebook says makes it an error;
2. the server streams the notebook's per-cell events from a pipe, enforcing the per-cell and
   per-notebook time limits and a budget in bytes and in JSON values (:func:`json_values`,
   counted before anything is decoded); only the harness's sequence (``start`` of the next cell
   after the ``end`` of the previous one, in the job's order) resets the cell timer;
3. the server asks the keeper to end the notebook (SIGTERM: it kills the PID 1 and waits for
   it) and waits for the keeper: when the keeper has exited, nothing of the notebook is alive.
   A notebook killed by a signal that is not a fault of its own code (anything but SIGSEGV,
   SIGBUS, SIGILL, SIGFPE, SIGSYS, SIGTRAP, SIGABRT), when the server did not send it, was
   ended from outside: status ``error`` (an infrastructure failure, graded again by the next run).
   That verdict is the keeper's own observation (the wait status), never a line on the
   notebook's channel; the filter keeps the notebook's code from causing such a death itself
   (a CPU limit it set, whose SIGKILL the kernel sends). The server and everything it forks
   also leave the grader's session keyring for an empty one (:func:`fresh_session_keyring`).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import select
import signal
import socket
import sys
import time

from ste_course.inside import seccomp

MAX_EVENT_BYTES = 8 * 2**20
# JSON values (containers, keys, scalars) a notebook may send in all: the harness's events for a
# whole notebook are a few thousand (arrays travel as base64 text); see json_values.
MAX_EVENT_VALUES = 100_000
MAX_JOB_BYTES = 256 * 2**20
MAX_EVENT_DEPTH = 32  # an event nested deeper is not the harness's (see decode_event)
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 36, 38, 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# What the server keeps when it runs as root: give each notebook the worker's uid (SETUID,
# SETGID), end it whatever its uid (KILL). bubblewrap also grants CAP_SETPCAP, which the server
# needs to empty its bounding set and then drops (:func:`keep_only`). Notebooks hold no
# capability at all (:func:`_enter`).
TF_THREADS = 2  # TensorFlow intra-op and inter-op threads per notebook (see _preload)
KEPT_CAPABILITIES = {"CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7}
SCRATCH = "/tmp"  # the notebook's own tmpfs: working directory, HOME, TMPDIR
# Signals a process's own code raises (faults, abort): a notebook they end crashed by itself.
OWN_FAULTS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGSYS,
                        signal.SIGTRAP, signal.SIGABRT})
KEEPER_GRACE = 10.0  # seconds the keeper gets to end its notebook before it is killed
OPEN_FILES = 256  # RLIMIT_NOFILE of each notebook process (the filter keeps it from raising it)
PTYS = 8  # pseudo-terminals of a notebook's own devpts: the machine-wide pool (kernel.pty.max) is shared
KEYCTL_JOIN_SESSION_KEYRING = 1
_SERVER_FDS: list = []  # the server's reply channel: a forked child must not inherit it
# ``cgroup.procs`` of the notebooks' memory group (ste_course.sandbox.WorkerGroup), given by a root
# grader: each notebook's process moves itself there first thing, then closes it.
_NOTEBOOK_GROUP: list = []


def _preload():
    """Everything a notebook needs, imported once so each fork starts warm."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401
    import tensorflow

    # Threads count against RLIMIT_NPROC (see _enter), and TensorFlow sizes its pools by the
    # machine's cores: on a 64-core machine its pools alone would exceed the default limit of 64.
    # Two of each, whatever the machine, also makes a notebook's arithmetic the same everywhere.
    tensorflow.config.threading.set_intra_op_parallelism_threads(TF_THREADS)
    tensorflow.config.threading.set_inter_op_parallelism_threads(TF_THREADS)
    from IPython.core.inputtransformer2 import TransformerManager
    from IPython.core.interactiveshell import InteractiveShell

    import ste_course.checks as checks
    import ste_course.specs  # noqa: F401
    import ste_utils  # noqa: F401
    import ste_utils.data  # noqa: F401  (every module, so reference_codes() sees them all)
    import ste_utils.plotting  # noqa: F401
    import ste_utils.training  # noqa: F401

    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # no history database handle for children to inherit
    shell = InteractiveShell.instance(config=config)
    manager = TransformerManager()
    from ste_course.inside import kernel

    genuine = {"checks": kernel.snapshot(), "restore_checks": kernel.restore,
               "reference_codes": checks.reference_codes(),
               "transform": manager.transform_cell}
    return shell, genuine


def _limit(kind, value):
    if value is None:
        return
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(kind)
        resource.setrlimit(kind, (min(value, hard) if hard != resource.RLIM_INFINITY else value, hard))


def _address_space() -> int:
    """This process's current virtual size in bytes (VmSize)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _libc_call(name, *args) -> None:
    """Call libc's ``name``; raise ``OSError`` (with the call) when it fails."""
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}{args}: {os.strerror(err)}")


def _prctl_capset(keep: int) -> None:
    """Bounding set down to ``keep`` (a bit mask), ambient cleared, effective and permitted
    ``keep``, inheritable empty; raises ``OSError`` when the kernel refuses."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    for cap in range(last_cap + 1):
        if not keep >> cap & 1:
            _libc_call("prctl", PR_CAPBSET_DROP, cap, 0, 0, 0)
    _libc_call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    data = (_CapData * 2)(_CapData(keep & 0xFFFFFFFF, keep & 0xFFFFFFFF, 0), _CapData(keep >> 32, keep >> 32, 0))
    _libc_call("capset", ctypes.byref(_CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)), data)


def keep_only(names) -> None:
    """The server's own drop, right at its start (before any job)."""
    _prctl_capset(sum(1 << KEPT_CAPABILITIES[name] for name in names))


def fresh_session_keyring() -> bool:
    """Leave the session keyring the grader was started with (a login's or a service's, which may
    hold the instructor's keys) for a new, empty one: the server and every process it forks.
    False when the kernel refuses (no keyrings, or a container's filter refuses ``keyctl``): a
    second wall only, since the notebook's own filter refuses every keyring call."""
    number = seccomp.NUMBERS.get(os.uname().machine, {}).get("keyctl")
    libc = ctypes.CDLL(None, use_errno=True)
    return number is not None and libc.syscall(ctypes.c_long(number), KEYCTL_JOIN_SESSION_KEYRING, None) >= 0


def _mount(source: str, target: str, fstype, flags: int, data) -> None:
    _libc_call("mount", source.encode(), target.encode(), fstype.encode() if fstype else None,
               ctypes.c_ulong(flags), data.encode() if data else None)


def _seal(scratch_bytes: int, shm_bytes: int) -> None:
    """The keeper's half of a notebook's seal: a user namespace of its own (the current uid and
    gid mapped to themselves: files keep their owners) and, owned by it, new PID, mount, network
    and IPC namespaces; every mount private, and a fresh tmpfs of at most ``scratch_bytes`` on
    :data:`SCRATCH` and of ``shm_bytes`` on ``/dev/shm``, mode 0700, owned by the notebook, and a
    devpts of its own of at most :data:`PTYS` pseudo-terminals.
    The keeper's next child is PID 1 of the new PID namespace. Raises ``OSError`` when the
    kernel refuses a step."""
    uid, gid = os.geteuid(), os.getegid()
    _libc_call("unshare", CLONE_NEWUSER | CLONE_NEWIPC | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
    _libc_call("prctl", PR_SET_DUMPABLE, 1, 0, 0, 0)  # after setuid /proc/self/*_map belong to root
    for name, text in (("uid_map", f"{uid} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    _libc_call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    kept = _code_under(SCRATCH)  # opened before the tmpfs hides them
    for target, size in ((SCRATCH, scratch_bytes), ("/dev/shm", shm_bytes)):
        if os.path.isdir(target):
            _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV,
                   f"size={int(size)},nr_inodes=65536,mode=0700,uid={uid},gid={gid}")
    if os.path.isdir("/dev/pts"):  # ptys of its own, a few: the machine's pool is shared (kernel.pty.max)
        _mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
               f"newinstance,ptmxmode=0666,mode=0600,max={PTYS}")
    for path, fd in kept:  # the code the notebook imports stays where it was, with its mounts' flags
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None)
        os.close(fd)


def _code_under(scratch: str) -> list:
    """``[(folder, O_PATH descriptor)]``: the top folders below ``scratch`` that hold what this
    process imports from (``sys.path``, the interpreter, the virtual environment) or reads (a
    course's checks folder named in ``STE_COURSE_CHECKS``). A checkout or
    a virtual environment may live in ``/tmp`` (a CI clone, ``mktemp -d``); the notebook's own
    tmpfs on ``scratch`` must not hide it. Under bubblewrap such a folder holds only what the
    sandbox bound read-only; bind mounts keep those flags."""
    roots = set()
    checks = os.environ.get("STE_COURSE_CHECKS")  # specs.declarative.CHECKS_ENV: a course's checks, read by check()
    for path in [*sys.path, sys.prefix, sys.exec_prefix, os.path.dirname(sys.executable), *([checks] if checks else [])]:
        real = os.path.realpath(path or ".")
        rel = os.path.relpath(real, scratch)
        if rel != "." and not rel.startswith("..") and os.path.isdir(real):
            roots.add(os.path.join(scratch, rel.split(os.sep)[0]))
    return [(root, os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)) for root in sorted(roots)]


def _drop_all() -> None:
    """Every capability gone, bounding set included, and no way to gain one (no-new-privs)."""
    _prctl_capset(0)  # in its own user namespace it holds CAP_SETPCAP to do so
    _libc_call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _enter(processes: int, keeper_alive: int) -> None:
    """The notebook's process (PID 1 of its namespace), before any student code: its own
    ``/proc``, its process limit (counted in its own user namespace), no capability, death
    with its keeper, and the system-call filter (:mod:`ste_course.inside.seccomp`). ``keeper_alive``: the read end of a pipe only the keeper writes to. A
    session of its own: nothing it signals by process group (``kill(0, ...)``) is outside it."""
    os.setsid()  # a process group of its own: kill(0, ...) must not reach the keeper's
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    except OSError:
        # Refused under bubblewrap (its /proc has read-only submounts, which the kernel will not
        # let a child user namespace see past): the sandbox's /proc stays, showing the server's,
        # the zygote's and the keeper's pids, none of which the notebook can address (another
        # PID namespace) or read (none is dumpable).
        pass
    _limit(resource.RLIMIT_NPROC, processes)
    _drop_all()
    _libc_call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after the last credential change
    if _hung_up(keeper_alive):
        os._exit(1)  # the keeper died before the death signal was armed
    os.close(keeper_alive)
    seccomp.install()  # last: it refuses PR_SET_PDEATHSIG and setting limits from here on


def _hung_up(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def _become(uid) -> None:
    """Drop to ``uid`` (its own gid, no supplementary groups): root's server only."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _report(fd: int, report: dict) -> None:
    try:
        os.write(fd, json.dumps(report).encode())
    except OSError:
        pass


class Keeper:
    """A notebook's keeper: seals the notebook (:func:`_seal`), forks its process (PID 1 of
    the new namespace), waits for it and writes how it ended to ``status_fd`` (``{"code": n}``,
    ``{"signal": n}`` or ``{"fatal": True}``). SIGTERM asks it to kill the notebook first.
    Outside the notebook's PID namespace, nothing the notebook runs can address it."""

    def __init__(self, status_fd: int):
        self.status_fd, self.pid, self.reaped = status_fd, None, False
        signal.signal(signal.SIGTERM, self._end)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote ignores it (auto-reaping)

    def _end(self, signum, frame):
        if self.pid is None:
            _report(self.status_fd, {"fatal": True})
            os._exit(1)
        if not self.reaped:  # after the wait its pid may be another process's
            try:
                os.kill(self.pid, signal.SIGKILL)  # PID 1: the kernel ends its whole namespace
            except OSError:
                pass

    def run(self, job_fd, event_fd, shell, genuine, uid) -> None:
        job = _read_job(job_fd)
        devnull = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(devnull, target)
        os.setsid()
        limits = job["limits"]
        _limit(resource.RLIMIT_CORE, 0)
        _limit(resource.RLIMIT_FSIZE, int(limits["file_bytes"]))
        _limit(resource.RLIMIT_NOFILE, int(limits.get("open_files", OPEN_FILES)))
        # The warm server already maps ~1.3 GB (TensorFlow, mostly shared and copy-on-write):
        # the notebook may allocate memory_bytes on top of that footprint.
        _limit(resource.RLIMIT_AS, _address_space() + int(limits["memory_bytes"]))
        if uid is not None:
            _limit(resource.RLIMIT_NPROC, int(limits["processes"]))
            _become(uid)
        _seal(int(limits["scratch_bytes"]), int(limits["shm_bytes"]))
        alive_read, alive_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(alive_write)
            os.close(self.status_fd)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _notebook(job, event_fd, shell, genuine, int(limits["processes"]), alive_read)
        self.pid = pid
        os.close(alive_read)
        os.close(event_fd)
        for group_fd in _NOTEBOOK_GROUP:  # the notebook's alone
            os.close(group_fd)
        _NOTEBOOK_GROUP.clear()
        _drop_all()
        try:
            _, status = os.waitpid(pid, 0)  # returns once its whole namespace is gone
        except ChildProcessError:
            status = 0
        self.reaped = True
        if os.WIFSIGNALED(status):
            _report(self.status_fd, {"signal": os.WTERMSIG(status)})
        else:
            _report(self.status_fd, {"code": os.waitstatus_to_exitcode(status)})


def _join_notebook_group() -> None:
    """Move this process (and so everything it starts) into the notebooks' memory group, and
    close the descriptor: nothing of the notebook holds it. Raises ``OSError`` when the kernel
    refuses (the notebook then does not run: its memory would be bounded only with the server's)."""
    for fd in _NOTEBOOK_GROUP:
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    _NOTEBOOK_GROUP.clear()


def _notebook(job, fd, shell, genuine, processes, keeper_alive):
    """The notebook's process, PID 1 of its own namespace; never returns."""
    try:
        _join_notebook_group()
        _enter(processes, keeper_alive)
        os.chdir(SCRATCH)
        for var in ("HOME", "TMPDIR", "TMP", "TEMP", "MPLCONFIGDIR"):
            os.environ[var] = SCRATCH
        os.environ["PYTHONHASHSEED"] = "0"
        import random

        import numpy as np
        import tensorflow as tf

        seed = int(job.get("seed", 0))
        random.seed(seed)
        np.random.seed(seed % 2**32)
        tf.random.set_seed(seed % 2**31)
        sys.path[:] = [p for p in sys.path if p not in ("", ".", SCRATCH)]
        from ste_course.checks import GradingSession
        from ste_course.inside.harness import Notebook, block_interrupts

        limits = job["limits"]
        session = GradingSession(calls=job.get("calls", {}), reference_codes=genuine["reference_codes"])
        block_interrupts()
        notebook = Notebook(shell, genuine, session, fd, int(limits["output_chars"]), float(limits["cell_seconds"]))
        notebook.run(job["cells"])
    except BaseException as exc:  # noqa: BLE001 - the child must never fall back into the server loop
        _fatal(fd, exc)
    finally:
        os._exit(0)


def _fatal(fd, exc) -> None:
    try:
        os.write(fd, (json.dumps({"event": "fatal", "error": f"{type(exc).__name__}: {exc}"[:300]}) + "\n").encode())
    except BaseException:  # noqa: BLE001
        pass


def isolation_problem(uid) -> str | None:
    """What the kernel refuses of a notebook's seal here, or None when nothing.

    A forked keeper does what each notebook's keeper does before any student code (drop to
    ``uid`` when root, then :func:`_seal`), and its child what the notebook's process does
    (:func:`_enter`), then both exit. Run before the server says it is ready, so a kernel
    without (nested) user namespaces stops grading with its reason instead of running notebooks
    unsealed.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            if uid is not None:
                _become(uid)
            _seal(2**20, 2**20)
            alive_read, alive_write = os.pipe()
            child = os.fork()
            if child == 0:
                try:
                    os.close(alive_write)
                    _enter(1, alive_read)
                    if resource.getrlimit(resource.RLIMIT_NPROC)[0] != 1:
                        raise OSError("RLIMIT_NPROC could not be set in the notebook's user namespace")
                    if os.getpid() != 1:
                        raise OSError(f"the notebook's process is pid {os.getpid()}, not 1 of its own namespace")
                    os._exit(0)
                except BaseException as exc:  # noqa: BLE001
                    os.write(write_fd, f"{type(exc).__name__}: {exc}"[:500].encode(errors="replace"))
                    os._exit(1)
            _, status = os.waitpid(child, 0)
            os._exit(0 if status == 0 else 1)
        except BaseException as exc:  # noqa: BLE001 - report, never fall into the server
            try:
                os.write(write_fd, f"{type(exc).__name__}: {exc}"[:500].encode(errors="replace"))
            finally:
                os._exit(1)
    os.close(write_fd)
    message = os.read(read_fd, 1000).decode(errors="replace")
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if status == 0:
        return None
    return message or f"the isolation check ended with wait status {status}"


def _read_job(fd) -> dict:
    """The child's own job, from its own pipe (bounded: the server wrote it)."""
    data = b""
    while len(data) <= MAX_JOB_BYTES:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    return json.loads(data)


def _child(job_fd, fd, status_fd, shell, genuine, uid):
    """Runs in a child forked from the zygote (the keeper); never returns."""
    try:
        Keeper(status_fd).run(job_fd, fd, shell, genuine, uid)
    except BaseException as exc:  # noqa: BLE001 - the child must never fall back into the server loop
        _fatal(fd, exc)
        _report(status_fd, {"fatal": True})
    finally:
        os._exit(0)


class Zygote:
    """A pristine process forked right after the preload, before the server reads any job.

    ``spawn(job_fd, event_fd, status_fd)`` asks it to fork a notebook's keeper, which reads its
    job from ``job_fd``, has the notebook write its events to ``event_fd`` and reports how the
    notebook ended on ``status_fd``; the answer is a pidfd of the keeper (the zygote ignores
    SIGCHLD, so the kernel reaps its children; the server waits on the pidfd).
    """

    def __init__(self, shell, genuine, uid):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                self._serve(theirs, shell, genuine, uid)
            finally:
                os._exit(0)
        theirs.close()
        self.sock, self.pid = ours, pid

    @staticmethod
    def _serve(sock, shell, genuine, uid):
        for server_fd in _SERVER_FDS:  # the server's reply channel
            os.close(server_fd)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)  # the job stream is the server's, never read here
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        _libc_call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # a keeper's orphan comes back here
        while True:
            msg, fds, _, _ = socket.recv_fds(sock, 16, 3)
            if not msg or len(fds) != 3:
                return
            pid = os.fork()
            if pid == 0:
                sock.close()
                _child(*fds, shell, genuine, uid)
            for fd in fds:
                os.close(fd)
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:  # already gone
                pidfd = None
            socket.send_fds(sock, [b"pid"], [pidfd] if pidfd is not None else [])
            if pidfd is not None:
                os.close(pidfd)

    def spawn(self, job_fd, event_fd, status_fd):
        """A pidfd of the new keeper, or None if it is already gone."""
        socket.send_fds(self.sock, [b"fork"], [job_fd, event_fd, status_fd])
        msg, fds, _, _ = socket.recv_fds(self.sock, 16, 1)
        if not msg:
            raise RuntimeError("the zygote is gone")
        return fds[0] if fds else None

    def alive(self) -> bool:
        return os.waitpid(self.pid, os.WNOHANG) == (0, 0)


class CellTimer:
    """When the current cell started, as the harness reports it.

    Only the harness's own sequence counts: ``start`` of the job's first cell, its ``end``, the
    ``start`` of the next cell in the job's order, and so on. A ``start`` written by student code
    (a repeated one, one out of order, one without the previous cell's ``end``) never resets the
    timer, and once the sequence is broken nothing resets it again: the cells left share what
    remains of the current cell's budget.
    """

    def __init__(self, order, now):
        self.order, self.position, self.phase, self.broken = list(order), 0, "start", False
        self.started = now

    def see(self, event: dict, now: float) -> None:
        kind = event.get("event")
        if kind not in ("start", "end") or self.broken:
            return
        expected = self.order[self.position] if self.position < len(self.order) else None
        if kind != self.phase or event.get("cell") != expected or expected is None:
            self.broken = True
        elif kind == "start":
            self.started, self.phase = now, "end"
        else:
            self.position, self.phase = self.position + 1, "start"


def _depth(value) -> int:
    """How deeply lists and dicts nest in ``value`` (iterative: never a RecursionError)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            if level <= MAX_EVENT_DEPTH:
                stack += [(v, level + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


# A JSON string: its brackets, commas and colons are text, not values. Possessive loops and an
# optional closing quote: a match never fails once it has begun, so nothing is scanned twice (an
# unclosed string, e.g. '"' followed by a megabyte of '\\"', runs to the end in one pass; with
# backtracking each of its quotes started a scan to the end: quadratic, 107 s for 128 KB).
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)


def json_values(data: bytes) -> int:
    """An upper bound on the JSON values (containers, keys, scalars) ``data`` decodes to, counted
    without decoding it (one pass: time and memory linear in its length): every container is a
    bracket, every key a colon, and every element but a container's first follows a comma. A
    string the data never closes runs to its end (the decoder stops there too)."""
    bare = _STRING.sub(b"", data)
    return 2 * (bare.count(b"[") + bare.count(b"{")) + bare.count(b",") + bare.count(b":") + 1


class OverBudget(ValueError):
    """JSON with more values than the reader's budget (counted before decoding)."""


def decode_bounded(data: bytes, budget: int):
    """``json.loads(data)`` when :func:`json_values` allows at most ``budget`` values, else
    :class:`OverBudget`; raises ``ValueError`` (nothing else) for anything that is not JSON,
    nested too deeply to decode included."""
    if json_values(data) > budget:
        raise OverBudget(f"more than {budget:,} JSON values")
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to decode") from None


def decode_event(line: bytes):
    """One line of the notebook's channel as an event (a dict), or None for text that is not
    JSON (output, not evidence). Never raises: JSON nested too deeply to decode, or deeper than
    :data:`MAX_EVENT_DEPTH`, is an ``unreadable`` event, which the judge takes for what it is,
    something other than the harness writing on the channel (the harness's own events nest a
    few levels). The reader has counted the line's values first (:func:`json_values`)."""
    try:
        event = json.loads(line)
    except RecursionError:
        return {"event": "unreadable", "why": "JSON nested too deeply to decode"}
    except ValueError:  # UnicodeDecodeError included
        return None
    if _depth(event) > MAX_EVENT_DEPTH:
        return {"event": "unreadable", "why": f"JSON nested more than {MAX_EVENT_DEPTH} levels deep"}
    return event


def _read_events(fd, pidfd, limits, started, order):
    """Collect events until EOF, the notebook's keeper exits, or a limit.

    Returns ``(events, status, reason, exited)``. Every line's values are counted before it is
    decoded (:func:`json_values`): past :data:`MAX_EVENT_BYTES` bytes or :data:`MAX_EVENT_VALUES`
    values the notebook stops with status ``output``. The notebook counts as finished when its
    keeper has exited (its pidfd is readable) and the pipe has nothing more to read.
    """
    events, buf, total, values = [], bytearray(), 0, 0
    exited = pidfd is None
    timer = CellTimer(order, time.monotonic())
    notebook_deadline = started + float(limits["notebook_seconds"])
    cell_budget = float(limits["cell_seconds"]) + 5.0  # the child's own alarm fires first
    while True:
        now = time.monotonic()
        deadline = min(notebook_deadline, timer.started + cell_budget)
        if now >= deadline:
            which = "notebook" if notebook_deadline <= timer.started + cell_budget else "cell"
            limit = limits["notebook_seconds"] if which == "notebook" else limits["cell_seconds"]
            return events, "timeout", f"the {which} time limit of {limit:g} s was exceeded", exited
        ready, _, _ = select.select([fd], [], [], 0.0 if exited else min(deadline - now, 0.2))
        if not ready:
            if exited:  # its own process is gone and nothing is left to read
                return events, None, None, True
            exited = bool(select.select([pidfd], [], [], 0.0)[0])
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return events, None, None, exited
        total += len(chunk)
        if total > MAX_EVENT_BYTES:
            return events, "output", f"more than {MAX_EVENT_BYTES // 2**20} MB of results and output", exited
        buf += chunk
        if b"\n" not in chunk:
            continue
        *lines, rest = bytes(buf).split(b"\n")
        buf = bytearray(rest)
        for line in lines:
            values += json_values(line)
            if values > MAX_EVENT_VALUES:
                return events, "output", (f"more than {MAX_EVENT_VALUES:,} JSON values of results and output "
                                          "on the grader's channel"), exited
            event = decode_event(line)
            if isinstance(event, dict):
                events.append(event)
                timer.see(event, time.monotonic())


def _end(pidfd) -> None:
    """Ask the keeper to end its notebook (SIGTERM: it kills the notebook's PID 1, which ends its
    whole namespace) and wait until it has exited; if it has not within :data:`KEEPER_GRACE`,
    kill it (the notebook dies with it: its death signal)."""
    for signum, wait in ((signal.SIGTERM, KEEPER_GRACE), (signal.SIGKILL, KEEPER_GRACE)):
        if select.select([pidfd], [], [], 0.0)[0]:
            return
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except OSError:  # already exited
            return
        select.select([pidfd], [], [], wait)


def _ending(status_fd, asked: bool):
    """``(status, reason)`` when the notebook was ended from outside (a signal it did not raise
    itself, the server did not send), else ``(None, None)``."""
    try:
        report = decode_bounded(os.read(status_fd, 1000), 10) if select.select([status_fd], [], [], 0)[0] else None
    except (OSError, ValueError):
        report = None
    if asked:
        return None, None
    if not isinstance(report, dict):
        return "error", "the notebook's keeper was killed from outside the notebook (not its code): graded again next run"
    signum = report.get("signal")
    if isinstance(signum, int) and signum not in OWN_FAULTS:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return "error", f"the notebook's process was ended by {name} from outside the notebook (not its code): graded again next run"
    return None, None


def run_job(job, zygote):
    job_read, job_write = os.pipe()
    read_fd, write_fd = os.pipe()
    status_read, status_write = os.pipe()
    started = time.monotonic()
    pidfd, status, reason, events = None, None, None, []
    try:
        pidfd = zygote.spawn(job_read, write_fd, status_write)
        for fd in (job_read, write_fd, status_write):
            os.close(fd)
        job_read = write_fd = status_write = None
        data = (json.dumps(job) + "\n").encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(job_write, view):]
        except OSError:  # the child is already gone: its events say why
            pass
        os.close(job_write)
        job_write = None
        order = [cell["index"] for cell in job["cells"]]
        events, status, reason, _ = _read_events(read_fd, pidfd, job["limits"], started, order)
    finally:
        for fd in (job_read, job_write, write_fd, read_fd, status_write):
            if fd is not None:
                os.close(fd)
        asked = status is not None or pidfd is None
        if pidfd is not None:
            # The channel's end normally means the notebook is gone: its keeper exits right after.
            asked = asked or not select.select([pidfd], [], [], 0.0 if asked else 2.0)[0]
            _end(pidfd)
            os.close(pidfd)
        outside = _ending(status_read, asked)
        os.close(status_read)
    if status is None and outside[0] is not None:
        status, reason = outside
    return {"id": job["id"], "status": status, "reason": reason, "events": events,
            "seconds": round(time.monotonic() - started, 3)}


def serve(uid=None, probe=False) -> None:
    """Answer jobs from stdin until EOF; with ``probe``, only say whether notebooks can be
    sealed here (no TensorFlow: a fraction of a second)."""
    if uid is not None:  # root in bubblewrap: keep only what giving notebooks a uid needs
        keep_only(KEPT_CAPABILITIES)
    fresh_session_keyring()
    # Not dumpable: a notebook that sees this process in a /proc (of the sandbox, when the kernel
    # refuses it a /proc of its own) cannot read or write its memory, even under the same uid.
    _libc_call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)
    out = os.fdopen(os.dup(1), "w")
    _SERVER_FDS.append(out.fileno())
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # stray prints (TensorFlow, libraries) must not corrupt the protocol
    problem = isolation_problem(uid)
    if problem or probe:
        out.write(json.dumps({"ready": not problem, "isolation": problem}) + "\n")
        out.flush()
        return
    shell, genuine = _preload()
    zygote = Zygote(shell, genuine, uid)  # before any job is read
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        result = run_job(job, zygote)
        out.write(json.dumps(result) + "\n")
        out.flush()
        if not zygote.alive():  # killed by a notebook: a fresh server gets a fresh zygote
            return


if __name__ == "__main__":
    uid_arg = sys.argv[1] if len(sys.argv) > 1 else "none"
    if "--notebook-group-fd" in sys.argv[2:]:
        _NOTEBOOK_GROUP.append(int(sys.argv[sys.argv.index("--notebook-group-fd") + 1]))
    serve(None if uid_arg == "none" else int(uid_arg), probe="--probe" in sys.argv[2:])
