"""Fingerprints of what a notebook's grade depends on: re-grading is skipped when they match.

The submission's bytes, the assignment's source, the checking code (:data:`CHECKING_CODE`), the
course's own checks folder, the grading secret (a keyed hash of it), the late rule and the
notebook's ``timestamp.txt``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ste_course.grading.late import LateError, LatePolicy, read_timestamp


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# What decides a grade besides the submission, the assignment's source and the secret: the
# checks (specs, the kernel side, the judge) and the library they call; a course's own checks
# folder is fingerprinted beside them (:func:`checks_fingerprint`).
CHECKING_CODE = ("ste_course/specs", "ste_course/inside", "ste_course/grading/judge.py", "ste_course/checks.py",
                 "ste_course/evidence.py", "ste_course/grading/preflight.py", "ste_course/authoring/source.py", "ste_utils")


def code_fingerprint(root: Path = Path(__file__).resolve().parents[2]) -> str:
    """SHA-256 over the checking code's Python files (paths and bytes): a changed check, spec
    or ``ste_utils`` function changes it."""
    digest = hashlib.sha256()
    for entry in CHECKING_CODE:
        path = root / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


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
    bytes, so a moved course keeps its fingerprint. A folder that does not exist gives ``"none"``."""
    if folder is None or not Path(folder).is_dir():
        return "none"
    folder = Path(folder)
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder)
        if not file.is_file() or any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            continue
        digest.update(rel.as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def secret_fingerprint(secret: str) -> str:
    """A fingerprint of the grading secret (a keyed hash: the secret cannot be found from it)."""
    import hmac

    return hmac.new(secret.encode(), b"ste-course grading secret fingerprint", "sha256").hexdigest()[:16]


def inputs(job: "Job", raw: bytes | None, context: str, late: "LatePolicy | None") -> str:
    """The fingerprint of everything a notebook's grade depends on: the submission's bytes, the
    assignment's source, ``context`` (the checking code, the course's checks folder and the
    secret's fingerprint), the late rule for its assignment and its ``timestamp.txt``."""
    stamp = "none"
    if late is not None and late.due.get(job.source.assignment) is not None:
        try:
            stamp = str(read_timestamp(job.path.parent))
        except LateError as err:
            stamp = f"unreadable: {err}"
    parts = [sha256_hex(raw) if raw is not None else "-", sha256_hex(job.source.path.read_bytes()), context,
             late.fingerprint(job.source.assignment) if late is not None else "none", stamp]
    return sha256_hex("\n".join(parts).encode())
