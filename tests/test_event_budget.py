"""The grader's channel has a budget (issue 21, attack 6: event flood).

A notebook wrote one ~8 MB line of 2.7 million empty lists on its event channel (within the byte
and depth caps): decoding it took seconds per notebook, grew the grader's memory by hundreds of
MB that were not given back, and the row was a retried ``error``, so every re-run paid again.
Now the values on the channel are counted before anything is decoded (brackets, commas and
colons outside strings: time and memory linear in the bytes), a notebook over budget stops with
the final status ``output``, and the parent decodes the server's reply under the same budget
(``tests/test_event_decoding.py``).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from ste_course.inside.server import MAX_EVENT_VALUES, OverBudget, _read_events, decode_bounded, json_values

LIMITS = {"notebook_seconds": 60.0, "cell_seconds": 60.0}
FLOOD = b'{"event": "end", "cell": 0, "evidence": [' + b"[]," * ((8 * 2**20 - 4096) // 3) + b"[]]}\n"  # ~8 MB, 2.8 million empty lists


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def _read(data: bytes):
    read_fd, write_fd = os.pipe()

    def write():
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(write_fd, view):]
        except BrokenPipeError:  # the reader stopped early
            pass
        os.close(write_fd)

    writer = threading.Thread(target=write)
    writer.start()
    running, kept = os.pipe()  # stands for the notebook's pidfd: not readable, the notebook "runs"
    try:
        return _read_events(read_fd, running, LIMITS, time.monotonic(), [0])
    finally:
        os.close(read_fd)
        writer.join()
        os.close(running)
        os.close(kept)


def test_values_are_counted_outside_strings_and_bound_the_real_count():
    assert json_values(b'{"event": "end", "stdout": "[[[,,,:::{{{"}') <= 2 * 1 + 1 + 2 + 1
    assert json_values(b"[[], [], []]") >= 4
    assert json_values(b'{"a": "\\"[[[", "b": [1, 2]}') <= 2 * 2 + 2 + 2 + 1
    assert decode_bounded(b'{"event": "start", "cell": 1}', 100) == {"event": "start", "cell": 1}
    with pytest.raises(OverBudget):
        decode_bounded(b"[" + b"[]," * 200 + b"[]]", 100)


def test_a_flood_costs_bounded_time_and_no_memory_and_is_final():
    before = _rss()
    for _ in range(3):
        started = time.monotonic()
        events, status, reason, _ = _read(b'{"event": "start", "cell": 0}\n' + FLOOD)
        seconds = time.monotonic() - started
        assert status == "output" and "values" in reason, (status, reason)
        assert [e["event"] for e in events] == ["start"]
        assert seconds < 1.5, seconds
    grown = _rss() - before
    assert grown < 64 * 2**20, f"the reader's memory grew by {grown / 2**20:.0f} MB over three floods"


def test_ordinary_output_stays_within_the_budget():
    """A notebook printing arrays (brackets and commas inside strings) costs a few values."""
    text = repr([[0.5] * 30] * 3000)
    line = ('{"event": "end", "cell": 0, "error": null, "stdout": ' + repr(text).replace("'", '"') + "}\n").encode()
    events, status, _, _ = _read(b'{"event": "start", "cell": 0}\n' + line)
    assert status is None and [e["event"] for e in events] == ["start", "end"]
    assert json_values(line) < 20 < MAX_EVENT_VALUES
