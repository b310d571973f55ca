"""Late submissions: nbgrader's ``timestamp.txt`` against the due dates the instructor configured.

Configuration (``ste_course.toml`` in the course root, or ``--config``), all optional::

    [grading]
    late_penalty_per_day = 0.1     # share of a notebook's max score lost per started day late

    [due]                          # UTC unless the time says otherwise
    03_ste = "2026-12-01 23:59:00"

A submission is late when its ``timestamp.txt`` (written by ``nbgrader collect``/``submit``) is
after the assignment's due date; without a timestamp or a due date it is not late.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass
class LatePolicy:
    due: dict = field(default_factory=dict)  # assignment -> naive UTC datetime
    penalty_per_day: float = 0.0

    @classmethod
    def load(cls, path: Path | None) -> "LatePolicy":
        if path is None or not Path(path).exists():
            return cls()
        from nbgrader.utils import parse_utc

        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        rate = float(data.get("grading", {}).get("late_penalty_per_day", 0.0))
        if not 0 <= rate <= 1:
            raise ValueError(f"{path}: late_penalty_per_day must be in [0, 1]. Received: {rate}")
        due = {str(k): parse_utc(v if isinstance(v, (str, datetime)) else str(v))
               for k, v in data.get("due", {}).items()}
        return cls(due=due, penalty_per_day=rate)

    def assess(self, assignment: str, folder: Path, score: float, max_score: float) -> tuple:
        """``(late, seconds late, penalty points)`` for one submitted notebook."""
        due = self.due.get(assignment)
        stamp = Path(folder) / "timestamp.txt"
        if due is None or not stamp.is_file() or stamp.is_symlink():
            return False, 0.0, 0.0
        from nbgrader.utils import parse_utc

        try:
            submitted = parse_utc(stamp.read_text(encoding="utf-8", errors="replace").strip()[:64])
        except (ValueError, OverflowError):
            return False, 0.0, 0.0
        seconds = (submitted - due).total_seconds()
        if seconds <= 0:
            return False, 0.0, 0.0
        days = math.ceil(seconds / 86400)
        return True, seconds, min(score, days * self.penalty_per_day * max_score)
