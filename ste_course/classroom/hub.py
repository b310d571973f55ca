"""``ste-course hub``: the course on a JupyterHub on this machine, for a roster of students.

One command (as root) sets up and starts the hub:

- a system user per student of the roster and one for the instructor (``useradd -m``, home
  0700), each with a generated password written to ``STATE/passwords.csv`` (0600) for the
  instructor to hand out; an existing user keeps their account and password (PAM checks it);
- in each home, ``course/`` (the chapters, copied once, never overwritten) and an empty
  ``exercises/``, where the Assignment List fetches assignments (the chapters link to
  ``../exercises/<assignment>/``); written by file descriptor (:func:`ste_course.files.copy_tree_at`):
  a home is its student's, so a link they put there is refused, never followed, and a home
  that cannot be furnished is reported for that student alone;
- nothing of the checkout a student could read: ``solutions/``, ``.git`` and the course's checks
  are tried as each student (and as ``nobody``), and the hub refuses to start, saying what to
  run, while one of them can be read or entered (:func:`course_tree_problems`);
- the course's own checks folder, if it has one, in ``STATE/checks`` (:func:`install_checks`),
  named to every user's server in ``STE_COURSE_CHECKS``;
- nbgrader's exchange (:mod:`ste_course.classroom.exchange`) owned by root and a graders' group holding
  the instructor, and the configuration every user's server reads
  (``STATE/config/student/nbgrader_config.py``; the instructor's also turns formgrader on);
- then JupyterHub from the shared course venv (``/opt/ste-course/venv``, built by
  ``make hub-deps``) with ``configurable-http-proxy`` from npm, PAM authentication for exactly
  these users, and each user's server a JupyterLab running as that user, listening on
  127.0.0.1 unless ``--ip`` says otherwise. The hub runs in the foreground; Ctrl-C stops it and
  the servers it started.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ste_course.classroom import exchange
from ste_course.files import (COPY_IGNORE, PRIVATE, SHARED, SHARED_DIR, atomic_write, copy_tree, copy_tree_at, group,
                              open_dir, set_modes, user)

USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # useradd's portable names, no '+'
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_VENV = Path("/opt/ste-course/venv")
DEFAULT_PROXY = Path("/opt/ste-course/proxy/node_modules/.bin/configurable-http-proxy")
DEFAULT_STATIC = Path("/opt/ste-course/static")  # MathJax 2 for formgrader (hub/vendor-mathjax2.sh, make hub-deps)
NOBODY = 65534  # the uid and gid of a user with no rights at all


class HubError(Exception):
    """A problem with the hub's set-up or arguments, said in one line."""


@dataclass
class Settings:
    """Everything the hub's configuration file (hub/jupyterhub_config.py) reads."""

    students: list[str]
    instructor: str
    course_id: str
    graders_group: str
    exchange: str
    state: str
    venv: str
    proxy: str
    ip: str
    port: int
    hub_port: int
    proxy_api_port: int
    student_config: str
    instructor_config: str
    instructor_data: str = ""  # JUPYTER_PATH of the instructor's server: formgrader's MathJax template
    checks: str = ""  # the course's checks folder as the users' kernels read it (STE_COURSE_CHECKS); "": none
    problems: list = field(default_factory=list)  # homes that could not be furnished, one line per student


