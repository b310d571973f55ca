"""Hand grading on the hub: the instructor's formgrader opens the class's real gradebook.

nbgrader's formgrader (a server extension of the instructor's JupyterLab on the hub) shows the
course whose root is ``CourseDirectory.root`` and whose gradebook is ``CourseDirectory.db_url``,
and only when that root lies inside the server's own root (the instructor's home). ``ste-course
hub --graded DIR`` (default ``/srv/ste-course/graded``) therefore makes:

- ``DIR``, the course folder the instructor grades into from a terminal of their server
  (``ste-course grade submitted --out ~/graded``, the unprivileged sandbox), owned by the
  instructor and the graders' group, 2770: no student reads it;
- ``~INSTRUCTOR/graded``, a link to ``DIR`` (made only when nothing is at that name), so the
  course root lies inside the server's root;
- the instructor's ``nbgrader_config.py`` (``STATE/config/instructor``, read only by the
  instructor's server) naming ``~/graded`` as the course root and ``DIR/gradebook.db`` as the
  gradebook: the one ``grade`` writes there, where formgrader's hand grades and comments go, and
  what ``return-feedback`` and ``export`` read.

Nothing runs as root in the instructor's server, and no terminal of root is handed out.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ste_course.files import COPY_IGNORE, SHARED, atomic_write, copy_tree, open_dir

GRADED_MODE = 0o2770  # the instructor and the graders' group; setgid keeps the group on what grade writes
COPY_DIR_MODE, COPY_FILE_MODE = 0o2750, 0o640  # the course copy: root writes, the graders read
COURSE_COPY = ("solutions", "ste_course.toml", "nbgrader_config.py")  # what grading reads of the root (and checks)
LINK_NAME = "graded"


def instructor_config(graded: Path, course_id: str) -> str:
    """The instructor's ``nbgrader_config.py``: formgrader on ``~/graded`` and the gradebook of
    ``graded`` (the folder the link points to)."""
    db = Path(graded) / "gradebook.db"
    return ("# Written by `ste-course hub` (ste_course/classroom/formgrading.py): the instructor's formgrader\n"
            "# on the class's gradebook, the one `ste-course grade --out ~/graded` writes.\n"
            "import os\n"
            "c = get_config()  # noqa: F821\n"
            f"c.CourseDirectory.course_id = {course_id!r}\n"
            f"c.CourseDirectory.root = os.path.expanduser('~/{LINK_NAME}')\n"
            f"c.CourseDirectory.db_url = {'sqlite:///' + str(db)!r}\n")


def prepare_graded(graded: Path, config_dir: Path, course_id: str, home: Path, uid: int, gid: int) -> list:
    """Make ``graded`` (the instructor ``uid``'s, group ``gid``, :data:`GRADED_MODE`), the link
    ``home/graded`` to it and the instructor's ``config_dir/nbgrader_config.py``; returns the
    problems, one line each (the hub still starts; formgrader then shows no course).

    ``graded`` must not be a link; an existing folder keeps its files (a term's grades) and
    gets its owner, group and mode again. In ``home`` (the instructor's to write) nothing is
    followed: the link is made relative to the home's descriptor, only if the name is free."""
    graded = Path(os.path.abspath(graded))
    problems = []
    try:
        graded.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(graded, 0o700)
        except FileExistsError:
            pass
        fd = open_dir(graded)  # refuses a link
    except OSError as err:
        return [f"{graded}: {err.strerror or err} (a link or not a folder?); formgrader is not set up"]
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, GRADED_MODE)
        try:
            db = os.stat("gradebook.db", dir_fd=fd, follow_symlinks=False)
            if db.st_uid != uid:
                problems.append(f"{graded}/gradebook.db belongs to uid {db.st_uid}, not the instructor: formgrader "
                                f"cannot save hand grades (chown -R the folder, or grade into it as the instructor)")
        except FileNotFoundError:
            pass
    finally:
        os.close(fd)
    home_fd = open_dir(Path(home))
    try:
        try:
            there = os.stat(LINK_NAME, dir_fd=home_fd, follow_symlinks=False)
        except FileNotFoundError:
            there = None
        if there is None:
            os.symlink(str(graded), LINK_NAME, dir_fd=home_fd)
            os.chown(LINK_NAME, uid, gid, dir_fd=home_fd, follow_symlinks=False)
        elif not (stat.S_ISLNK(there.st_mode) and os.readlink(LINK_NAME, dir_fd=home_fd) == str(graded)):
            problems.append(f"{home}/{LINK_NAME} exists and is not a link to {graded}; left as it is "
                            f"(formgrader's course root is ~/{LINK_NAME}: move it away and run ste-course hub again)")
    finally:
        os.close(home_fd)
    atomic_write(Path(config_dir) / "nbgrader_config.py", instructor_config(graded, course_id), SHARED, parents=True)
    return problems


def install_course_copy(repo: Path, target: Path, gid: int) -> Path:
    """What grading reads of the course root ``repo`` (``solutions/``, the checks folder,
    ``ste_course.toml``, ``nbgrader_config.py``) copied to ``target``, root's and the graders'
    group's (folders 2750, files 0640: no student enters it), replacing an older copy: the course
    root the instructor grades from without root (``cd TARGET && ste-course grade ...``), while
    the checkout stays root's alone."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = open_dir(target)
    try:
        os.fchown(fd, 0, gid)
        os.fchmod(fd, COPY_DIR_MODE)
    finally:
        os.close(fd)
    from ste_course.specs.declarative import checks_folder

    checks = checks_folder(repo)
    names = list(COURSE_COPY)
    if checks.is_dir() and checks.resolve().is_relative_to(Path(repo).resolve()):  # [course] checks = "..."
        names.append(str(checks.resolve().relative_to(Path(repo).resolve())))
    for name in dict.fromkeys(names):
        source = Path(repo) / name
        if source.is_dir():
            copy_tree(source, target / name, COPY_DIR_MODE, COPY_FILE_MODE, ignore=COPY_IGNORE)
        elif source.is_file():
            atomic_write(target / name, source.read_bytes(), COPY_FILE_MODE)
    for dirpath, dirs, files in os.walk(target, followlinks=False):
        for name in dirs + files:
            os.chown(os.path.join(dirpath, name), 0, gid, follow_symlinks=False)
    return target


def for_instructor(settings, graded: Path, repo: Path) -> list:
    """:func:`prepare_graded` for the hub of ``settings`` (:class:`~ste_course.classroom.hub.Settings`):
    its instructor, graders' group, course id and instructor's configuration folder; and the
    course copy they grade from, ``STATE/course`` (:func:`install_course_copy`)."""
    from ste_course.files import group, user

    account, graders = user(settings.instructor), group(settings.graders_group)
    if account is None or graders is None:
        return [f"no user {settings.instructor!r} or group {settings.graders_group!r}; formgrader is not set up"]
    install_course_copy(repo, Path(settings.state) / "course", graders.gr_gid)
    return prepare_graded(graded, Path(settings.instructor_config), settings.course_id, Path(account.pw_dir),
                          account.pw_uid, graders.gr_gid)
