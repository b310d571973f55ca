"""Start and talk to grading workers: a fork server (:mod:`ste_course.inside.server`) per worker,
inside bubblewrap unless the instructor passed ``--no-sandbox``.

What the sandbox sees (everything else does not exist in it):
* read-only: ``/usr`` (and the ``/lib``, ``/bin`` links), the dynamic linker cache, the Python
  installation, the virtual environment, and the ``ste_utils`` and ``ste_course`` packages;
* fresh ``/proc`` and ``/dev``, and new network, PID, IPC and UTS namespaces: no network at all
  (not even the host's loopback), and nothing started inside survives the sandbox.

Not visible: the submissions, ``solutions/``, the gradebook and output folder, the instructor's
home. As root, the server keeps only :data:`ste_course.inside.server.KEPT_CAPABILITIES` (to give
each notebook the worker's uid), and each worker leases a uid of its own for as long as it lives
(:func:`lease_uid`: an ``flock`` per uid in ``/run/ste-course/uids``, a folder that is root's
alone, so concurrent grading runs on one machine never share one); as another user bubblewrap runs unprivileged (a user namespace) and a fresh sandbox is
started per notebook. Either way each notebook is then sealed (:func:`ste_course.inside.server._seal`):
PID 1 of a PID namespace of its own (when it exits the kernel ends everything it started), with
its own user, mount, network and IPC namespaces, a private size-bounded ``/tmp`` (its scratch)
and ``/dev/shm``, its process limit counted in its own user namespace and no capability.
When the kernel refuses those namespaces (to bubblewrap or to a notebook), grading refuses to
start (:func:`sandbox_problem`) rather than run notebooks unsealed.

Limits that hold without cgroups (none are delegated here): processes per notebook as a whole
(``RLIMIT_NPROC`` in its user namespace), address space per process (``RLIMIT_AS``), bytes per
file, open files per process, and the tmpfs sizes (scratch and ``/dev/shm``); the notebook's
system-call filter (:mod:`ste_course.inside.seccomp`) refuses memory that no limit counts
(``memfd_create``, SysV shared memory, message queues, semaphores) and any change of a limit.
Memory is not bounded for the notebook as a whole (``tests/adversarial/test_sealed.py``
measures what holds).
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import importlib.util

from ste_course.inside.server import KEPT_CAPABILITIES, MAX_EVENT_BYTES, MAX_EVENT_VALUES, decode_bounded
from ste_course.files import open_dir
from ste_course.untrusted import shown

UID_BASE = 61000
UID_COUNT = 4096  # uids UID_BASE .. UID_BASE + UID_COUNT - 1 are the grading workers'
READY_TIMEOUT = 180.0
REPLY_VALUES = MAX_EVENT_VALUES + 1000  # the server's reply: the notebook's events and a few fields
REPLY_BYTES = 8 * MAX_EVENT_BYTES  # its events re-encoded (escapes may grow a string sixfold)


@dataclass
class Limits:
    """Per-notebook limits. ``memory_bytes`` is address space on top of the warm fork server's
    own footprint (about 1.3 GB of TensorFlow, shared copy-on-write with the server)."""

    cell_seconds: float = 60.0
    notebook_seconds: float = 300.0
    memory_bytes: int = 2 * 2**30
    processes: int = 64
    output_chars: int = 2**20
    file_bytes: int = 64 * 2**20
    scratch_bytes: int = 256 * 2**20  # the notebook's /tmp (tmpfs: memory, on top of memory_bytes)
    shm_bytes: int = 64 * 2**20  # its /dev/shm (tmpfs)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def uid_lock_dir() -> Path:
    """Where the per-uid lease locks live, shared by every grading run of this user on the
    machine: root's in ``/run/ste-course/uids`` (``/run`` is root's alone: no student can make the
    folder first), another user's under their own ``XDG_RUNTIME_DIR`` or ``~/.cache``."""
    if os.geteuid() == 0:
        return Path("/run/ste-course/uids")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and Path(runtime).is_absolute() else Path.home() / ".cache"
    return base / "ste-course" / "uids"


