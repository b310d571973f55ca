"""Late submissions: nbgrader's ``timestamp.txt`` against the due dates the instructor configured.

Configuration (``ste_course.toml`` in the course root, or ``--config``), all optional::

    [grading]
    late_penalty_per_day = 0.1     # share of a notebook's max score lost per started day late
    # or nbgrader's methods: late_penalty = "none" (late is recorded, no penalty) or "zero"

    [due]                          # UTC unless the time says otherwise (a zone name or offset)
    03_ste = "2026-12-01 23:59:00"
    ps1 = "2026-12-01 23:59:00 America/Los_Angeles"

Without a rule in the file, a course's ``nbgrader_config.py`` ``LateSubmissionPlugin.penalty_method``
is the rule (:mod:`~ste_course.authoring.nbconfig`).

A submission is late when its ``timestamp.txt`` (written by ``nbgrader collect``/``submit``) is
after the assignment's due date; without a timestamp or a due date it is not late. The
timestamp is read in the formats nbgrader writes and nothing else (:func:`parse_time`): a
timestamp that cannot be read (not a regular file, a link, too long, not such a time) raises
:class:`LateError`, which the grader puts in the notebook's reason (and the row's ``late`` is
``unknown``, shown as ``?`` in the summary).

The file is checked before anything is graded (:meth:`LatePolicy.load`): TOML that does not
parse, an unknown setting, a penalty outside [0, 1], a date that does not parse or a due date
for a name that is not an assignment of ``solutions/`` is a one-line :class:`LateConfigError`.
The penalty is recorded where nbgrader records one (``SubmittedNotebook.late_submission_penalty``,
with the submission's ``timestamp`` and the assignment's ``duedate``), so formgrader shows it.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ste_course.untrusted import NotOwnFile, read_own, shown

MAX_TIMESTAMP_BYTES = 256
# nbgrader's timestamp_format "%Y-%m-%d %H:%M:%S.%f %Z" (UTC by default), with or without the
# fraction; the zone: none (UTC), "Z", a numeric offset (+HH, +HHMM, +HH:MM; what %z and
# to_numeric_tz write), or a name of the IANA database ("UTC", "America/Los_Angeles", "EST", "CET").
TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d{1,6})?"
                  r"(?: ?(UTC|GMT|Z)| ?([+-]\d{2})(?::?(\d{2}))?| ([A-Za-z][A-Za-z0-9_+/-]{0,63}))?", re.ASCII)


class LateError(ValueError):
    """A ``timestamp.txt`` that cannot be read; the message says why (safe to show)."""


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset:
    """The zone names of the IANA database on this machine (zoneinfo's, read once)."""
    return frozenset(zoneinfo.available_timezones())


def _zone(name: str, text: str):
    """The IANA zone ``name`` (only a name the database lists: nothing else is looked up as a
    file), or :class:`LateError` saying why not."""
    if name in _zone_names():
        return zoneinfo.ZoneInfo(name)
    if name.isalpha() and name.isupper() and len(name) <= 5:
        raise LateError(f"{shown(text.strip(), 60)}: {shown(name, 8)} is an abbreviation the time zone "
                        "database does not define, so the time is ambiguous (nbgrader would take it "
                        "as UTC); write a zone name (America/Los_Angeles) or an offset (-08:00)")
    raise LateError(f"{shown(text.strip(), 60)}: {shown(name, 64)} is not a zone of the IANA time zone "
                    "database; write a zone name (America/Los_Angeles) or an offset (-08:00)")


def parse_time(text: str) -> datetime:
    """A naive UTC datetime from a timestamp as nbgrader writes and reads it, e.g.
    ``2015-02-02 15:58:23.948203 America/Los_Angeles``, ``... UTC``, ``... EST``, ``... -08:00``,
    ``... -0800``, ``2015-02-02T15:58:23Z`` or no zone (UTC). Zone names are read through the
    IANA database (:mod:`zoneinfo`; an hour that occurs twice is taken the first time, as
    nbgrader's dateutil does). Nothing else is accepted (no fuzzy parsing, no abbreviation the
    database does not define such as ``PST``, which nbgrader silently reads as UTC).

    Raises:
        LateError: anything else.
    """
    match = TIME.fullmatch(text.strip())
    if match is None:
        raise LateError(f"{shown(text.strip(), 60)} is not a time as nbgrader writes it "
                        "(YYYY-MM-DD HH:MM:SS[.ffffff] [UTC|+HH:MM|zone name])")
    day, clock, fraction, _, hours, minutes, name = match.groups()
    try:
        when = datetime.fromisoformat(f"{day} {clock}{fraction.ljust(7, '0') if fraction else ''}")
    except ValueError as err:
        raise LateError(f"{shown(text, 60)} is not a time ({err})") from None
    try:
        if hours is not None:
            sign = -1 if hours.startswith("-") else 1
            when -= sign * timedelta(hours=int(hours[1:]), minutes=int(minutes or 0))
        elif name is not None:
            when = when.replace(tzinfo=_zone(name, text)).astimezone(timezone.utc).replace(tzinfo=None)
    except OverflowError:  # e.g. 0001-01-01 00:00:00 +05:00: before year 1 in UTC
        raise LateError(f"{shown(text.strip(), 60)} is not a time in UTC's years 1 to 9999") from None
    return when


class LateConfigError(ValueError):
    """A ``ste_course.toml`` that cannot be used; the message is one line saying where and what."""


@dataclass
class LatePolicy:
    due: dict = field(default_factory=dict)  # assignment -> naive UTC datetime
    penalty_per_day: float = 0.0
    method: str = "per_day"  # or nbgrader's "none" (no penalty) and "zero" (the whole score)

    parse_time = staticmethod(parse_time)

    @classmethod
    def load(cls, path: Path | None, assignments=None, method: str | None = None) -> "LatePolicy":
        """The policy in ``path`` (none: no late rule), checked before anything is graded.

        Args:
            path: ``ste_course.toml``; a missing file means no due dates.
            assignments: the course's assignment names; a due date for any other name is an
                error (a misspelt name would silently never apply).
            method: the rule when the file sets none (nbgrader's ``penalty_method`` of the
                course's ``nbgrader_config.py``: ``none`` or ``zero``).

        Raises:
            LateConfigError: TOML that does not parse, an unknown section or key, a penalty
                that is not a number in [0, 1], a date that does not parse, an unknown
                assignment name. One line, naming the file and what it received.
        """
        default = {"method": method} if method in ("none", "zero") else {}
        if path is None or not Path(path).exists():
            return cls(**default)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as err:
            raise LateConfigError(f"{path}: not readable as TOML: {err}") from None
        unknown = sorted(set(data) - {"grading", "due"}) + [
            f"grading.{k}" for k in sorted(set(data.get("grading", {})) - {"late_penalty_per_day", "late_penalty"})]
        if unknown:
            raise LateConfigError(f"{path}: unknown setting {shown(unknown[0], 60)}; the settings are "
                                  "[grading] late_penalty_per_day or late_penalty, and [due] <assignment> = <date>")
        grading = data.get("grading", {})
        if "late_penalty" in grading:
            if grading["late_penalty"] not in ("none", "zero") or "late_penalty_per_day" in grading:
                raise LateConfigError(f"{path}: late_penalty must be \"none\" or \"zero\" (nbgrader's "
                                      "methods), and is given instead of late_penalty_per_day. Received: "
                                      f"{shown(repr(grading['late_penalty']), 60)}")
            default = {"method": grading["late_penalty"]}
        elif "late_penalty_per_day" in grading:
            default = {}
        rate = grading.get("late_penalty_per_day", 0.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise LateConfigError(f"{path}: late_penalty_per_day must be a number in [0, 1] (a share "
                                  f"of the max score per started day). Received: {shown(repr(rate), 60)}")
        due = {}
        for name, value in data.get("due", {}).items():
            if assignments is not None and name not in assignments:
                raise LateConfigError(f"{path}: [due] names {shown(name, 60)}, which is not an assignment "
                                      f"of solutions/ ({', '.join(sorted(assignments))})")
            try:
                due[str(name)] = _utc(value) if isinstance(value, datetime) else parse_time(str(value))
            except LateError as err:
                raise LateConfigError(f"{path}: due date of {shown(name, 60)}: {err}") from None
        return cls(due=due, penalty_per_day=float(rate), **default)

    def fingerprint(self, assignment: str) -> str:
        """What of the policy a notebook of ``assignment`` is graded with (its due date, the rate)."""
        due = self.due.get(assignment)
        rule = self.penalty_per_day if self.method == "per_day" else self.method
        return f"{due.isoformat()}|{rule!r}" if due else "none"

    def assess(self, assignment: str, folder: Path, score: float, max_score: float) -> tuple:
        """``(late, seconds late, penalty points)`` for one submitted notebook: the penalty is
        ``ceil(days late) * penalty_per_day * max_score``, at most ``max_score``, so a grade
        adjusted by hand later still loses what the policy says (the grade is
        ``max(0, score - penalty)``, as nbgrader's export computes it).

        Raises:
            LateError: ``folder/timestamp.txt`` exists but cannot be read as a time.
        """
        due = self.due.get(assignment)
        return self.rule(assignment, read_timestamp(folder) if due is not None else None, max_score)

    def rule(self, assignment: str, submitted: datetime | None, max_score: float) -> tuple:
        """``(late, seconds late, penalty points)`` for a notebook submitted at ``submitted``
        (naive UTC, None: no timestamp), as :meth:`assess`; nbgrader's ``none`` takes nothing
        off, its ``zero`` everything (the max score, so a hand grade added later stays 0)."""
        due = self.due.get(assignment)
        if due is None or submitted is None:
            return False, 0.0, 0.0
        seconds = (submitted - due).total_seconds()
        if seconds <= 0:
            return False, 0.0, 0.0
        if self.method != "per_day":
            return True, seconds, max_score if self.method == "zero" else 0.0
        days = math.ceil(seconds / 86400)
        return True, seconds, min(max_score, days * self.penalty_per_day * max_score)


def read_timestamp(folder: Path) -> datetime | None:
    """``folder/timestamp.txt`` as naive UTC, or None when there is none.

    Raises:
        LateError: it exists but cannot be read as a time (a link, not a regular file, too
            long, not UTF-8, not a time as nbgrader writes it).
    """
    try:
        raw = read_own(Path(folder), ("timestamp.txt",), MAX_TIMESTAMP_BYTES, "timestamp.txt")
    except FileNotFoundError:
        return None
    except NotOwnFile as err:
        raise LateError(err.reason) from None
    except OSError as err:
        raise LateError(f"timestamp.txt could not be read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LateError("timestamp.txt is not a time: it is not UTF-8 text") from None
    try:
        return parse_time(text)
    except LateError as err:
        raise LateError(f"timestamp.txt: {err}") from None


def _utc(value: datetime) -> datetime:
    """A TOML datetime as naive UTC (a naive one is taken as UTC)."""
    return value if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)