def read_roster(path: Path) -> list[str]:
    """The ``student_id`` column of a CSV roster (the same file ``ste-course export`` reads)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise HubError(f"cannot read the roster {path}: {err}")
    rows = csv.DictReader(text.splitlines())
    if "student_id" not in (rows.fieldnames or []):
        raise HubError(f"{path}: the roster needs a student_id column. Received columns: {rows.fieldnames}")
    students = []
    for number, row in enumerate(rows, 2):
        name = (row.get("student_id") or "").strip()
        if not USER_NAME.match(name):
            raise HubError(f"{path}:{number}: student_id must be a system user name (lowercase letters, "
                           f"digits, _ or -, at most 32). Received: {name!r}")
        if name in students:
            raise HubError(f"{path}:{number}: student_id {name!r} is listed twice")
        students.append(name)
    if not students:
        raise HubError(f"{path}: the roster lists no student")
    return students


def _run(*command: str, stdin: str | None = None) -> None:
    out = subprocess.run(command, input=stdin, capture_output=True, text=True,
                         env={"PATH": SAFE_PATH, "LC_ALL": "C"})
    if out.returncode != 0:
        raise HubError(f"{command[0]} failed ({out.returncode}): {out.stderr.strip()[:300]}")


def _passwords(state: Path) -> dict[str, str]:
    book = state / "passwords.csv"
    if not book.exists():
        return {}
    return {row["user"]: row["password"] for row in csv.DictReader(book.open(encoding="utf-8"))}


def ensure_users(names: list[str], state: Path) -> dict[str, str]:
    """Create the missing system users (home 0700) with a generated password; return the
    passwords of the users this hub created (old and new), as written to passwords.csv."""
    book = _passwords(state)
    for name in names:
        if user(name) is None:
            _run("useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name)
            book[name] = secrets.token_urlsafe(12)
            _run("chpasswd", stdin=f"{name}:{book[name]}\n")
        os.chmod(user(name).pw_dir, 0o700)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["user", "password"])
    writer.writerows(sorted(book.items()))
    atomic_write(state / "passwords.csv", text.getvalue(), PRIVATE)
    return book


def furnish_home(name: str, course: Path) -> list[str]:
    """``~/course`` (the chapters, copied once) and ``~/exercises`` (fetched assignments) in the
    home of the user ``name``, by file descriptor: the home is opened without following
    a link, and what is made in it is made, given to the student and given its mode through
    descriptors (:func:`ste_course.files.copy_tree_at`). Anything already at either name (a
    folder, a file, a link, dangling or not) is left as it is. Returns the problems, each naming
    the student (set-up goes on for the others)."""
    account = user(name)
    if account is None:
        return [f"{name}: no such system user (ste-course hub creates the roster's users first)"]
    home = Path(account.pw_dir)
    problems = []
    try:
        fd = open_dir(home)
    except OSError as err:
        return [f"{account.pw_name}: the home {home} cannot be opened as a folder ({err.strerror}); not furnished"]
    try:
        for name, source in (("course", course), ("exercises", None)):
            try:
                there = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                there = None
            if there is not None:  # already there: the student's, left alone
                if not stat.S_ISDIR(there.st_mode):
                    kind = "a link" if stat.S_ISLNK(there.st_mode) else "not a folder"
                    problems.append(f"{account.pw_name}: ~/{name} is {kind}; left as it is (remove it and run "
                                    f"`ste-course hub` again to have it made)")
                continue
            try:
                if source is None:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    sub = open_dir(name, fd)
                    try:
                        os.fchown(sub, account.pw_uid, account.pw_gid)
                        os.fchmod(sub, SHARED_DIR)
                    finally:
                        os.close(sub)
                else:
                    copy_tree_at(source, fd, name, account.pw_uid, account.pw_gid)
            except OSError as err:
                why = "a link was put in its way" if err.errno == errno.ELOOP else err.strerror or str(err)
                problems.append(f"{account.pw_name}: ~/{name} not made ({why}); the other students are set up")
    finally:
        os.close(fd)
    return problems


def course_tree_problems(repo: Path, users: list[tuple[int, int, list[int]]]) -> list[str]:
    """What of the checkout a student could read: ``solutions/``, ``.git`` (its history holds the
    solutions too) and the course's checks folder, each tried as every ``(uid, gid, groups)`` of
    ``users`` in a child process that has become that user (permissions, groups and ACLs as the
    kernel applies them). A folder counts when it can be listed or entered (``x`` alone lets a
    student open names they know, e.g. ``.git/HEAD`` and the objects it leads to). Returns one
    line per path a student could reach, with the command that fixes it."""
    from ste_course.specs.declarative import checks_folder

    repo = Path(repo).resolve()
    paths = [p for p in (repo / "solutions", repo / ".git", checks_folder(repo)) if os.path.lexists(p)]
    reached = set()
    for uid, gid, groups in users:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: become the user, try, report, exit
            try:
                os.close(read)
                os.setgroups(groups)
                os.setgid(gid)
                os.setuid(uid)
                found = [str(p) for p in paths if os.access(p, os.R_OK) or os.access(p, os.X_OK)]
                os.write(write, json.dumps(found).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as fh:
            answer = fh.read()
        os.waitpid(pid, 0)
        reached.update(json.loads(answer or b'["(the check could not run)"]'))
    return [f"{path} can be read by a student: run `chmod -R go-rwx {path}` (or `chmod 700 {repo}`)"
            for path in sorted(reached)]


def _student_ids(names: list[str]) -> list[tuple[int, int, list[int]]]:
    ids = [(NOBODY, NOBODY, [])]
    for name in names:
        account = user(name)
        if account is not None:
            ids.append((account.pw_uid, account.pw_gid, os.getgrouplist(name, account.pw_gid)))
    return ids


def install_checks(repo: Path, state: Path) -> str:
    """The course's own checks (:func:`~ste_course.specs.declarative.checks_folder` of ``repo``:
    ``checks/*.toml`` and their reference files) copied to ``STATE/checks``, root's and readable
    by every user (0755/0644), replacing an older copy; every user's server gets its path in
    ``STE_COURSE_CHECKS`` (hub/jupyterhub_config.py), so Validate and the visible tests in a
    student's kernel find a course-declared check by the same lookup as grading
    (:func:`~ste_course.specs.declarative.discover`). Nothing is written into the users' homes.
    Returns the copy's path, or ``""`` when the course has no checks folder (an older copy is
    removed). The reference files are readable by the students, like the published exercises."""
    from ste_course.specs.declarative import checks_folder

    source, target = checks_folder(repo), Path(state) / "checks"
    if source.is_dir():
        return str(copy_tree(source, target, SHARED_DIR, SHARED, ignore=COPY_IGNORE))
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    return ""


def ensure_group(name: str, members: list[str]) -> None:
    if group(name) is None:
        _run("groupadd", name)
    for member in members:
        _run("usermod", "--append", "--groups", name, member)


def write_user_config(state: Path, settings: Settings, repo: Path) -> None:
    """The Jupyter configuration every user's server reads (JUPYTER_CONFIG_PATH): nbgrader's
    exchange and the student's JupyterLab for all; the instructor's tools (jupyter-config/instructor,
    first on the instructor's path) for the instructor.

    The student's JupyterLab (jupyter-config/student: the instructor's plugins, formgrader and the
    news pop-up off and locked; no news feed or update check) is written here, not only left to the
    shared venv's sys-prefix (scripts/lab-config.sh): JUPYTER_CONFIG_PATH outranks every other
    level, while a student's own ~/.jupyter outranks the venv's (jupyter_core puts the environment
    first only for the venv's owner), and the venv's set-up is only as current as the last
    hub/install.sh."""
    student = Path(settings.student_config)
    student.parent.mkdir(parents=True, exist_ok=True)
    copy_tree(repo / "jupyter-config" / "student", student, SHARED_DIR, SHARED)
    shutil.copyfile(repo / "jupyter-config" / "jupyter_lab_config.json", student / "jupyter_lab_config.json")
    atomic_write(student / "nbgrader_config.py",
        "# Written by `ste-course hub`: nbgrader's exchange for this course (ste_course/classroom/exchange.py).\n"
        "import os\n"
        "c = get_config()  # noqa: F821\n"
        f"c.CourseDirectory.course_id = {settings.course_id!r}\n"
        f"c.Exchange.root = {settings.exchange!r}\n"
        "c.Exchange.assignment_dir = os.path.expanduser('~/exercises')\n"
        "c.ExchangeFactory.submit = 'ste_course.classroom.exchange.PrivateSubmit'\n"
        "c.ExchangeFactory.list = 'ste_course.classroom.exchange.FeedbackList'\n", SHARED)
    copy_tree(repo / "jupyter-config" / "instructor", settings.instructor_config, SHARED_DIR, SHARED)
    # formgrader's maths offline: MathJax 2 from the server's own static files, through nbconvert's
    # mathjax macro found first on the instructor's JUPYTER_PATH (hub/formgrader-templates)
    atomic_write(Path(settings.instructor_config) / "jupyter_server_config.py",
                 "# Written by `ste-course hub`: MathJax 2 for formgrader, served as static/mathjax2/.\n"
                 "c = get_config()  # noqa: F821\n"
                 f"c.ServerApp.extra_static_paths = [{str(DEFAULT_STATIC)!r}]\n", SHARED)
    if settings.instructor_data:
        copy_tree(repo / "hub" / "formgrader-templates", settings.instructor_data, SHARED_DIR, SHARED)
    set_modes(state / "config", SHARED_DIR, SHARED)


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


def prepare(roster: Path, repo: Path, state: Path, exchange_root: Path, *, instructor: str = "instructor",
            course_id: str = "ste", ip: str = "127.0.0.1", port: int = 8000, venv: Path = DEFAULT_VENV,
            proxy: Path = DEFAULT_PROXY, publish: list[str] | None = None) -> Settings:
    """Everything but starting the hub: users, homes, exchange, configuration files."""
    if os.geteuid() != 0:
        raise HubError("ste-course hub creates system users and starts servers as them: run it as root")
    for tool, hint in ((venv / "bin" / "jupyterhub", "make hub-deps (scripts/shared-venv.sh requirements-hub.txt)"),
                       (proxy, "make hub-deps (hub/install.sh installs configurable-http-proxy from npm)")):
        if not os.access(tool, os.X_OK):
            raise HubError(f"{tool} is missing: run `{hint}` as root")
    students = read_roster(roster)
    if not USER_NAME.match(instructor) or instructor in students:
        raise HubError(f"the instructor must be a system user name not on the roster. Received: {instructor!r}")
    _refuse_readable(repo, students)  # before anything is made
    state = Path(state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o755)  # users read state/config; the secrets in it are 0600
    ensure_users(students + [instructor], state)
    graders = f"{course_id}-graders"
    ensure_group(graders, [instructor])
    _refuse_readable(repo, students)  # as the students themselves, with their groups
    problems = []
    for name in students:
        problems += furnish_home(name, repo / "course")
    layout = exchange.prepare(Path(exchange_root).resolve(), course_id, graders)
    if publish:
        exchange.publish(repo / "exercises", publish, layout)
    settings = Settings(students=students, instructor=instructor, course_id=course_id, graders_group=graders,
                        exchange=str(layout.root), state=str(state), venv=str(venv), proxy=str(proxy), ip=ip,
                        port=port, hub_port=free_port(), proxy_api_port=free_port(),
                        student_config=str(state / "config" / "student"),
                        instructor_config=str(state / "config" / "instructor"),
                        instructor_data=str(state / "config" / "instructor-data"),
                        checks=install_checks(repo, state))
    settings.problems = problems
    write_user_config(state, settings, repo)
    atomic_write(state / "jupyterhub_config.py", (repo / "hub" / "jupyterhub_config.py").read_bytes(), PRIVATE)
    atomic_write(state / "settings.json", json.dumps(settings.__dict__, indent=2) + "\n", PRIVATE)
    return settings


def _refuse_readable(repo: Path, students: list[str]) -> None:
    problems = course_tree_problems(repo, _student_ids(students))
    if problems:
        raise HubError("the checkout would show the answers to the students, so the hub does not start: "
                       + "; ".join(problems))


def start(settings: Settings) -> int:
    """Run JupyterHub in the foreground (its proxy and users' servers stop with it)."""
    state = Path(settings.state)
    env = {"PATH": f"{settings.venv}/bin:{SAFE_PATH}", "LANG": "C.UTF-8",
           "STE_HUB_SETTINGS": str(state / "settings.json")}
    os.umask(0o077)  # the hub's database and cookie secret stay root's
    os.chdir(state)
    command = [f"{settings.venv}/bin/jupyterhub", "-f", str(state / "jupyterhub_config.py")]
    print(f"ste-course hub: http://{settings.ip}:{settings.port}/ (passwords in {state}/passwords.csv)",
          file=sys.stderr, flush=True)
    os.execve(command[0], command, env)
    return 1  # not reached