def _private_folder(path: Path, make_from: int = 0) -> int:
    """A descriptor of the folder ``path``, which must be this user's alone: every component from
    index ``make_from`` on (of ``path.parts``) is made (0700) if missing, and each is opened
    without following a link and must belong to this user and be writable by nobody else, so no
    one else can hold, place or redirect a lock in it. ``WorkerError`` says what is wrong."""
    uid = os.geteuid()
    fd = open_dir(path.parts[0])
    try:
        for i, part in enumerate(path.parts[1:], start=1):
            if i >= make_from:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = open_dir(part, fd)
            except OSError as err:
                raise WorkerError(f"the grading uid lease folder {path}: {Path(*path.parts[:i + 1])} is a link "
                                  f"or not a folder ({err.strerror}): remove it") from None
            os.close(fd)
            fd = child
            if i >= make_from or i == len(path.parts) - 1:
                info = os.fstat(fd)
                if info.st_uid != uid or info.st_mode & 0o022:
                    raise WorkerError(f"the grading uid lease folder {path}: {Path(*path.parts[:i + 1])} belongs "
                                      f"to uid {info.st_uid} with mode {stat.S_IMODE(info.st_mode):o}; it must be "
                                      f"uid {uid}'s and writable by nobody else: remove it")
        return fd
    except BaseException:
        os.close(fd)
        raise


