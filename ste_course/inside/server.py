"""The fork server: import TensorFlow once, then run each notebook in a fresh forked child.

Started by :mod:`ste_course.sandbox` (inside bubblewrap, or directly with ``--no-sandbox``) as
``python -m ste_course.inside.server``. It reads one job per line on stdin (JSON: cells to run, the
cases the grader drew, limits) and answers one result per line on stdout. For each job it:

1. forks a child which, before any student code: detaches stdin/stdout/stderr, makes a private
   scratch folder its working directory, ``HOME`` and ``TMPDIR``, sets resource limits
   (address space, processes, file size, core dumps) and, when running as root, drops to a
   uid of its own (so the process limit applies and every process it starts can be killed
   together);
2. streams the child's per-cell events from a pipe, enforcing the per-cell and per-notebook
   time limits and a cap on the bytes read;
3. kills every process of the child's uid (a process group would not do: ``setsid`` escapes
   it), reaps the child and deletes the scratch folder.

The child never sees other jobs: each job is written to the server only after the previous one
has been answered and its processes killed.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time

MAX_EVENT_BYTES = 8 * 2**20
_SERVER_FDS: list = []  # the server's reply channel: a forked child must not inherit it


def _preload():
    """Everything a notebook needs, imported once so each fork starts warm."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401
    import tensorflow  # noqa: F401
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


def _child(job, shell, genuine, fd, scratch, uid):
    """Runs in the forked child; never returns."""
    try:
        for server_fd in _SERVER_FDS:  # else student code could write forged replies for other jobs
            os.close(server_fd)
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
            os.chown(scratch, uid, uid)
            _limit(resource.RLIMIT_NPROC, int(limits["processes"]))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
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


def kill_uid(uid) -> None:
    """SIGKILL every process of ``uid`` (repeat until none is left: forks race the kill)."""
    for _ in range(100):
        if not _pids_of(uid):
            return
        pid = os.fork()
        if pid == 0:
            try:
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.01)


def _read_events(fd, pid, limits, started):
    """Collect events until EOF, the notebook's process exits, or a limit.

    Returns ``(events, status, reason, reaped)``. A process the notebook left running may keep
    the pipe open, so the notebook counts as finished when its own process has exited and the
    pipe has nothing more to read (``reaped`` says the child was waited for here).
    """
    events, buf, total = [], b"", 0
    exited = False
    cell_started = time.monotonic()
    notebook_deadline = started + float(limits["notebook_seconds"])
    cell_budget = float(limits["cell_seconds"]) + 5.0  # the child's own alarm fires first
    while True:
        now = time.monotonic()
        deadline = min(notebook_deadline, cell_started + cell_budget)
        if now >= deadline:
            which = "notebook" if notebook_deadline <= cell_started + cell_budget else "cell"
            limit = limits["notebook_seconds"] if which == "notebook" else limits["cell_seconds"]
            return events, "timeout", f"the {which} time limit of {limit:g} s was exceeded", exited
        ready, _, _ = select.select([fd], [], [], 0.0 if exited else min(deadline - now, 0.2))
        if not ready:
            if exited:  # its own process is gone and nothing is left to read
                return events, None, None, True
            exited = os.waitpid(pid, os.WNOHANG)[0] == pid
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
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
                if event.get("event") == "start":
                    cell_started = time.monotonic()


def run_job(job, shell, genuine, uid):
    scratch = tempfile.mkdtemp(prefix="job-", dir=job.get("scratch_root") or None)
    os.chmod(scratch, 0o700)
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(job, shell, genuine, write_fd, scratch, uid)
    os.close(write_fd)
    try:
        events, status, reason, reaped = _read_events(read_fd, pid, job["limits"], started)
    except BaseException:
        reaped = False
        raise
    finally:
        os.close(read_fd)
        if not reaped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        if uid is not None:
            kill_uid(uid)
        shutil.rmtree(scratch, ignore_errors=True)
    return {"id": job["id"], "status": status, "reason": reason, "events": events,
            "seconds": round(time.monotonic() - started, 3)}


def serve(uid=None) -> None:
    """Answer jobs from stdin until EOF."""
    out = os.fdopen(os.dup(1), "w")
    _SERVER_FDS.append(out.fileno())
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # stray prints (TensorFlow, libraries) must not corrupt the protocol
    shell, genuine = _preload()
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        result = run_job(job, shell, genuine, uid)
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    uid_arg = sys.argv[1] if len(sys.argv) > 1 else "none"
    serve(None if uid_arg == "none" else int(uid_arg))
