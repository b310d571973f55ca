"""How ste-course writes files and folders, and looks up the system's users: one function per
mechanism, so that each hard case is handled (and tested) once.

* :func:`atomic_write`: a file is written beside its target, flushed to disk (``fsync``), given
  its mode, then renamed over the target: a reader sees the old file or the new one, never half
  of one, and a failure leaves no temporary file behind.
* :func:`replace_tree` / :func:`copy_tree`: a folder is built in a private staging folder beside
  its target, its modes set, then swapped in (the older copy removed after the swap); a failure
  removes the staging folder and leaves the target as it was.
* :func:`user`, :func:`group`, :func:`user_name`: the passwd and group databases, ``None`` for a
  name or id that does not exist.

Modes follow one policy: what ste-course writes is its owner's alone (:data:`PRIVATE`, folders
:data:`PRIVATE_DIR`: grades, results, feedback, submissions, secrets, passwords) unless the caller
states that every user of the machine reads it (:data:`SHARED`, :data:`SHARED_DIR`: the published
assignments, the course's checks, the Jupyter configuration of the hub's users); what is made
without a mode (the gradebook, SQLite's WAL files, backups) gets :func:`private_umask`'s: never
every user's.

Where root writes into a folder a user controls (a student's home, the exchange), it works by
file descriptor (:func:`open_dir`, :func:`ensure_dir_at`, :func:`copy_tree_at`): no link there
is followed, owners and modes are set with ``fchown``/``fchmod``.

Reading a file that a student controls is :func:`ste_course.untrusted.read_own` (by file
descriptor, no link followed at any level, bounded).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import tempfile
from pathlib import Path
from typing import Callable

PRIVATE = 0o600  # the default: a file only its owner reads
PRIVATE_DIR = 0o700
SHARED = 0o644  # stated by the caller: every user reads it
SHARED_DIR = 0o755
PRIVATE_UMASK = 0o027  # what is made without a mode: the owner's and the group's, never every user's
COPY_IGNORE = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc")  # never published or copied


def private_umask() -> int:
    """Add :data:`PRIVATE_UMASK` to this process's umask (a stricter one is kept) and return the
    old one: every file and folder made without an explicit mode (``graded/``, the gradebook and
    SQLite's ``-wal``/``-shm`` files, which take the database's mode, backups, exports) is then
    readable by its owner and group only. Called once per process by ``ste-course``'s ``main``."""
    old = os.umask(PRIVATE_UMASK)
    os.umask(old | PRIVATE_UMASK)
    return old


