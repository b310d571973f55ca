"""A notebook's memory is bounded as a whole, and running out of it is the notebook's own row;
its CPU is one worker's share, however many processes it starts.

Per process, a notebook may hold ``--memory-mb`` of address space, times ``--processes``, plus its
tmpfs: far more than the machine. Before, such a notebook (12 processes of 200 MB) simply ran,
and one large enough would have made the kernel end *some* process on the machine (another
notebook, a judge, the grader), each such row "killed from outside" and graded again. As root,
each worker's sandbox now lives in a memory cgroup of its own (``ste_course.sandbox.WorkerGroup``):
the kernel ends a process of that group only, notebooks first, and since the worker runs one
notebook at a time, the group's out-of-memory counter rising during it makes the row the
notebook's own (``crash``, not retried), whichever of its processes was ended.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from ste_course.sandbox import Limits, WorkerGroup, Worker, bwrap_path

SPLIT = r'''
import os, time
kids = []
for i in range(12):
    pid = os.fork()
    if pid == 0:
        block = bytearray(190 * 2**20)  # each smaller than the fork server (about 600 MB resident)
        for j in range(0, len(block), 4096):
            block[j] = 1
        time.sleep(5)
        os._exit(0)
    kids.append(pid)
print([os.waitpid(k, 0)[1] for k in kids])
'''

ALONE = r'''
import os
for folder in ("/tmp", "/dev/shm"):  # both tmpfs full: their pages are the notebook's group's
    try:
        for i in range(100):
            with open(f"{folder}/fill{i}", "wb") as f:  # 32 MB each (--file-mb is 64)
                for _ in range(32):
                    f.write(b"x" * 2**20)
    except OSError:  # no space left
        pass
own = bytearray(250 * 2**20)  # with the tmpfs, past the group's limit: the kernel ends this process
for j in range(0, len(own), 4096):
    own[j] = 1
'''


def _job(name, source):
    return {"id": name, "cells": [{"index": 0, "source": source, "locked": False}], "calls": {}, "seed": 0}


@pytest.fixture
def worker():
    if os.geteuid() != 0:
        pytest.fail("run as root (CI does): memory groups are made by a root grader")
    if bwrap_path() is None:
        pytest.fail("bubblewrap (bwrap) is needed: run scripts/system-deps.sh")
    worker = Worker(0, sandbox=True, limits=Limits(memory_bytes=256 * 2**20, processes=16,
                                                   cell_seconds=90, notebook_seconds=120))
    yield worker
    worker.stop()


MAPPER = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
held = []
for _ in range(20_000):  # open, map, close: the file stays open, held by its mapping alone (no descriptor)
    fd = os.open(sys.executable, os.O_RDONLY)
    address = libc.mmap(None, 4096, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
    os.close(fd)
    if address in (None, ctypes.c_void_p(-1).value):
        break
    held.append(address)
import time
time.sleep(2)  # held while the test reads the group's kernel memory
print(json.dumps({"files": len(held)}))
"""

NOTEBOOK_GROUP = r"""
import json
print(json.dumps([line for line in open("/proc/self/cgroup").read().split() if ":memory:" in line]))
"""


def test_the_sandbox_runs_in_its_own_bounded_memory_group_and_each_notebook_in_one_below(worker):
    worker.start()
    group = worker.group
    assert group is not None, "no memory group on a root, cgroup v1 machine"
    limits = worker.limits
    notebook = limits.memory_bytes + limits.scratch_bytes + limits.shm_bytes
    assert int((group.path / "memory.limit_in_bytes").read_text()) == notebook + 2 * 2**30
    assert int((group.notebook / "memory.limit_in_bytes").read_text()) == notebook
    members = {int(p) for p in (group.path / "cgroup.procs").read_text().split()}
    assert worker.proc.pid in members  # bubblewrap, and so the server, zygote and keepers
    result = worker.run(_job("where", NOTEBOOK_GROUP))
    ends = [e for e in result["events"] if e.get("event") == "end"]
    seen = json.loads(ends[0]["stdout"].strip().splitlines()[-1])
    assert len(seen) == 1 and seen[0].endswith("/notebook"), seen  # as its namespace shows it
    worker.stop()
    assert not group.path.exists(), "the group outlived its worker"


