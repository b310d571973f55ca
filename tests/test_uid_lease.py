"""Two grading runs on one machine never share a grading uid (issue 21, "a notebook is a sealed
unit"). Every run used to give worker ``i`` the uid ``UID_BASE + i``, so two runs (two courses,
a re-grade beside a scheduled run) ran notebooks under one uid. Now a root worker leases its uid
with an ``flock`` for as long as its sandbox lives (:func:`ste_course.sandbox.lease_uid`).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ste_course.sandbox import Limits, Worker, bwrap_path, lease_uid


def test_leases_are_exclusive_and_end_with_their_holder(tmp_path):
    first, fd = lease_uid(tmp_path, first=70000, count=3)
    second, fd2 = lease_uid(tmp_path, first=70000, count=3)
    assert (first, second) == (70000, 70001)
    (tmp_path / "70002.lock").touch()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\nsys.stdin.read()\n"), str(tmp_path / "70002.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match="all 3 grading uids"):
            lease_uid(tmp_path, first=70000, count=3)  # another process holds the last one
        os.close(fd)
        assert lease_uid(tmp_path, first=70000, count=3)[0] == 70000  # released with its fd
    finally:
        holder.stdin.close()
        holder.wait(10)
        os.close(fd2)


def test_two_runs_workers_of_the_same_index_get_different_uids():
    if bwrap_path() is None:
        pytest.fail("bubblewrap (bwrap) is needed: run scripts/system-deps.sh")
    one, other = Worker(0, True, Limits()), Worker(0, True, Limits())
    try:
        one.start(probe=True)
        other.start(probe=True)
        if os.geteuid() != 0:  # as another user, every notebook runs as the instructor
            assert one.uid is None and other.uid is None
            return
        assert one.uid is not None and other.uid is not None and one.uid != other.uid, (one.uid, other.uid)
        one.stop()
        assert one.uid is None and one.lease is None
        again = Worker(1, True, Limits())
        again.start(probe=True)
        assert again.uid is not None and again.uid != other.uid
        again.stop()
    finally:
        one.stop()
        other.stop()
