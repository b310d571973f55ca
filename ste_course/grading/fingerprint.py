"""Fingerprints of what a notebook's grade depends on: re-grading is skipped when they match.

Every input of a grade: the submission's bytes, the assignment's source as the run parsed it
(:func:`source_digest`: the snapshot every notebook of the run is graded with, not the file
as it is later), the grading code (:func:`code_fingerprint`), the course's own checks folder and
the files its declarations name outside it (:func:`checks_fingerprint`), the grading secret (a
keyed hash of it), the limits (:func:`limits_fingerprint`), the late rule and the notebook's
``timestamp.txt``. A change to any of them grades the notebook again; one that cannot change a
grade may too (the price of leaving nothing out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ste_course.grading.late import LateError, LatePolicy, read_timestamp


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The code that cannot change a grade: the command line, the classroom (hub, exchange) and the
# record (the gradebook stores grades, pages and exports show them; nothing there computes a
# score or a status). Every other Python file of ste_course and ste_utils is grading code: the
# checks and the library they call, the kernel side, preflight, the judge, how a status is
# concluded and a worker's failure becomes a row, the late rule, the scrubbing of messages.
NOT_GRADING = ("ste_course/cli", "ste_course/classroom", "ste_course/record")
GRADING_PACKAGES = ("ste_course", "ste_utils")


def grading_files(root: Path = Path(__file__).resolve().parents[2]) -> list:
    """The Python files of :data:`GRADING_PACKAGES` outside :data:`NOT_GRADING`, sorted."""
    found = []
    for package in GRADING_PACKAGES:
        for file in sorted((root / package).rglob("*.py")):
            rel = file.relative_to(root).as_posix()
            if "__pycache__" not in rel and not any(rel == n or rel.startswith(n + "/") for n in NOT_GRADING):
                found.append(file)
    return found


def code_fingerprint(root: Path = Path(__file__).resolve().parents[2]) -> str:
    """SHA-256 over the grading code's Python files (:func:`grading_files`: paths and bytes): a
    changed check, spec, judge, status rule, late rule or ``ste_utils`` function changes it."""
    digest = hashlib.sha256()
    for file in grading_files(root):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def limits_fingerprint(limits) -> str:
    """The limits a notebook runs with (:class:`~ste_course.sandbox.Limits`): a raised
    ``--cell-timeout`` grades the timed-out notebooks (and the others) again."""
    return sha256_hex(json.dumps(limits.as_dict(), sort_keys=True).encode())[:16]


def source_digest(source) -> str:
    """SHA-256 of an assignment's notebook as the run parsed it (its cells, metadata and
    problems): what its grades are computed from, read once per run."""
    cells = [dataclasses.asdict(c) for c in source.cells]
    data = {"assignment": source.assignment, "name": source.name, "cells": cells, "metadata": source.metadata,
            "problems": source.problems}
    return sha256_hex(json.dumps(data, sort_keys=True, default=repr).encode("utf-8", "surrogatepass"))


def course_checks(sources: dict) -> Path | None:
    """The checks folder of the course whose ``solutions/`` ``sources`` were loaded from
    (:func:`~ste_course.specs.declarative.checks_folder`: ``checks/`` beside ``solutions/``, or
    the folder ``[course] checks`` of its ``ste_course.toml`` names); None without sources."""
    from ste_course.specs.declarative import checks_folder

    for notebooks in sources.values():
        for nb in notebooks:  # solutions/<assignment>/<notebook>.ipynb
            return checks_folder(Path(nb.path).resolve().parents[2])
    return None


def checks_fingerprint(folder: Path | None) -> str:
    """SHA-256 over a course's checks folder: every file under it (the ``*.toml`` declarations
    and the reference ``.py`` files they name; caches and dot-files left out), relative paths and
    bytes, so a moved course keeps its fingerprint; and the files its declarations name outside
    it (:func:`declared_files`). A folder that does not exist gives ``"none"``."""
    if folder is None or not Path(folder).is_dir():
        return "none"
    folder = Path(folder).resolve()
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder)
        if not file.is_file() or any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            continue
        digest.update(rel.as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    for name, file in declared_files(folder):
        data = file.read_bytes() if file is not None and file.is_file() else b"(none)"
        digest.update(f"ref:{name}".encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def declared_files(folder: Path) -> list:
    """``(reference, file or None)`` for each reference a declaration of ``folder/*.toml`` names
    whose code is outside both the folder and the grading code: ``"../lib/refs.py:f"``, or a
    module ``"course_lib.refs.f"`` (its file found without importing it; None when not found).
    A declaration that cannot be read is left to :func:`~ste_course.specs.declarative.load_folder`
    (the file's bytes are fingerprinted anyway)."""
    import importlib.util
    import tomllib

    folder = Path(folder).resolve()
    packages = [Path(__file__).resolve().parents[2] / p for p in GRADING_PACKAGES]
    found = set()
    for path in sorted(folder.glob("*.toml")):
        try:
            tables = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        for table in tables.values():
            for key in ("reference", "boundary"):
                name = table.get(key) if isinstance(table, dict) else None
                if isinstance(name, str) and name:
                    found.add(name)
    out = []
    for name in sorted(found):
        if ":" in name:
            file = (folder / name.split(":", 1)[0]).resolve()
        else:
            module = name.rpartition(".")[0]
            try:
                spec = importlib.util.find_spec(module) if module else None
            except (ImportError, ValueError):
                spec = None
            file = Path(spec.origin).resolve() if spec is not None and spec.origin not in (None, "built-in", "frozen") \
                else None
        if file is not None and (file.is_relative_to(folder) or any(file.is_relative_to(p) for p in packages)):
            continue  # fingerprinted with the folder or the grading code
        out.append((name, file))
    return out


def secret_fingerprint(secret: str) -> str:
    """A fingerprint of the grading secret (a keyed hash: the secret cannot be found from it)."""
    import hmac

    return hmac.new(secret.encode(), b"ste-course grading secret fingerprint", "sha256").hexdigest()[:16]


def inputs(job: "Job", raw: bytes | None, context: str, late: "LatePolicy | None") -> str:
    """The fingerprint of everything a notebook's grade depends on: the submission's bytes, the
    assignment's source as parsed for this run (:func:`source_digest`), ``context`` (the grading
    code, the course's checks, the secret's and the limits' fingerprints), the late rule for its
    assignment and its ``timestamp.txt``."""
    stamp = "none"
    if late is not None and late.due.get(job.source.assignment) is not None:
        try:
            stamp = str(read_timestamp(job.path.parent))
        except LateError as err:
            stamp = f"unreadable: {err}"
    parts = [sha256_hex(raw) if raw is not None else "-", source_digest(job.source), context,
             late.fingerprint(job.source.assignment) if late is not None else "none", stamp]
    return sha256_hex("\n".join(parts).encode())
