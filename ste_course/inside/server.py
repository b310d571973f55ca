"""The fork server: import TensorFlow once, then run each notebook in a fresh forked child.

Started by :mod:`ste_course.sandbox` (inside bubblewrap, or directly with ``--no-sandbox``) as
``python -m ste_course.inside.server``. It reads one job per line on stdin (JSON: cells to run, the
cases the grader drew, limits) and answers one result per line on stdout.

Right after importing TensorFlow, before reading any job, the server forks a *zygote*: a
process that never holds any job data (it closes the server's stdin and reply channel). For
each job the server makes two pipes, hands their ends to the zygote, which forks the notebook's
child; the child reads its own job from its own pipe. So a notebook's memory holds TensorFlow
and its own job, never an earlier notebook's source, output or evidence. For each job:

1. the child, before any student code: detaches stdin/stdout/stderr, makes the private scratch
   folder its working directory, ``HOME`` and ``TMPDIR``, sets resource limits (address space,
   file size, core dumps), drops to the worker's own uid when running as root, then
   (:func:`_isolate`) enters a user namespace and an IPC namespace of its own, sets the process
   limit there (since Linux 5.14 it counts this notebook's processes only, whoever the
   instructor is), and drops every capability, bounding set included (no-new-privs);
2. the server streams the child's per-cell events from a pipe, enforcing the per-cell and
   per-notebook time limits and a cap on the bytes read; only the harness's sequence (``start``
   of the next cell after the ``end`` of the previous one, in the job's order) resets the cell
   timer;
3. the server kills the child, then every process of the worker's uid (a process group would
   not do: ``setsid`` escapes it), deletes the scratch folder and any IPC object left in its
   own namespace (none when the child had its own).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import time

MAX_EVENT_BYTES = 8 * 2**20
MAX_JOB_BYTES = 256 * 2**20
MAX_EVENT_DEPTH = 32  # an event nested deeper is not the harness's (see decode_event)
CLONE_NEWUSER, CLONE_NEWIPC = 0x10000000, 0x08000000
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 4, 24, 38, 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# What the server keeps when it runs as root: give each notebook the worker's uid (SETUID,
# SETGID), hand it its scratch folder (CHOWN), kill it whatever its uid at that moment (KILL).
# bubblewrap also grants CAP_SETPCAP, which the server needs to empty its bounding set and then
# drops (:func:`keep_only`). Notebooks hold no capability at all (:func:`_isolate`).
TF_THREADS = 2  # TensorFlow intra-op and inter-op threads per notebook (see _preload)
KEPT_CAPABILITIES = {"CAP_CHOWN": 0, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7}
_SERVER_FDS: list = []  # the server's reply channel: a forked child must not inherit it


def _preload():
    """Everything a notebook needs, imported once so each fork starts warm."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401
    import tensorflow

    # Threads count against RLIMIT_NPROC (see _isolate), and TensorFlow sizes its pools by the
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


