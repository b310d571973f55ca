"""Late submissions: nbgrader's ``timestamp.txt`` against the due dates the instructor configured.

Configuration (``ste_course.toml`` in the course root, or ``--config``), all optional::

    [grading]
    late_penalty_per_day = 0.1     # share of a notebook's max score lost per started day late

    [due]                          # UTC unless the time says otherwise
    03_ste = "2026-12-01 23:59:00"

A submission is late when its ``timestamp.txt`` (written by ``nbgrader collect``/``submit``) is
after the assignment's due date; without a timestamp or a due date it is not late. The
timestamp is read in the formats nbgrader writes and nothing else (:func:`parse_time`): a
timestamp that cannot be read (not a regular file, a link, too long, not such a time) raises
:class:`LateError`, which the grader puts in the notebook's reason.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ste_course.untrusted import NotOwnFile, read_own, shown

MAX_TIMESTAMP_BYTES = 256
# nbgrader's timestamp_format "%Y-%m-%d %H:%M:%S.%f %Z" (UTC by default), with or without the
# fraction and the zone, an ISO "T", or a numeric offset (what to_numeric_tz writes).
TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d{1,6})?"
                  r"(?: ?(UTC|GMT|Z)| ?([+-]\d{2}):?(\d{2}))?", re.ASCII)


class LateError(ValueError):
    """A ``timestamp.txt`` that cannot be read; the message says why (safe to show)."""


def parse_time(text: str) -> datetime:
    """A naive UTC datetime from a timestamp as nbgrader writes it: ``2026-12-02 00:00:01.5 UTC``
    (``UTC``, ``GMT``, ``Z``, ``+01:00`` / ``+0100`` or no zone, meaning UTC). Nothing else is
    accepted (no fuzzy parsing, no zone names that would be looked up as files).

    Raises:
        LateError: anything else.
    """
    match = TIME.fullmatch(text.strip())
    if match is None:
        raise LateError(f"{shown(text.strip(), 60)} is not a time as nbgrader writes it "
                        "(YYYY-MM-DD HH:MM:SS[.ffffff] [UTC|+HH:MM])")
    day, clock, fraction, _, hours, minutes = match.groups()
    try:
        when = datetime.fromisoformat(f"{day} {clock}{fraction.ljust(7, '0') if fraction else ''}")
    except ValueError as err:
        raise LateError(f"{shown(text, 60)} is not a time ({err})") from None
    if hours is not None:
        sign = -1 if hours.startswith("-") else 1
        when -= sign * timedelta(hours=int(hours[1:]), minutes=int(minutes))
    return when


@dataclass
class LatePolicy:
    due: dict = field(default_factory=dict)  # assignment -> naive UTC datetime
    penalty_per_day: float = 0.0

    parse_time = staticmethod(parse_time)

    @classmethod
    def load(cls, path: Path | None) -> "LatePolicy":
        if path is None or not Path(path).exists():
            return cls()
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        rate = float(data.get("grading", {}).get("late_penalty_per_day", 0.0))
        if not 0 <= rate <= 1:
            raise ValueError(f"{path}: late_penalty_per_day must be in [0, 1]. Received: {rate}")
        due = {}
        for name, value in data.get("due", {}).items():
            try:
                due[str(name)] = _utc(value) if isinstance(value, datetime) else parse_time(str(value))
            except LateError as err:
                raise ValueError(f"{path}: due date of {name}: {err}") from None
        return cls(due=due, penalty_per_day=rate)

    def assess(self, assignment: str, folder: Path, score: float, max_score: float) -> tuple:
        """``(late, seconds late, penalty points)`` for one submitted notebook.

        Raises:
            LateError: ``folder/timestamp.txt`` exists but cannot be read as a time.
        """
        due = self.due.get(assignment)
        if due is None:
            return False, 0.0, 0.0
        try:
            raw = read_own(Path(folder), ("timestamp.txt",), MAX_TIMESTAMP_BYTES, "timestamp.txt")
        except FileNotFoundError:
            return False, 0.0, 0.0
        except NotOwnFile as err:
            raise LateError(err.reason) from None
        except OSError as err:
            raise LateError(f"timestamp.txt could not be read ({err.strerror})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise LateError("timestamp.txt is not a time: it is not UTF-8 text") from None
        try:
            submitted = parse_time(text)
        except LateError as err:
            raise LateError(f"timestamp.txt: {err}") from None
        seconds = (submitted - due).total_seconds()
        if seconds <= 0:
            return False, 0.0, 0.0
        days = math.ceil(seconds / 86400)
        return True, seconds, min(score, days * self.penalty_per_day * max_score)


def _utc(value: datetime) -> datetime:
    """A TOML datetime as naive UTC (a naive one is taken as UTC)."""
    return value if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)
