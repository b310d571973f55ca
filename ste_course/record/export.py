"""``ste-course export``: the grades as one row per student, for a spreadsheet or an LMS.

Read from the gradebook (``graded/``'s, or ``--db``), like ``grades.csv``: a score changed by
hand in formgrader is in the next export, and the late penalty is taken off as nbgrader's own
export does (``max(0, score - late_submission_penalty)``).

Formats (all CSV, UTF-8):

* ``csv``: ``student_id``, one column per assignment (points, summed over its notebooks),
  ``total``; a ``late`` column lists late assignments.
* ``canvas``: Canvas's gradebook import layout: ``Student, ID, SIS User ID, SIS Login ID,
  Section``, then one column per assignment, and a ``Points Possible`` row first, as Canvas's
  own gradebook export has it. ``ID``, ``SIS User ID``, ``SIS Login ID``, ``Section`` and the
  name come from the roster.
* ``moodle``: Moodle's "Import grades from CSV" takes any columns and asks which one
  identifies the user: we write ``ID number`` and ``Email address`` (from the roster), then one
  column per assignment; map ``Email address`` (or ``ID number``) to the user and each
  assignment column to its grade item.

The roster (``--roster``) is a CSV with ``student_id`` (the nbgrader id) and any of ``name``,
``lms_id``, ``sis_user_id``, ``sis_login_id``, ``section``, ``email``, ``id_number``. A graded
student missing from the roster is reported (and exported with empty LMS columns), never dropped.

Every text cell a spreadsheet would run as a formula (a leading ``=``, ``+``, ``-``, ``@``, tab
or carriage return) is written with a leading ``'`` (OWASP's CSV-injection guidance), scores as
numbers: see :func:`ste_course.untrusted.cell`.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

from ste_course.untrusted import cell

FORMATS = ("csv", "canvas", "moodle")
ROSTER_COLUMNS = ("name", "lms_id", "sis_user_id", "sis_login_id", "section", "email", "id_number")


def read_grades(graded: Path, db_url: str | None = None) -> tuple:
    """``({student: {assignment: score}}, {assignment: max_score}, {student: [late assignments]})``
    from the gradebook of ``graded`` (or ``db_url``): scores after the late penalty, hand edits
    in formgrader included (:func:`ste_course.record.gradebook.rows`)."""
    scores, maxima, late = defaultdict(dict), defaultdict(float), defaultdict(set)
    per_notebook_max = {}
    for row in gradebook_rows(graded, db_url):
        s, a = row["student_id"], row["assignment"]
        scores[s][a] = scores[s].get(a, 0.0) + row["score"]
        per_notebook_max[(a, row["notebook"])] = row["max_score"]
        if row["late"] == "yes":
            late[s].add(a)
    for (a, _), m in per_notebook_max.items():
        maxima[a] += m
    return dict(scores), dict(maxima), {s: sorted(v) for s, v in late.items()}


def gradebook_rows(graded: Path, db_url: str | None = None) -> list:
    """:func:`ste_course.record.gradebook.rows` of the gradebook ``ste-course grade`` wrote in ``graded``
    (its ``nbgrader_config.py`` names it), or of ``db_url``."""
    from ste_course.record.gradebook import db_url_of, open_gradebook, rows
    from ste_course.record.recorder import gradebook_url

    gb = open_gradebook(gradebook_url(db_url or db_url_of(graded)))
    try:
        return rows(gb)
    finally:
        gb.close()


def read_roster(path: Path | None) -> dict:
    if path is None:
        return {}
    with Path(path).open(encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "student_id" not in reader.fieldnames:
            raise ValueError(f"{path}: the roster needs a student_id column; it has {reader.fieldnames}")
        return {row["student_id"].strip(): row for row in reader if row.get("student_id", "").strip()}


def export(graded: Path, fmt: str, roster: Path | None = None, db_url: str | None = None) -> tuple:
    """Return ``(csv text, warnings)`` from the gradebook (:func:`read_grades`)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}. Received: format={fmt!r}")
    scores, maxima, late = read_grades(graded, db_url)
    people = read_roster(roster)
    assignments = sorted(maxima)
    students = sorted(scores)
    warnings = [f"{s} is graded but not in the roster; exported without LMS ids"
                for s in students if people and s not in people]
    out = io.StringIO()
    w = _CellWriter(csv.writer(out, lineterminator="\n"))

    def fmt_score(s, a):
        return scores[s].get(a, "")

    if fmt == "csv":
        w.writerow(["student_id", *assignments, "total", "late"])
        for s in students:
            w.writerow([s, *[fmt_score(s, a) for a in assignments],
                        sum(scores[s].values()), " ".join(late.get(s, []))])
    elif fmt == "canvas":
        w.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", *assignments])
        w.writerow(["Points Possible", "", "", "", "", *[maxima[a] for a in assignments]])
        for s in students:
            p = people.get(s, {})
            w.writerow([p.get("name") or s, p.get("lms_id", ""), p.get("sis_user_id", ""),
                        p.get("sis_login_id", ""), p.get("section", ""),
                        *[fmt_score(s, a) for a in assignments]])
    else:
        w.writerow(["ID number", "Email address", *assignments])
        for s in students:
            p = people.get(s, {})
            w.writerow([p.get("id_number") or s, p.get("email", ""), *[fmt_score(s, a) for a in assignments]])
    return out.getvalue(), warnings


class _CellWriter:
    """A csv writer whose every cell goes through :func:`ste_course.untrusted.cell`."""

    def __init__(self, writer):
        self.writer = writer

    def writerow(self, row):
        self.writer.writerow([cell(v) for v in row])