def lease_uid(folder: Path | None = None, first: int = UID_BASE, count: int = UID_COUNT):
    """``(uid, fd)``: the lowest grading uid no live process holds; keep ``fd`` open to keep it.

    ``flock`` is per open file description and dropped by the kernel when its holder dies (even
    by SIGKILL), so two workers, of one run or of two runs on the machine, never get one uid.
    The lock files are opened through the folder's descriptor with ``O_NOFOLLOW``, in a folder
    that must be this user's alone (:func:`_private_folder`; made by default: :func:`uid_lock_dir`).
    """
    if folder is None:
        folder = uid_lock_dir()
        folder.parent.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # /run, or the user's own
        made = len(folder.parts) - 2  # ste-course/uids: made here, 0700
    else:
        made = len(folder.parts)  # the caller's folder: checked, never made
    folder_fd = _private_folder(folder, made)
    try:
        for uid in range(first, first + count):
            try:
                fd = os.open(f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600,
                             dir_fd=folder_fd)
            except OSError as err:
                raise WorkerError(f"cannot open the lease of uid {uid} in {folder}: {err.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            return uid, fd
    finally:
        os.close(folder_fd)
    raise WorkerError(f"all {count} grading uids from {first} are leased (lock files in {folder})")


def bwrap_path():
    return shutil.which("bwrap")


def _package_dirs():
    """Folders of the packages the sandbox imports (found without importing TensorFlow)."""
    return sorted({str(Path(importlib.util.find_spec(name).origin).resolve().parent)
                   for name in ("ste_utils", "ste_course")})


def bwrap_command(privileged: bool) -> list:
    """The bubblewrap command line that runs the fork server."""
    venv = Path(sys.prefix).resolve()
    base = Path(sys.base_prefix).resolve()
    cmd = [bwrap_path(), "--die-with-parent", "--new-session",
           "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if privileged:
        cmd += ["--cap-drop", "ALL"]  # the server drops CAP_SETPCAP itself, with its bounding set
        for cap in (*KEPT_CAPABILITIES, "CAP_SETPCAP"):
            cmd += ["--cap-add", cap]
    else:
        cmd += ["--unshare-user"]
    cmd += ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for name in ("lib", "lib64", "bin", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/nsswitch.conf"):
        if Path(etc).exists():
            cmd += ["--ro-bind", etc, etc]
    binds = [p for p in [str(base), str(venv)] + _package_dirs() if not p.startswith("/usr/")]
    ancestors = sorted({str(a) for p in binds for a in Path(p).parents if str(a) not in ("/", "/tmp")},
                       key=lambda a: a.count("/"))
    for ancestor in ancestors:  # bwrap would create them 0700: the per-notebook uid must traverse
        cmd += ["--perms", "0755", "--dir", ancestor]
    for path in binds:
        cmd += ["--ro-bind", path, path]
    # The grader's NumPy references (the answers): an empty read-only folder in their place.
    answers = Path(importlib.util.find_spec("ste_course").origin).resolve().parent / "references"
    if answers.is_dir():
        cmd += ["--tmpfs", str(answers), "--remount-ro", str(answers)]
    cmd += ["--chdir", "/tmp", "--clearenv",
            "--setenv", "PATH", f"{venv}/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "TF_CPP_MIN_LOG_LEVEL", "2", "--setenv", "TF_ENABLE_ONEDNN_OPTS", "0",
            "--setenv", "PYTHONNOUSERSITE", "1", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--setenv", "MPLBACKEND", "Agg", "--setenv", "LANG", "C.UTF-8",
            # NumPy's BLAS would start a thread per core; threads count against RLIMIT_NPROC
            "--setenv", "OPENBLAS_NUM_THREADS", "1", "--setenv", "OMP_NUM_THREADS", "1"]
    return cmd


class WorkerError(RuntimeError):
    pass


NAMESPACES_HINT = ("Allow user namespaces (sysctl user.max_user_namespaces > 0; Ubuntu: "
                   "kernel.apparmor_restrict_unprivileged_userns=0) or pass --no-sandbox for trusted submissions only.")


def sandbox_problem() -> str | None:
    """Why notebooks cannot be graded here with every limit in force, or None.

    Starts the sandbox with the server in probe mode (no TensorFlow): bubblewrap must start
    (as a non-root user that takes an unprivileged user namespace) and a child must get the
    notebook's own namespaces and process limit (:func:`ste_course.inside.server.isolation_problem`).
    """
    worker = Worker(0, True, Limits())
    try:
        worker.start(probe=True)
    except WorkerError as err:
        return str(err)
    finally:
        worker.stop()
    return None


SERVER_BYTES = 2 * 2**30  # the fork server and its zygote (TensorFlow imported), in a worker's memory group
CGROUP_V1 = Path("/sys/fs/cgroup")


def _own_cgroup(controller: str) -> Path:
    """This process's folder in the v1 hierarchy of ``controller`` (its limits apply below it)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return CGROUP_V1 / controller / path.lstrip("/")
    raise OSError(f"no cgroup v1 {controller} hierarchy")


FILE_MAX = Path("/proc/sys/fs/file-max")
LONG_MAX = 2**63 - 1


def lift_file_max() -> None:
    """Raise the machine's limit of open files (``fs.file-max``) to the kernel's maximum, as
    systemd does at boot, when it is lower (root only). Below the memory groups the machine-wide
    table is not a bound worth keeping but a shared pool: a notebook whose processes map files
    and close them (each mapping keeps its file open without a descriptor) filled this machine's
    2,466,239 entries and made every other user's ``open`` fail (red team, round 4); its open
    files are kernel memory charged to its own memory group, which bounds them instead."""
    try:
        if int(FILE_MAX.read_text().split()[0]) < LONG_MAX:
            FILE_MAX.write_text(str(LONG_MAX))
    except (OSError, ValueError, IndexError):
        pass  # not root or no /proc/sys: the per-process limits stand


class WorkerGroup:
    """The cgroups (v1) that hold one worker's sandbox: the fork server, its zygote and every
    notebook with its processes and its tmpfs pages.

    * **memory**: bounded together to ``limit`` bytes, and the notebook's processes (each
      notebook's first process moves itself there, through a descriptor of its ``cgroup.procs``
      the server is given, before any student code) in a group of their own below it, bounded to
      ``notebook_limit``. The kernel then ends only notebook processes when a notebook runs out
      (never the fork server, the zygote or a keeper: the red team's children, each smaller than
      the server, made the kernel end the server when both shared one group); and since a worker
      runs one notebook at a time, a rise of either group's out-of-memory counter during a
      notebook makes its row its own, never "killed from outside". No notebook can make the
      kernel end another's, the grader's or a judge's process.
    * **cpu** (where that hierarchy is writable too): one share per worker, equal, so however
      many processes a notebook starts, the notebooks of the other workers keep theirs (the red
      team's 40 busy processes made a neighbour's cells 7-10 times slower, towards its time limit).

    Created below the grader's own cgroups (their limits still apply) when the memory hierarchy
    is writable (root on a cgroup v1 machine); otherwise :meth:`create` returns ``None`` and the
    limits are the per-process ones (docs/grading.md says which hold).
    """

    def __init__(self, path: Path, limit: int, notebook_limit: int, cpu: Path | None):
        self.path, self.limit, self.notebook_limit, self.cpu = path, limit, notebook_limit, cpu
        self.notebook = path / "notebook"
        self.last = {}  # each group's out-of-memory counter when last read (final once removed)

    @classmethod
    def create(cls, name: str, limit: int, notebook_limit: int):
        try:
            lift_file_max()
            path = _own_cgroup("memory") / name
            path.mkdir(exist_ok=True)  # left by a run that crashed: its processes are gone with their lease
            (path / "memory.limit_in_bytes").write_text(str(int(limit)))
            group = cls(path, limit, notebook_limit, None)
            group.notebook.mkdir(exist_ok=True)
            (group.notebook / "memory.limit_in_bytes").write_text(str(int(notebook_limit)))
            group.oom_kills()
        except (OSError, StopIteration, IndexError, ValueError):
            return None
        try:
            cpu = _own_cgroup("cpu") / name
            cpu.mkdir(exist_ok=True)
            (cpu / "cpu.shares").write_text("1024")
            group.cpu = cpu
        except (OSError, ValueError):
            pass  # memory alone: CPU shared as the kernel schedules processes
        return group

    def wrap(self, command: list) -> list:
        """``command`` started inside the groups (the shell joins them, then becomes the command)."""
        procs = [str(p / "cgroup.procs") for p in (self.path, self.cpu) if p is not None]
        # sh -c SCRIPT $0 $1 ...: the first procs file is $0, the second (cpu) $1, shifted away
        script = 'echo $$ > "$0"' + (' && echo $$ > "$1" && shift' if len(procs) == 2 else "") + ' && exec "$@"'
        return ["/bin/sh", "-c", script, *procs, *command]

    def notebook_procs(self) -> int:
        """A descriptor (inheritable) of the notebooks' group's ``cgroup.procs``, for the server."""
        fd = os.open(self.notebook / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        os.set_inheritable(fd, True)
        return fd

    def oom_kills(self) -> int:
        """How many processes the kernel has ended in these groups for lack of memory (the last
        counts read, once the groups are removed)."""
        for path in (self.notebook, self.path):
            try:
                text = (path / "memory.oom_control").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    self.last[path] = int(value)
                    break
            else:
                raise ValueError("memory.oom_control has no oom_kill line (Linux < 4.13)")
        return sum(self.last.values())

    def remove(self) -> None:
        """Remove the groups once their processes are gone (a busy group is left for the next run)."""
        self.oom_kills()
        for path in (p for p in (self.notebook, self.path, self.cpu) if p is not None):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)


class Worker:
    """One fork server; ``run(job)`` returns the plain-data result of one notebook."""

    def __init__(self, index: int, sandbox: bool, limits: Limits):
        self.index, self.sandbox, self.limits = index, sandbox, limits
        self.privileged = os.geteuid() == 0
        self.uid, self.lease = None, None  # leased while the server lives (root, sandboxed)
        self.proc = None
        self.booting = None  # the stderr file of a server launched and not yet ready (launch)
        self.restart_each_job = sandbox and not self.privileged
        self.group = None  # the WorkerGroup of a root, sandboxed worker (while its lease lives)

    def _command(self, probe=False, group_fd=None):
        python = str(Path(sys.prefix) / "bin" / "python")
        server = [python, "-m", "ste_course.inside.server", str(self.uid) if self.uid is not None else "none"]
        server += ["--probe"] if probe else []
        server += ["--notebook-group-fd", str(group_fd)] if group_fd is not None else []
        command = (bwrap_command(self.privileged) + server) if self.sandbox else server
        return self.group.wrap(command) if self.group is not None else command

    def launch(self, probe=False):
        """Start the server's process without waiting for it: its TensorFlow import runs while the
        caller does other work, and :meth:`start` (from any thread) waits until it is ready. Call it
        from a thread that outlives the server: bubblewrap dies with the thread that started it."""
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0", MPLBACKEND="Agg")
        if self.privileged and self.sandbox and self.lease is None:
            self.uid, self.lease = lease_uid()
            notebook = self.limits.memory_bytes + self.limits.scratch_bytes + self.limits.shm_bytes
            self.group = WorkerGroup.create(f"ste-course-{self.uid}", notebook + SERVER_BYTES, notebook)
        errors = tempfile.TemporaryFile()  # a file, not a pipe: the server never blocks on it
        group_fd = self.group.notebook_procs() if self.group is not None and not probe else None
        try:
            self.proc = subprocess.Popen(self._command(probe, group_fd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=errors, env=env, cwd="/tmp" if self.sandbox else None,
                                         pass_fds=() if group_fd is None else (group_fd,))
        except BaseException:
            errors.close()
            raise
        finally:
            if group_fd is not None:
                os.close(group_fd)
        self.booting = errors

    def start(self, probe=False):
        """Start the server (``probe``: only its isolation check), or wait for the one :meth:`launch`
        started; ``WorkerError`` says why not."""
        if self.booting is None or self.proc is None:
            self.launch(probe)
        errors, self.booting = self.booting, None
        try:
            line = self._readline(READY_TIMEOUT)
            try:
                answer = decode_bounded(line, 100) if line else {}
            except ValueError:
                answer = {}
            if not isinstance(answer, dict) or not answer.get("ready"):
                self.stop()
                raise WorkerError(self._start_problem(answer, errors))
        finally:
            errors.close()

    def _start_problem(self, answer, errors) -> str:
        """The reason a start failed, from the server's answer or the tail of its stderr."""
        if isinstance(answer, dict) and answer.get("isolation"):
            return (f"the kernel refused each notebook its own user and IPC namespace, or the PID, mount and network "
                    f"namespaces and private /tmp that seal it with them: {shown(answer['isolation'], 200)}. "
                    f"{NAMESPACES_HINT}")
        errors.seek(max(0, errors.seek(0, os.SEEK_END) - 1000))
        said = shown(errors.read().decode("utf-8", "replace").strip(), 600) or "no message"
        if self.sandbox and said.startswith("bwrap:"):  # unprivileged, most likely its user namespaces
            return f"bubblewrap could not start the sandbox: {said}." + ("" if self.privileged else f" {NAMESPACES_HINT}")
        return f"the grading worker did not start (is the environment complete?): {said}"

    def _readline(self, timeout: float):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                sel.close()
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                sel.close()
                return None
            buf += chunk
            if len(buf) > REPLY_BYTES and b"\n" not in chunk:
                sel.close()
                return None
        sel.close()
        return buf.split(b"\n", 1)[0]

    def run(self, job: dict) -> dict:
        job = dict(job, limits=self.limits.as_dict())
        if self.proc is None or self.proc.poll() is not None or self.booting is not None:
            self.start()
        group = self.group
        kills = group.oom_kills() if group is not None else None
        result = self._run(job)
        if result.get("status") == "error" and group is not None and group.oom_kills() > kills:
            # ended for memory while it ran alone in its group: its own doing (WorkerGroup), never "from outside"
            result = dict(result, status="crash", reason=(
                f"the notebook used more memory than it may ({group.notebook_limit // 2**20} MB for all its "
                "processes, its /tmp and /dev/shm): the kernel ended it"))
        return result

    def _run(self, job: dict) -> dict:
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
            line = self._readline(self.limits.notebook_seconds + 60)
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            self.stop()
            return {"id": job["id"], "status": "error", "reason": "the grading worker stopped unexpectedly",
                    "events": [], "seconds": None}
        try:  # counted before decoding: never more values than a notebook may send
            result = decode_bounded(line, REPLY_VALUES)
        except ValueError:  # never a stray line's error in the parent
            result = None
        if not isinstance(result, dict) or result.get("id") != job["id"]:  # never trust a stray line
            self.stop()
            return {"id": job["id"], "status": "error", "reason": "the grading worker answered out of turn",
                    "events": [], "seconds": None}
        if self.restart_each_job:
            self.stop()
        return result

    def stop(self):
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001
                pass
            self.proc = None
        if self.booting is not None:
            self.booting.close()
            self.booting = None
        if self.group is not None:
            self.group.remove()
            self.group = None
        if self.lease is not None:  # the sandbox and every notebook in it are gone
            os.close(self.lease)
            self.uid, self.lease = None, None