def atomic_write(path: str | os.PathLike, data: str | bytes, mode: int = PRIVATE, *, owner: int | None = None,
                 parents: bool = False) -> Path:
    """Replace ``path`` with ``data`` (text is written as UTF-8) in one rename.

    The bytes go to a temporary file in the same folder, are flushed to disk (``fsync``) and get
    ``mode`` (and ``owner``'s uid, if given) before the rename; if anything fails the temporary
    file is removed and ``path`` is left as it was. ``parents`` creates missing folders first.
    Returns ``path``.
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            if owner is not None:
                os.fchown(fh.fileno(), owner, -1)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def set_modes(folder: str | os.PathLike, dir_mode: int, file_mode: int) -> None:
    """``dir_mode`` on ``folder`` and every folder under it, ``file_mode`` on every file (links
    are left alone, never followed)."""
    for dirpath, _dirs, files in os.walk(folder, topdown=False, followlinks=False):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, file_mode)
        os.chmod(dirpath, dir_mode)


def replace_tree(target: str | os.PathLike, fill: Callable[[Path], object], dir_mode: int = PRIVATE_DIR,
                 file_mode: int = PRIVATE) -> Path:
    """Build a new ``target`` folder with ``fill(folder)`` and swap it in place of the old one.

    ``fill`` creates ``folder`` (e.g. ``shutil.copytree(source, folder)``) inside a staging
    folder that only this user can enter, beside ``target``; the tree then gets ``dir_mode`` and
    ``file_mode`` (:func:`set_modes`) and is renamed to ``target``. Whatever was at ``target``
    (a folder, a file or a link) is moved aside in the same staging folder first and removed after
    the swap. If ``fill`` or anything after it fails, the staging folder is removed and ``target``
    is left as it was (or put back). Returns ``target``.
    """
    target = Path(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        new = staging / target.name
        fill(new)
        set_modes(new, dir_mode, file_mode)
        if os.path.lexists(target):
            os.replace(target, staging / ".old")
            try:
                os.replace(new, target)
            except BaseException:
                os.replace(staging / ".old", target)
                raise
        else:
            os.replace(new, target)
    finally:
        shutil.rmtree(staging)
    return target


def copy_tree(source: str | os.PathLike, target: str | os.PathLike, dir_mode: int = PRIVATE_DIR,
              file_mode: int = PRIVATE, ignore=None) -> Path:
    """``source`` copied to ``target`` through :func:`replace_tree` (links in ``source`` are copied
    as the files they point to; ``ignore`` as :func:`shutil.copytree`'s)."""
    return replace_tree(target, lambda folder: shutil.copytree(source, folder, ignore=ignore, symlinks=False),
                        dir_mode, file_mode)


def user(name: str) -> pwd.struct_passwd | None:
    """The passwd entry of the user ``name``, or None when there is no such user."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def group(name: str) -> grp.struct_group | None:
    """The group entry of ``name``, or None when there is no such group."""
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def user_name(uid: int) -> str | None:
    """The name of the user ``uid``, or None when no user has that id."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


# ---------------------------------------------------------------- by file descriptor, as root
# Where root writes into folders that users control (a student's home, the exchange that every
# user may write), nothing is done by path: each folder is opened with O_NOFOLLOW relative to its
# parent's descriptor, and owners and modes are set through the descriptor (fchown, fchmod), so
# a link put (or swapped) in place is refused, never followed.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir(name: str | os.PathLike, dir_fd: int | None = None) -> int:
    """A descriptor of the folder ``name`` (relative to ``dir_fd`` when given), refusing a link
    in its last component (``OSError`` ``ELOOP``) and anything that is not a folder (``ENOTDIR``)."""
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def ensure_dir_at(parent_fd: int, name: str, mode: int, uid: int = -1, gid: int = -1,
                  owners: tuple | None = None) -> int:
    """The folder ``name`` inside the open folder ``parent_fd``, made if missing, opened without
    following a link, given ``uid``/``gid`` and ``mode`` through its descriptor; returns the
    descriptor (the caller closes it). ``owners``: the uids an existing folder may belong to
    (else ``PermissionError`` naming its owner): a folder a user made in a place they may write
    is theirs, not root's to adopt."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass
    fd = open_dir(name, parent_fd)
    try:
        owner = os.fstat(fd).st_uid
        if owners is not None and owner not in owners:
            raise PermissionError(f"{name} belongs to uid {owner}, not to {sorted(owners)}: remove it")
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        return fd
    except BaseException:
        os.close(fd)
        raise


def copy_tree_at(source: str | os.PathLike, parent_fd: int, name: str, uid: int, gid: int,
                 dir_mode: int = SHARED_DIR, file_mode: int = SHARED, ignore=COPY_IGNORE) -> None:
    """Copy the trusted folder ``source`` to a new folder ``name`` inside the open folder
    ``parent_fd`` (e.g. a student's home), owned by ``uid``:``gid``, by descriptor only: each
    folder is made with ``mkdir`` relative to its parent's descriptor and opened with
    ``O_NOFOLLOW``, each file is created ``O_CREAT | O_EXCL | O_NOFOLLOW``, and every owner and
    mode is set with ``fchown``/``fchmod`` on a descriptor this function opened. The owner of
    ``parent_fd`` may rename, remove or swap anything in it meanwhile: a link in the way is an
    error (``OSError``), never followed, and nothing outside the new folder changes.

    Raises:
        FileExistsError: ``name`` already exists in ``parent_fd``.
        OSError: a folder or file was replaced by a link or removed during the copy.
    """
    source = Path(source)
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    fd = open_dir(name, parent_fd)
    try:
        skipped = ignore(str(source), os.listdir(source)) if ignore else set()
        for entry in sorted(os.scandir(source), key=lambda e: e.name):
            if entry.name in skipped:
                continue
            if entry.is_dir():
                copy_tree_at(entry.path, fd, entry.name, uid, gid, dir_mode, file_mode, ignore)
                continue
            out = os.open(entry.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=fd)
            try:
                with open(entry.path, "rb") as src, os.fdopen(os.dup(out), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.fchown(out, uid, gid)
                os.fchmod(out, file_mode)
            finally:
                os.close(out)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, dir_mode)
    finally:
        os.close(fd)
