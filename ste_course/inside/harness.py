"""Run one notebook's cells in the current (sandboxed, forked) process and stream events.

This is the only module that executes student code. It runs inside the sandbox, in a child
forked from :mod:`ste_course.inside.server`; it reports per-cell events as JSON lines on a pipe and
trusts nothing that comes back from the student's code:

* Student (unlocked) cells run through IPython, so magics work.
* Locked cells (set-up and tests, restored by the grader from the instructor's source) are
  compiled and executed directly, after re-installing the genuine checking code
  (:func:`ste_course.inside.kernel.restore`) and ``check`` function: IPython input
  transformers, AST transformers, event callbacks and
  custom exception handlers a student registered never touch them.
* Output is captured per cell up to a byte limit; stderr is kept apart and never costs points.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
import traceback

_write = os.write  # bound before any student code runs
_dumps = json.dumps


def block_interrupts() -> None:
    """SIGINT blocked for good, before any student code (children inherit it): the notebook's
    process is PID 1 of its own namespace, so only a process outside it can interrupt it, and
    such an interrupt must not raise in a cell and cost the student points. It stays pending,
    unread; nothing in the notebook reports it (a report from inside is the student's to forge:
    the row is the notebook's own, and only the keeper's observation of how its process ended
    says "from outside"). Student code that unblocks SIGINT takes what comes."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


class CellTimeout(BaseException):
    """Raised by SIGALRM when a cell exceeds its time limit."""


class LimitedText(io.TextIOBase):
    """A text stream that keeps at most ``limit`` characters and counts the rest."""

    def __init__(self, limit: int):
        self.limit, self.parts, self.size, self.dropped = limit, [], 0, 0

    def writable(self):
        return True

    def write(self, text):
        text = str(text)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(len(text), room)
        self.dropped += max(len(text) - max(room, 0), 0)
        return len(text)

    def getvalue(self) -> str:
        tail = f"\n[... {self.dropped} more characters of output cut]" if self.dropped else ""
        return "".join(self.parts) + tail


def emit(fd: int, event: dict) -> None:
    data = (_dumps(event, allow_nan=False, default=str) + "\n").encode()
    view = memoryview(data)
    while view:
        n = _write(fd, view)
        view = view[n:]


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text if len(text) <= 500 else text[:497] + "..."


class Notebook:
    """Executes cells for one job; ``genuine`` holds references taken before student code."""

    def __init__(self, shell, genuine: dict, session, fd: int, output_limit: int, cell_timeout: float):
        self.shell, self.genuine, self.session = shell, genuine, session
        self.fd, self.output_limit, self.cell_timeout = fd, output_limit, cell_timeout

    def _restore_genuine(self) -> None:
        restore = self.genuine["restore_checks"]  # ste_course.inside.kernel.restore
        self.shell.user_ns["check"] = restore(self.genuine["checks"], self.session)

    def _run_locked(self, source: str):
        code = self.genuine["transform"](source)
        exec(compile(code, "<locked cell>", "exec"), self.shell.user_ns)  # noqa: S102 (instructor's code)

    def _run_student(self, source: str):
        result = self.shell.run_cell(source, store_history=False, silent=False)
        error = result.error_before_exec or result.error_in_exec
        if error is not None:
            raise error

    def run(self, cells: list) -> None:
        def on_alarm(signum, frame):
            raise CellTimeout(f"the cell ran longer than {self.cell_timeout:g} s")

        self.session.arm()  # before the first student cell: forbidden functions, whole run
        for cell in cells:
            index = cell["index"]
            self.session.cell = index
            self.session.evidence.pop(str(index), None)
            emit(self.fd, {"event": "start", "cell": index, "t": time.monotonic()})
            stdout, stderr = LimitedText(self.output_limit), LimitedText(self.output_limit)
            saved = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = stdout, stderr
            error = None
            try:
                signal.signal(signal.SIGALRM, on_alarm)
                signal.setitimer(signal.ITIMER_REAL, self.cell_timeout)
                if cell["locked"]:
                    self._restore_genuine()
                    self._run_locked(cell["source"])
                else:
                    self._run_student(cell["source"])
            except CellTimeout as exc:
                error = f"Timeout: {exc}"
            except SystemExit as exc:
                error = f"SystemExit: {exc.code!r}"
            except BaseException as exc:  # KeyboardInterrupt, anything a cell raises
                error = _error_text(exc)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                sys.stdout, sys.stderr = saved
            evidence = self.session.evidence.get(str(index), [])
            forbidden = self.session.report()
            try:
                payload = {"event": "end", "cell": index, "error": error, "t": time.monotonic(),
                           "stdout": stdout.getvalue(), "stderr": stderr.getvalue()[-2000:],
                           "evidence": evidence, "forbidden": forbidden}
                emit(self.fd, payload)
            except (TypeError, ValueError) as exc:  # evidence that is not plain data
                emit(self.fd, {"event": "end", "cell": index, "error": error,
                               "stdout": stdout.getvalue(), "stderr": "",
                               "evidence": [], "evidence_error": _error_text(exc), "forbidden": forbidden})
