"""Text and files from submissions and the sandbox, handled as data: decoded without raising,
size-checked before they are read, links never followed, and escaped for where they are shown.

One function per destination, used everywhere:

* :func:`clean` for anything stored (JSON, HTML, the gradebook): lone surrogates (from the
  sandbox's JSON or a notebook's ``"\\ud800"``) become U+FFFD, so writing UTF-8 never raises;
* :func:`shown` for a terminal or an identifier: control, format and separator characters,
  surrogates and backslashes become Python-style escapes, so nothing reaches a terminal raw
  (:func:`escaped_id`: the id of a folder whose name is not a :func:`valid_id`);
* :func:`cell` for a spreadsheet (CSV): text a spreadsheet would run as a formula gets a
  leading ``'`` (OWASP's CSV-injection guidance), numbers stay numbers;

and :func:`open_own` / :func:`read_own` (one file) and :func:`read_own_tree` /
:func:`walk_own_tree` (a folder's files, with its owner and latest change time)
to read what a student controls through their own folders only: opened one component at a time
by file descriptor, ``O_NOFOLLOW`` at every level, sizes bounded before anything is read.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

# Unicode categories never shown raw: controls (C0, C1, DEL), format characters (bidi
# overrides, zero-width), surrogates, private use, unassigned, line and paragraph separators.
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")  # OWASP's list, plus the escape itself
MAX_DEPTH = 64  # lists and dicts nested deeper than this in untrusted data are not kept (clean)
MAX_ID_CHARS, MAX_ID_BYTES = 100, 200  # an escaped id: a file name (255 bytes at most) with room


def clean(value, _depth: int = 0):
    """``value`` with every lone surrogate in its strings (and dict keys) replaced by U+FFFD, and
    every list or dict nested deeper than :data:`MAX_DEPTH` replaced by the text
    ``"[nested too deeply]"`` (JSON from the sandbox may nest thousands of levels deep; nothing
    the harness or nbformat writes comes near), so neither this nor pickling the result raises."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, (dict, list, tuple)) and _depth >= MAX_DEPTH:
        return "[nested too deeply]"
    if isinstance(value, dict):
        return {clean(k, _depth + 1): clean(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clean(v, _depth + 1) for v in value)
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
    CSV-injection guidance says."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:g}"
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def valid_id(name: str) -> bool:
    """A student id (a folder name) that is safe text: decodable, no control, format or separator
    character, no path separator, not hidden, at most 100 characters. Any script and spaces are
    fine (``ünïcödé``, ``with space``)."""
    return (0 < len(name) <= 100 and not name.startswith(".") and name.strip() == name
            and "/" not in name and "\\" not in name
            and not any(unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in name))


def escaped_id(name) -> str:
    """The id a folder whose name is not a :func:`valid_id` is graded under: its :func:`shown`
    rendering, which never equals a valid id (it holds a ``\\``) nor another name's; when the
    rendering is longer than :data:`MAX_ID_CHARS` characters or :data:`MAX_ID_BYTES` bytes, its
    start, ``...`` and 12 hex digits of the name's SHA-256, so two long names stay two ids and
    every id fits in a file name (the feedback folder)."""
    text = shown(name)
    if len(text) <= MAX_ID_CHARS and len(text.encode()) <= MAX_ID_BYTES:
        return text
    head = text[:MAX_ID_CHARS - 20]
    while len(head.encode()) > MAX_ID_BYTES - 20:
        head = head[:-1]
    raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogatepass")
    return f"{head}...{hashlib.sha256(raw).hexdigest()[:12]}"


class NotOwnFile(OSError):
    """A path that is not a plain file or folder of the student's own: ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def open_own(root: Path, parts: tuple, folder: bool = False) -> int:
    """A read-only file descriptor of ``root/parts[0]/.../parts[-1]``, opened one component at a
    time without following any link (``O_NOFOLLOW``) and without blocking (``O_NONBLOCK``: a FIFO
    or a device is refused, never waited on); the last part must be a regular file (a folder with
    ``folder``; no parts: ``root`` itself, which the caller trusts).

    Raises:
        FileNotFoundError: a component does not exist.
        NotOwnFile: a component is a link, or not a folder / regular file.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1 and not folder
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


def _read_fd(fd: int, limit: int, what: str) -> bytes:
    """At most ``limit`` bytes of the open regular file ``fd``, refused (``NotOwnFile``) before
    reading when ``fstat`` says it is larger, or when it grows past ``limit`` while being read."""
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


def read_own(root: Path, parts: tuple, limit: int, what: str = "the file") -> bytes:
    """The bytes of ``root/parts...`` (see :func:`open_own`), refused before reading when its
    size (``fstat``) exceeds ``limit``; never more than ``limit`` bytes are read.

    Raises:
        FileNotFoundError, NotOwnFile: as :func:`open_own`; NotOwnFile also when too large.
    """
    fd = open_own(root, parts)
    try:
        return _read_fd(fd, limit, what)
    finally:
        os.close(fd)


# What ``ste-course collect`` writes beside a collected submission's files: one line per file
# :func:`walk_own_tree` left out, ``<shown path>\t<why>``; a dot name, so never a student's.
LEFT_OUT = ".left_out.txt"
MAX_TREE_PATH_BYTES = 1024  # a path inside a walked folder, in bytes (PATH_MAX is 4096)
MAX_TREE_FOLDERS = 8  # folders a walked file may lie in, below the walked folder
MAX_LEFT_OUT = 50  # rows of what a walk left out; the rest is counted in one row


@dataclass
class OwnTree:
    """What :func:`walk_own_tree` read: ``files`` (relative path -> bytes), ``owner`` (the uid
    of the folder, from ``fstat`` of the descriptor the files were read through) and ``changed``
    (the latest ``st_ctime_ns`` of the folder, its subfolders and the files kept: the kernel's
    clock, which no user can set back; a file rewritten or a folder renamed moves it forward)."""

    files: dict
    owner: int
    changed: int
    left_out: list = field(default_factory=list)  # (relative path, why) of what is not part of it


def read_own_tree(root: Path, parts: tuple, file_limit: int, total_limit: int, max_files: int) -> dict:
    """relative path -> bytes of the regular files under ``root/parts...``: :func:`walk_own_tree`'s
    ``files``."""
    return walk_own_tree(root, parts, file_limit, total_limit, max_files).files


def walk_own_tree(root: Path, parts: tuple, file_limit: int, total_limit: int, max_files: int) -> OwnTree:
    """The regular files under the folder ``root/parts...`` (opened as :func:`open_own` opens it),
    walked by file descriptor: every folder and file is opened with ``O_NOFOLLOW`` relative to
    its parent's descriptor, so no link is followed at any level, even one swapped in during the
    walk. Links, names starting with ``.``, FIFOs, devices, files larger than ``file_limit``, files
    not owned by the folder's owner (a hard link to another user's file), paths longer than
    :data:`MAX_TREE_PATH_BYTES` bytes or deeper than :data:`MAX_TREE_FOLDERS` folders (a path
    past ``PATH_MAX`` could not be written back), and what lies beyond the first ``max_files``
    files and folders together are left out (each but the dot names in ``left_out``, with why, so
    collect can say it). The owner and change times come from the
    descriptors read (:class:`OwnTree`), never from a second look by path.

    Raises:
        FileNotFoundError, NotOwnFile: the folder itself cannot be opened as the student's own;
            NotOwnFile also when the files kept add up to more than ``total_limit`` bytes.
    """
    files, total, left_out, folders = {}, 0, _LeftOut(), 0
    entries_left = 4 * max_files  # entries read in all, dot names included: a folder of millions
    top = open_own(root, parts, folder=True)
    info = os.fstat(top)
    owner, changed = info.st_uid, info.st_ctime_ns
    pending = [("", top)]
    try:
        while pending:
            prefix, fd = pending.pop()
            try:
                changed = max(changed, os.fstat(fd).st_ctime_ns)
                with os.scandir(fd) as listing:  # read at most what is left of the budget, then sort
                    entries = [entry for entry, _ in zip(listing, range(entries_left + 1))]
                if len(entries) > entries_left:
                    left_out.append((prefix or ".", f"more than {4 * max_files} entries: the rest was not read"))
                    entries = entries[:entries_left]
                entries_left -= len(entries)
                for entry in sorted(entries, key=lambda e: e.name):
                    if entry.name.startswith("."):
                        continue
                    rel = prefix + entry.name
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                        if len(os.fsencode(rel)) > MAX_TREE_PATH_BYTES:
                            left_out.append((rel, f"a path longer than {MAX_TREE_PATH_BYTES} bytes"))
                            continue
                        if rel.count("/") + is_dir > MAX_TREE_FOLDERS:
                            left_out.append((rel, f"deeper than {MAX_TREE_FOLDERS} folders"))
                            continue
                        if len(files) + folders >= max_files:
                            left_out.append((rel, f"beyond the first {max_files} files and folders"))
                            continue
                        if is_dir:
                            pending.append((rel + "/", os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                                               | os.O_CLOEXEC, dir_fd=fd)))
                            folders += 1
                            continue
                        if not entry.is_file(follow_symlinks=False):
                            left_out.append((rel, _kind_of(entry.stat(follow_symlinks=False).st_mode)))
                            continue
                        child = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                        dir_fd=fd)
                    except OSError as err:  # became a link, vanished or unreadable: not part of it
                        left_out.append((rel, f"unreadable ({err.strerror or type(err).__name__})"))
                        continue
                    try:
                        info = os.fstat(child)
                        if not stat.S_ISREG(info.st_mode):
                            left_out.append((rel, _kind_of(info.st_mode)))
                            continue
                        if info.st_uid != owner:  # a hard link to a file the student could not read
                            left_out.append((rel, "not the student's own file"))
                            continue
                        data = _read_fd(child, file_limit, rel)
                        changed = max(changed, os.fstat(child).st_ctime_ns)
                    except NotOwnFile:
                        left_out.append((rel, f"larger than {_size(file_limit)}"))
                        continue
                    finally:
                        os.close(child)
                    total += len(data)
                    if total > total_limit:
                        raise NotOwnFile(f"larger than {_size(total_limit)}")
                    files[rel] = data
            finally:
                os.close(fd)
    finally:
        for _, fd in pending:
            os.close(fd)
    return OwnTree(files, owner, changed, left_out.rows())


class _LeftOut(list):
    """What a walk left out: the first :data:`MAX_LEFT_OUT` rows, then one row that counts the
    rest (a folder of a million links to one empty file must not make a million rows)."""

    more = 0

    def append(self, row):
        if len(self) < MAX_LEFT_OUT:
            super().append(row)
        else:
            self.more += 1

    def rows(self) -> list:
        return list(self) + ([("...", f"and {self.more} more left out")] if self.more else [])


def _kind_of(mode: int) -> str:
    """What a file that is not a regular file is, for a person: ``a FIFO``, ``a link``..."""
    for test, name in ((stat.S_ISLNK, "a link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n} bytes" if n < 2**20 else f"{n / 2**20:.1f} MB"