def test_a_notebook_over_its_memory_loses_its_own_processes_and_the_server_lives_on(worker):
    """Red team, round 2: with the server in the notebooks' group, the kernel ended the server
    (the largest process: each of the notebook's children was smaller), and the worker restarted.
    Now the kernel ends the notebook's own children, and the server, zygote and keeper stay."""
    worker.start()
    server = worker.proc
    result = worker.run(_job("split", SPLIT))
    assert result["status"] != "error", result  # the notebook's own row
    ends = [e for e in result["events"] if e.get("event") == "end"]
    statuses = json.loads(ends[0]["stdout"].strip().splitlines()[-1])
    assert 9 in statuses, statuses  # SIGKILLed children: the kernel's choice, within the notebook
    assert worker.proc is server and server.poll() is None, "the fork server was ended"

    result = worker.run(_job("alone", ALONE))  # its own process the largest: the notebook ends
    assert result["status"] == "crash", result
    assert "more memory than it may" in result["reason"], result
    assert worker.proc is server and server.poll() is None, "the fork server was ended"
    after = worker.run(_job("next", "print(1 + 1)"))
    assert after["status"] is None, after
    assert [e.get("stdout") for e in after["events"] if e.get("event") == "end"] == ["2\n"], after


def test_a_group_left_by_a_crashed_run_is_taken_over():
    if os.geteuid() != 0:
        pytest.fail("run as root (CI does)")
    first = WorkerGroup.create("ste-course-test-left", 300 * 2**20, 100 * 2**20)
    assert first is not None
    again = WorkerGroup.create("ste-course-test-left", 400 * 2**20, 200 * 2**20)
    try:
        assert again is not None and again.path == first.path
        assert int((again.path / "memory.limit_in_bytes").read_text()) == 400 * 2**20
        assert int((again.notebook / "memory.limit_in_bytes").read_text()) == 200 * 2**20
    finally:
        again.remove()
    assert not Path(first.path).exists()


SPINNERS = r"""
import os, time
kids = []
for i in range(24):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        end = time.monotonic() + 14
        while time.monotonic() < end:
            pass
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.waitpid(k, 0)
"""

SHARE = r"""
import json, time
wall, cpu = time.monotonic(), time.process_time()
while time.monotonic() - wall < 4:
    pass
print(json.dumps({"share": (time.process_time() - cpu) / (time.monotonic() - wall)}))
"""


def test_a_notebook_of_many_busy_processes_leaves_the_other_workers_their_cpu():
    """Red team: 40 busy processes in one notebook made the notebook on the other worker 7-10
    times slower (towards its own time limit, whose ``timeout`` is final). With a CPU share per
    worker the other notebook keeps about a core of the two; before, it got about 2 / 25."""
    if os.geteuid() != 0:
        pytest.fail("run as root (CI does): worker groups are made by a root grader")
    limits = Limits(cell_seconds=60, notebook_seconds=90)
    hog, victim = Worker(0, sandbox=True, limits=limits), Worker(1, sandbox=True, limits=limits)
    try:
        hog.start()
        victim.start()
        assert hog.group is not None and hog.group.cpu is not None, "no cpu group on a root, cgroup v1 machine"
        thread = threading.Thread(target=hog.run, args=(_job("spinners", SPINNERS),))
        thread.start()
        time.sleep(4)  # the spinners are running
        result = victim.run(_job("neighbour", SHARE))
        thread.join()
    finally:
        hog.stop()
        victim.stop()
    ends = [e for e in result["events"] if e.get("event") == "end"]
    share = json.loads(ends[0]["stdout"].strip().splitlines()[-1])["share"]
    assert share > 0.5, f"the neighbour got {share:.2f} of a core"


def test_the_machines_open_file_table_is_not_a_pool_one_notebook_can_fill(worker):
    """Red team, round 4: children that open, map and close files (a mapping keeps its file open
    without a descriptor) filled this machine's fs.file-max (2,466,239) and made every other
    user's open() fail with ENFILE. A root grader lifts the limit to the kernel's maximum (as
    systemd does at boot); the files are kernel memory charged to the notebook's own group."""
    from ste_course.sandbox import FILE_MAX, LONG_MAX

    worker.start()
    assert int(FILE_MAX.read_text().split()[0]) == LONG_MAX
    kmem = worker.group.notebook / "memory.kmem.usage_in_bytes"
    before, peak, done = int(kmem.read_text()), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], int(kmem.read_text()))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = worker.run(_job("mapper", MAPPER))
    finally:
        done.set()
        watcher.join()
    ends = [e for e in result["events"] if e.get("event") == "end"]
    assert json.loads(ends[0]["stdout"].strip().splitlines()[-1]) == {"files": 20_000}, result
    assert peak[0] - before > 20_000 * 256, (before, peak)  # the open files' kernel memory, in its group
