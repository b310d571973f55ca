"""Deeply nested JSON written by a notebook on the grader's channel (red team, issue 11).

A line nested ~990 levels deep raised RecursionError where the sandbox's output is parsed (the
fork server's event reader, and the parent's reading of the server's reply, which nests the
events two levels deeper): the server died and the row was an error blamed on the machinery.
Now such a line is an ``unreadable`` event, which the judge takes for tampering: the student's
own row with a reason, and the server goes on.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from ste_course.grading.judge import harness_events
from ste_course.inside.server import MAX_EVENT_DEPTH, _read_events, decode_event
from ste_course.sandbox import Limits, Worker

LIMITS = {"notebook_seconds": 30.0, "cell_seconds": 30.0}


def _nested(depth: int) -> bytes:
    return ('{"event": "x", "a": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}").encode()


def test_decode_event_never_raises():
    assert decode_event(b'{"event": "start", "cell": 3}') == {"event": "start", "cell": 3}
    assert decode_event(b"plain output") is None
    assert decode_event(b'{"a": "\xff\xfe"}') is None  # not UTF-8
    assert decode_event(b"[1, 2]") == [1, 2]  # JSON, not an event: the reader drops it
    assert decode_event(_nested(MAX_EVENT_DEPTH))["event"] == "x"
    for depth in (MAX_EVENT_DEPTH + 1, 990, 100_000):
        assert decode_event(_nested(depth))["event"] == "unreadable", depth


def test_the_server_reads_on_past_a_deep_event_and_the_judge_calls_it_tampering():
    read_fd, write_fd = os.pipe()
    lines = [b'{"event": "start", "cell": 1}', _nested(990), b'{"event": "end", "cell": 1, "evidence": []}']
    os.write(write_fd, b"\n".join(lines) + b"\n")
    os.close(write_fd)
    try:
        events, status, reason, _ = _read_events(read_fd, None, LIMITS, time.monotonic(), [1])
    finally:
        os.close(read_fd)
    assert status is None and reason is None
    assert [e["event"] for e in events] == ["start", "unreadable", "end"]
    stream = harness_events(events, [1])
    # tampering, said without repeating what the event carried (the reason names no forged content)
    assert stream.tampered and "out of order" in stream.tampered and "nothing from that cell on counts" in stream.tampered
    assert stream.events == []  # nothing of the cell it interrupted counts


@pytest.mark.parametrize("events", ["'[' * 5000 + ']' * 5000", "'[' + '[],' * 2_000_000 + '[]]'"],
                         ids=["nested-too-deeply", "more-values-than-the-budget"])
def test_the_parent_survives_a_reply_it_must_not_decode(events):
    """A server whose reply nests past the parent's recursion limit, or holds more JSON values
    than any notebook may send (issue 21, attack 6: counted before decoding): an error row, no
    raise, in bounded time, and the parent's memory does not grow."""
    script = ("import sys, json\nprint(json.dumps({'ready': True}), flush=True)\n"
              "job = json.loads(sys.stdin.readline())\n"
              "print('{\"id\": ' + json.dumps(job['id']) + ', \"events\": ' + " + events + " + '}',"
              " flush=True)\nsys.stdin.readline()\n")
    worker = Worker(0, False, Limits(notebook_seconds=20.0))
    worker._command = lambda probe=False, group_fd=None: [sys.executable, "-c", script]
    before = _rss()
    try:
        started = time.monotonic()
        result = worker.run({"id": "deep", "cells": [], "calls": {}})
        seconds = time.monotonic() - started
    finally:
        worker.stop()
    assert result["status"] == "error" and result["id"] == "deep" and result["events"] == []
    assert seconds < 5, seconds
    assert _rss() - before < 64 * 2**20


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