def _isolate(processes: int) -> None:
    """Enter a user and an IPC namespace of this notebook's own, limit its processes there and
    drop every capability (bounding set included).

    The new user namespace maps only the current uid and gid (to themselves): files keep their
    owners and permissions. ``RLIMIT_NPROC`` is counted per user namespace since Linux 5.14, so
    the limit counts this notebook's processes only, also when every notebook of a non-root
    instructor shares one uid. Raises ``OSError`` when the kernel refuses a step.
    """
    uid, gid = os.geteuid(), os.getegid()
    _libc_call("unshare", CLONE_NEWUSER | CLONE_NEWIPC)
    _libc_call("prctl", PR_SET_DUMPABLE, 1, 0, 0, 0)  # after setuid /proc/self/*_map belong to root
    for name, text in (("uid_map", f"{uid} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    _libc_call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)
    _limit(resource.RLIMIT_NPROC, processes)
    _prctl_capset(0)  # all of them: in its own user namespace it holds CAP_SETPCAP to do so
    _libc_call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _become(uid) -> None:
    """Drop to ``uid`` (its own gid, no supplementary groups): root's server only."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def isolation_problem(uid) -> str | None:
    """What the kernel refuses of a notebook's isolation here, or None when nothing.

    A forked child does what each notebook's child does before any student code (drop to
    ``uid`` when root, then :func:`_isolate`) and exits. Run before the server says it is
    ready, so a kernel without (nested) user namespaces stops grading with its reason instead
    of running notebooks without their own process limit and IPC namespace.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            if uid is not None:
                _become(uid)
            _isolate(1)
            if resource.getrlimit(resource.RLIMIT_NPROC)[0] != 1:
                raise OSError("RLIMIT_NPROC could not be set in the notebook's user namespace")
            os._exit(0)
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


def _child(job_fd, fd, shell, genuine, uid):
    """Runs in a child forked from the zygote; never returns."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote ignores it (auto-reaping)
        job = _read_job(job_fd)
        scratch = job["scratch"]
        devnull = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(devnull, target)
        os.setsid()
        limits = job["limits"]
        _limit(resource.RLIMIT_CORE, 0)
        _limit(resource.RLIMIT_FSIZE, int(limits["file_bytes"]))
        # The warm server already maps ~1.3 GB (TensorFlow, mostly shared and copy-on-write):
        # the notebook may allocate memory_bytes on top of that footprint.
        _limit(resource.RLIMIT_AS, _address_space() + int(limits["memory_bytes"]))
        if uid is not None:
            _limit(resource.RLIMIT_NPROC, int(limits["processes"]))
            _become(uid)
        _isolate(int(limits["processes"]))
        os.chdir(scratch)
        for var in ("HOME", "TMPDIR", "TMP", "TEMP", "MPLCONFIGDIR"):
            os.environ[var] = scratch
        os.environ["PYTHONHASHSEED"] = "0"
        import random

        import numpy as np
        import tensorflow as tf

        seed = int(job.get("seed", 0))
        random.seed(seed)
        np.random.seed(seed % 2**32)
        tf.random.set_seed(seed % 2**31)
        sys.path[:] = [p for p in sys.path if p not in ("", ".", scratch)]
        from ste_course.checks import GradingSession
        from ste_course.inside.harness import Notebook

        session = GradingSession(calls=job.get("calls", {}), reference_codes=genuine["reference_codes"])
        notebook = Notebook(shell, genuine, session, fd, int(limits["output_chars"]),
                            float(limits["cell_seconds"]))
        notebook.run(job["cells"])
    except BaseException as exc:  # noqa: BLE001 - the child must never fall back into the server loop
        try:
            os.write(fd, (json.dumps({"event": "fatal", "error": f"{type(exc).__name__}: {exc}"[:300]}) + "\n").encode())
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(0)


class Zygote:
    """A pristine process forked right after the preload, before the server reads any job.

    ``spawn(job_fd, event_fd)`` asks it to fork a notebook's child, which reads its job from
    ``job_fd`` and writes its events to ``event_fd``; the answer is a pidfd of the child (the
    zygote ignores SIGCHLD, so the kernel reaps its children; the server waits on the pidfd).
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
        while True:
            msg, fds, _, _ = socket.recv_fds(sock, 16, 2)
            if not msg or len(fds) != 2:
                return
            job_fd, event_fd = fds
            pid = os.fork()
            if pid == 0:
                sock.close()
                _child(job_fd, event_fd, shell, genuine, uid)
            os.close(job_fd)
            os.close(event_fd)
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:  # already gone
                pidfd = None
            socket.send_fds(sock, [b"pid"], [pidfd] if pidfd is not None else [])
            if pidfd is not None:
                os.close(pidfd)

    def spawn(self, job_fd, event_fd):
        """A pidfd of the new child, or None if it is already gone."""
        socket.send_fds(self.sock, [b"fork"], [job_fd, event_fd])
        msg, fds, _, _ = socket.recv_fds(self.sock, 16, 1)
        if not msg:
            raise RuntimeError("the zygote is gone")
        return fds[0] if fds else None

    def alive(self) -> bool:
        return os.waitpid(self.pid, os.WNOHANG) == (0, 0)


def _pids_of(uid):
    """Live (non-zombie) processes owned by ``uid``."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid != uid:
                    continue
                with open(f"/proc/{name}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
                if state not in (b"Z", b"X"):
                    pids.append(int(name))
            except (OSError, IndexError):
                pass
    return pids


def _as_uid(uid, action) -> None:
    """Run ``action()`` in a forked helper that has dropped to ``uid``."""
    pid = os.fork()
    if pid == 0:
        try:
            _become(uid)
            action()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def kill_uid(uid) -> None:
    """SIGKILL every process of ``uid`` (repeat until none is left: forks race the kill)."""
    for _ in range(100):
        if not _pids_of(uid):
            return
        _as_uid(uid, lambda: os.kill(-1, signal.SIGKILL))
        time.sleep(0.01)


def _remove_ipc_objects() -> int:
    """Remove every SysV IPC object this process may remove in its IPC namespace; how many."""
    libc = ctypes.CDLL(None, use_errno=True)
    removed = 0
    for table, remove in (("shm", lambda i: libc.shmctl(i, 0, None)), ("msg", lambda i: libc.msgctl(i, 0, None)),
                          ("sem", lambda i: libc.semctl(i, 0, 0))):  # IPC_RMID = 0
        try:
            with open(f"/proc/sysvipc/{table}") as f:
                ids = [int(line.split()[1]) for line in f.readlines()[1:] if len(line.split()) > 1]
        except (OSError, ValueError):
            continue
        removed += sum(remove(i) == 0 for i in ids)
    return removed


def _empty(folder) -> None:
    """Delete what is inside ``folder`` (making read-only subfolders writable first)."""
    def unlock(func, path, exc_info):
        try:
            os.chmod(os.path.dirname(path), 0o700)
            func(path)
        except OSError:
            pass

    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, onerror=unlock)
        else:
            os.unlink(path)


def _clean_up(uid, scratch) -> None:
    """After a notebook: its processes, files and IPC objects are gone."""
    if uid is None:
        _remove_ipc_objects()
        shutil.rmtree(scratch, ignore_errors=True)
        return
    kill_uid(uid)

    def as_notebook():
        _remove_ipc_objects()
        try:
            _empty(scratch)
        except OSError:
            pass

    _as_uid(uid, as_notebook)  # the server may not read the notebook's files (no CAP_DAC_OVERRIDE)
    try:
        os.rmdir(scratch)
    except OSError:
        pass


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


def decode_event(line: bytes):
    """One line of the notebook's channel as an event (a dict), or None for text that is not
    JSON (output, not evidence). Never raises: JSON nested too deeply to decode, or deeper than
    :data:`MAX_EVENT_DEPTH`, is an ``unreadable`` event, which the judge takes for what it is,
    something other than the harness writing on the channel (the harness's own events nest a
    few levels)."""
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
    """Collect events until EOF, the notebook's process exits, or a limit.

    Returns ``(events, status, reason, exited)``. A process the notebook left running may keep
    the pipe open, so the notebook counts as finished when its own process has exited (its pidfd
    is readable) and the pipe has nothing more to read.
    """
    events, buf, total = [], b"", 0
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
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            event = decode_event(line)
            if isinstance(event, dict):
                events.append(event)
                timer.see(event, time.monotonic())


def run_job(job, zygote, uid):
    scratch = tempfile.mkdtemp(prefix="job-", dir=job.get("scratch_root") or None)
    os.chmod(scratch, 0o700)
    if uid is not None:
        os.chown(scratch, uid, uid)
    job_read, job_write = os.pipe()
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pidfd = None
    try:
        pidfd = zygote.spawn(job_read, write_fd)
        os.close(job_read)
        os.close(write_fd)
        job_read = write_fd = None
        data = (json.dumps(dict(job, scratch=scratch)) + "\n").encode()
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
        for fd in (job_read, job_write, write_fd, read_fd):
            if fd is not None:
                os.close(fd)
        if pidfd is not None:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:  # already exited
                pass
            os.close(pidfd)
        _clean_up(uid, scratch)
    return {"id": job["id"], "status": status, "reason": reason, "events": events,
            "seconds": round(time.monotonic() - started, 3)}


def serve(uid=None, probe=False) -> None:
    """Answer jobs from stdin until EOF; with ``probe``, only say whether notebooks can be
    isolated here (no TensorFlow: a fraction of a second)."""
    if uid is not None:  # root in bubblewrap: keep only what giving notebooks a uid needs
        keep_only(KEPT_CAPABILITIES)
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
        result = run_job(job, zygote, uid)
        out.write(json.dumps(result) + "\n")
        out.flush()
        if not zygote.alive():  # killed by a notebook: a fresh server gets a fresh zygote
            return


if __name__ == "__main__":
    uid_arg = sys.argv[1] if len(sys.argv) > 1 else "none"
    serve(None if uid_arg == "none" else int(uid_arg), probe="--probe" in sys.argv[2:])
