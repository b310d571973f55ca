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

from ste_course.files import SHARED, atomic_write, open_dir

GRADED_MODE = 0o2770  # the instructor and the graders' group; setgid keeps the group on what grade writes
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


def for_instructor(settings, graded: Path) -> list:
    """:func:`prepare_graded` for the hub of ``settings`` (:class:`~ste_course.classroom.hub.Settings`):
    its instructor, graders' group, course id and instructor's configuration folder."""
    from ste_course.files import group, user

    account, graders = user(settings.instructor), group(settings.graders_group)
    if account is None or graders is None:
        return [f"no user {settings.instructor!r} or group {settings.graders_group!r}; formgrader is not set up"]
    return prepare_graded(graded, Path(settings.instructor_config), settings.course_id, Path(account.pw_dir),
                          account.pw_uid, graders.gr_gid)
