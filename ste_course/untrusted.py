"""Text and files from submissions and the sandbox, handled as data: decoded without raising,
size-checked before they are read, links never followed, and escaped for where they are shown.

One function per destination, used everywhere:

* :func:`clean` for anything stored (JSON, HTML, the gradebook): lone surrogates (from the
  sandbox's JSON or a notebook's ``"\\ud800"``) become U+FFFD, so writing UTF-8 never raises;
* :func:`shown` for a terminal or an identifier: control, format and separator characters,
  surrogates and backslashes become Python-style escapes, so nothing reaches a terminal raw;
* :func:`cell` for a spreadsheet (CSV): text a spreadsheet would run as a formula gets a
  leading ``'`` (OWASP's CSV-injection guidance), numbers stay numbers;

and :func:`open_own` / :func:`read_own` to read a student's file through their own folders
only.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from pathlib import Path

# Unicode categories never shown raw: controls (C0, C1, DEL), format characters (bidi
# overrides, zero-width), surrogates, private use, unassigned, line and paragraph separators.
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")  # OWASP's list, plus the escape itself


def clean(value):
    """``value`` with every lone surrogate in its strings (and dict keys) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clean(v) for v in value)
    return value


def _escape(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shown(text, limit: int | None = None) -> str:
    """``text`` safe for a terminal: unsafe characters and ``\\`` as escapes (``\\x1b``,
    ``\\xff`` for a byte that was not UTF-8, ``\\u202e``), so two names never show the same;
    cut to ``limit`` characters (with ``...``) when given."""
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return "".join("\\\\" if ch == "\\" else _escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES
                   else ch for ch in text)


def cell(value):
    """A CSV cell a spreadsheet shows as text: numbers are kept (as numbers); text starting with
    ``=``, ``+``, ``-``, ``@``, tab, carriage return (or ``'``) gets a leading ``'``, as OWASP's
    CSV-injection guidance says. :func:`uncell` undoes it."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:g}"
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def uncell(text: str) -> str:
    """The text :func:`cell` neutralised (one leading ``'`` removed)."""
    return text[1:] if text.startswith("'") else text


def valid_id(name: str) -> bool:
    """A student id (a folder name) that is safe text: decodable, no control, format or separator
    character, no path separator, not hidden, at most 100 characters. Any script and spaces are
    fine (``ünïcödé``, ``with space``)."""
    return (0 < len(name) <= 100 and not name.startswith(".") and name.strip() == name
            and "/" not in name and "\\" not in name
            and not any(unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in name))


class NotOwnFile(OSError):
    """A path that is not a plain file or folder of the student's own: ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def open_own(root: Path, parts: tuple) -> int:
    """A read-only file descriptor of ``root/parts[0]/.../parts[-1]``, opened one component at a
    time without following any link (``O_NOFOLLOW``) and without blocking (``O_NONBLOCK``: a FIFO
    or a device is refused, never waited on); the last part must be a regular file.

    Raises:
        FileNotFoundError: a component does not exist.
        NotOwnFile: a component is a link, or not a folder / regular file.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            _check_kind(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode, part, last)
            child = os.open(part, flags | (0 if last else os.O_DIRECTORY), dir_fd=fd)
            os.close(fd)
            fd = child
            _check_kind(os.fstat(fd).st_mode, part, last)  # the same thing was opened
        return fd
    except BaseException:
        os.close(fd)
        raise


def _check_kind(mode: int, part: str, last: bool) -> None:
    if stat.S_ISLNK(mode):
        raise NotOwnFile(f"{shown(part, 60)} is a link")
    if last and not stat.S_ISREG(mode):
        raise NotOwnFile(f"{shown(part, 60)} is not a regular file")
    if not last and not stat.S_ISDIR(mode):
        raise NotOwnFile(f"{shown(part, 60)} is not a folder")


def read_own(root: Path, parts: tuple, limit: int, what: str = "the file") -> bytes:
    """The bytes of ``root/parts...`` (see :func:`open_own`), refused before reading when its
    size (``fstat``) exceeds ``limit``; never more than ``limit`` bytes are read.

    Raises:
        FileNotFoundError, NotOwnFile: as :func:`open_own`; NotOwnFile also when too large.
    """
    fd = open_own(root, parts)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise NotOwnFile(f"{what} is {_size(size)}; the limit is {_size(limit)}")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 2**20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise NotOwnFile(f"{what} grew past the limit of {_size(limit)} while being read")
        return data
    finally:
        os.close(fd)


def _size(n: int) -> str:
    return f"{n} bytes" if n < 2**20 else f"{n / 2**20:.1f} MB"
