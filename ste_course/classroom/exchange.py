"""nbgrader's filesystem exchange, between the students' servers and ``ste-course grade``.

The exchange is one folder on the hub's machine, in nbgrader's layout::

    EXCHANGE/                     1777  nbgrader requires the root writable by every user
      COURSE/                     0755  root:GRADERS
        outbound/                 2775  the graders publish here, without root
          ASSIGNMENT/             2775 / files 0644: released notebooks (``publish``), read by everyone
        inbound/                  3773  students create their submission here but cannot list it,
                                        nor rename or remove another's (sticky bit)
          STUDENT+ASSIGNMENT+TIMESTAMP+RANDOM/   2750 / files 0640: the student and GRADERS only
        feedback/                 2771  HASH.html, HASH from the submission's own secret: the graders
                                        write here without root; a student enters, never lists

nbgrader's own ``submit`` leaves each submission folder 0777 with 0644 files and relies on its
random suffix; :class:`PrivateSubmit` (configured as ``ExchangeFactory.submit`` on the hub)
takes the "other" bits away as soon as nbgrader has written it, and the setgid ``inbound``
gives the folder and every file in it the graders' group (its copy keeps the folder's setgid
bit, which nbgrader's ``copytree`` clears before writing the secret and the timestamp). The submission secret nbgrader writes beside the
notebooks names the feedback file, so a student who cannot read another's submission cannot
name their feedback either; when run as root, ``return_feedback`` also gives each feedback file
to its student (0600).

The instructor's side runs as root or as any member of the graders' group (the instructor's
hub account: no root): :func:`publish` copies
``exercises/ASSIGNMENT`` to ``outbound``; :func:`collect` copies the latest submission of each
student into ``SUBMISSIONS/<student>/<assignment>/`` (what ``ste-course grade`` reads), only
for assignments published in ``outbound`` and only when the folder belongs to the user it names
(nbgrader's ``submit --student`` lets anyone submit under another name). The submission time is
the kernel's, never the folder's name (which the student chooses): the latest change time
(``ctime``, which no user can set back) of the folder and of every file collected from it,
written to ``timestamp.txt`` for the late rule; a name dated in the future is refused;
:func:`return_feedback` puts ``graded/feedback/<student>/<assignment>/<notebook>.html`` where
that student's Assignment List fetches it, rendered again from the gradebook first (so what
was graded by hand in formgrader since is in it). Everything in ``inbound`` is hostile: never follow a
link (every folder is opened by descriptor with ``O_NOFOLLOW``, its owner and times read from that
descriptor), open without blocking, bound every size.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from nbgrader.exchange.default.list import ExchangeList
from nbgrader.exchange.default.submit import ExchangeSubmit

from ste_course.files import (COPY_IGNORE, PRIVATE, PRIVATE_DIR, SHARED, SHARED_DIR, atomic_write, copy_tree,
                              ensure_dir_at, group, open_dir, replace_tree, set_modes, user, user_name)
from ste_course.untrusted import (LEFT_OUT, NotOwnFile, OwnTree, open_own, read_own, shown, valid_id,
                                  walk_own_tree)

# modes of the exchange's folders and of a submission once locked down
ROOT_MODE = 0o1777
COURSE_MODE = 0o755
OUTBOUND_MODE = 0o2775  # the graders' group writes (publish), every user reads
PUBLISHED_DIR_MODE = 0o2775  # group-writable, so another grader can replace a copy root published
INBOUND_MODE = 0o3773  # setgid (the graders' group) and sticky (no renaming another's)
FEEDBACK_MODE = 0o2771  # the graders' group writes (return-feedback); students enter only
SUBMISSION_DIR_MODE = 0o2750
SUBMISSION_FILE_MODE = 0o640

MAX_FILE_BYTES = 20 * 2**20  # one file of a submission
MAX_SUBMISSION_BYTES = 100 * 2**20  # one submission folder
MAX_FILES = 200
SECRET_BYTES = 1024
CLOCK_SLACK = timedelta(minutes=5)  # a folder's name may be this far ahead of the kernel's clock
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f UTC"  # nbgrader's timestamp_format, in UTC

# nbgrader's submission folder: STUDENT+ASSIGNMENT+TIMESTAMP[+RANDOM]
SUBMISSION_NAME = re.compile(r"^([^+/]+)\+([^+/]+)\+([^+/]+)(?:\+[^+/]*)?$")


class ExchangeError(Exception):
    """A problem with the exchange or its arguments, said in one line."""


def lock_down(folder: str | os.PathLike) -> None:
    """Folders 2750 and files 0640 under ``folder`` (links are left alone, never followed)."""
    set_modes(folder, SUBMISSION_DIR_MODE, SUBMISSION_FILE_MODE)


class PrivateSubmit(ExchangeSubmit):
    """nbgrader's submit, then the submission made unreadable to other students."""

    def do_copy(self, src, dest, log=None):
        """nbgrader's copy (its size limit and ignore patterns), keeping the mode each folder is
        made with: ``shutil.copytree`` copies a folder's mode last, clearing the setgid bit the
        folder took from ``inbound`` (a student, not in the graders' group, cannot set it again),
        and the files nbgrader writes next (``timestamp.txt``, ``submission_secret.txt``) would
        have the student's group, not the graders'."""
        from nbgrader.utils import ignore_patterns

        size = self.get_size(src)
        if size > 1000 * self.coursedir.max_dir_size:
            self.log.error("Directory size is too big")
            raise RuntimeError(f"Directory size is too big. Size is {size}, "
                               f"maximum size is {1000 * self.coursedir.max_dir_size}")
        ignore = ignore_patterns(exclude=self.coursedir.ignore, include=self.coursedir.include,
                                 max_file_size=self.coursedir.max_file_size, log=self.log)

        def copy(source, target):
            os.makedirs(target)  # the group and setgid bit of the folder it is made in
            names = os.listdir(source)
            skipped = ignore(source, names)
            for name in names:
                if name not in skipped:  # links followed, as nbgrader's copytree does
                    here, there = os.path.join(source, name), os.path.join(target, name)
                    copy(here, there) if os.path.isdir(here) else shutil.copyfile(here, there)

        copy(src, dest)

    def copy_files(self):
        super().copy_files()
        lock_down(os.path.join(self.inbound_path, self.assignment_filename))


class FeedbackList(ExchangeList):
    """nbgrader's list, whose "view feedback" link (``filebrowser:go-to-path`` in the Assignment
    List) shows the folder of a submission's feedback: when that folder holds one page, the link
    is given the page itself (``<assignment>/feedback/<timestamp>/<notebook>.html``), which the
    hub's JupyterLab extension (``hub/labextension``) then opens in the HTML viewer; nbgrader's
    frontend alone opens no file from that link."""

    def parse_assignments(self):
        assignments = super().parse_assignments()
        for assignment in assignments:
            for info in assignment.get("submissions", [assignment]):
                folder = info.get("local_feedback_path")
                pages = sorted(Path(folder).glob("*.html")) if folder and os.path.isdir(folder) else []
                if len(pages) == 1:
                    info["local_feedback_path"] = str(pages[0])
        return assignments


@dataclass
class Layout:
    """The folders of one course in an exchange."""

    root: Path
    course_id: str

    @property
    def course(self) -> Path:
        return self.root / self.course_id

    @property
    def outbound(self) -> Path:
        return self.course / "outbound"

    @property
    def inbound(self) -> Path:
        return self.course / "inbound"

    @property
    def feedback(self) -> Path:
        return self.course / "feedback"


def prepare(root: Path, course_id: str, graders_group: str) -> Layout:
    """Create (or repair) the exchange's folders with the modes above; run as root."""
    if not valid_id(course_id) or "+" in course_id:
        raise ExchangeError(f"course id must be a plain folder name without '+'. Received: {course_id!r}")
    graders = group(graders_group)
    if graders is None:
        raise ExchangeError(f"no group {graders_group!r} for the graders (ste-course hub creates it)")
    gid = graders.gr_gid
    layout = Layout(Path(root), course_id)
    layout.root.mkdir(parents=True, exist_ok=True)  # its parents are the instructor's choice
    try:  # every user may write in the root: below it, by descriptor only (files.ensure_dir_at)
        top = open_dir(layout.root)
        try:
            os.fchown(top, 0, 0)
            os.fchmod(top, ROOT_MODE)
            course = ensure_dir_at(top, course_id, COURSE_MODE, 0, gid, owners=(0,))
        finally:
            os.close(top)
        try:
            for name, mode in (("outbound", OUTBOUND_MODE), ("inbound", INBOUND_MODE), ("feedback", FEEDBACK_MODE)):
                os.close(ensure_dir_at(course, name, mode, 0, gid, owners=(0,)))
        finally:
            os.close(course)
    except OSError as err:
        raise ExchangeError(f"cannot set up the exchange in {layout.root}: {err.strerror or err} "
                            f"({err.filename or course_id}); its folders must be real folders of root") from None
    return layout


def publish(exercises: Path, assignments: list[str], layout: Layout) -> list[str]:
    """Copy each ``exercises/ASSIGNMENT`` to the exchange's outbound (replacing an older copy)."""
    done = []
    for name in assignments:
        source = Path(exercises) / name
        if not valid_id(name) or "+" in name or not source.is_dir():
            raise ExchangeError(f"no released assignment {name!r} in {exercises} (run `ste-course release`)")
        copy_tree(source, layout.outbound / name, PUBLISHED_DIR_MODE, SHARED, ignore=COPY_IGNORE)
        done.append(name)
    return done


@dataclass
class Collected:
    """What :func:`collect` did: copied or unchanged submissions, and what it refused."""

    copied: list[tuple[str, str, str]] = field(default_factory=list)  # student, assignment, timestamp
    unchanged: list[tuple[str, str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    left_out: list[tuple[str, str, str, str]] = field(default_factory=list)  # student, assignment, file, why


def _parse_time(text: str) -> datetime | None:
    from nbgrader.utils import parse_utc

    try:
        return parse_utc(text)
    except (ValueError, OverflowError, TypeError):
        return None


def published(layout: Layout) -> set[str]:
    """The assignments in the exchange's ``outbound`` (what :func:`publish` put there)."""
    try:
        return {e.name for e in os.scandir(layout.outbound) if e.is_dir(follow_symlinks=False)}
    except FileNotFoundError:
        raise ExchangeError(f"no outbound folder at {layout.outbound} (run `ste-course hub` to create the exchange)")


def kernel_time(ns: int) -> datetime:
    """A ``st_ctime_ns`` as an aware UTC datetime."""
    return datetime.fromtimestamp(ns / 1e9, timezone.utc)


def _read(layout: Layout, name: str) -> OwnTree | str:
    """The submission folder ``inbound/name`` read by descriptor
    (:func:`~ste_course.untrusted.walk_own_tree`: links, devices, FIFOs and files that are too
    large are not part of a submission), or why it was refused."""
    try:
        return walk_own_tree(layout.inbound, (name,), MAX_FILE_BYTES, MAX_SUBMISSION_BYTES, MAX_FILES)
    except OSError as err:  # NotOwnFile: a link or too large; vanished since it was listed
        return err.reason if isinstance(err, NotOwnFile) else f"unreadable ({type(err).__name__})"


def _top(layout: Layout, name: str) -> os.stat_result | None:
    """``fstat`` of ``inbound/name`` opened as a folder without following a link (None: a link,
    not a folder, or gone)."""
    try:
        fd = open_own(layout.inbound, (name,), folder=True)
    except OSError:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


MAX_REFUSED_ROWS = 1000  # lines collect says about refused inbound entries; the rest are counted


def _candidates(layout: Layout, students, assignments, result: Collected) -> dict:
    """(student, assignment) -> (ctime in ns, folder name) of the latest owned submission of a
    published assignment, latest by the kernel's change time of the folder (not its name)."""
    latest, refused = {}, []
    try:
        listing = os.scandir(layout.inbound)  # read as a stream: students can fill inbound with names
    except FileNotFoundError:
        raise ExchangeError(f"no inbound folder at {layout.inbound} (run `ste-course hub` to create the exchange)")
    released = published(layout)
    now = datetime.now(timezone.utc)
    with listing:
        for entry in listing:
            _candidate(layout, entry, students, assignments, released, now, latest, refused)
    more = refused.pop() if len(refused) > MAX_REFUSED_ROWS else 0
    result.refused += sorted(refused) + ([f"... and {more} more entries of inbound refused"] if more else [])
    return latest


def _candidate(layout, entry, students, assignments, released, now, latest: dict, refused: list) -> None:
    """One entry of inbound: into ``latest`` if it is the latest owned submission so far, else
    a line in ``refused`` (or nothing, for another student or assignment than those asked for)."""
    match = SUBMISSION_NAME.match(entry.name)
    label = shown(entry.name, 100)
    info = _top(layout, entry.name) if match else None
    if info is None:
        return _refuse(refused, f"{label}: not a submission folder (STUDENT+ASSIGNMENT+TIMESTAMP)")
    student, assignment, stamp = match.groups()
    if not valid_id(student) or not valid_id(assignment):
        return _refuse(refused, f"{label}: not a usable student or assignment id")
    if (students and student not in students) or (assignments and assignment not in assignments):
        return None
    if assignment not in released:
        return _refuse(refused, f"{label}: {shown(assignment, 40)} was never published "
                                f"(`ste-course publish {shown(assignment, 40)}` first); not collected")
    owner = user_name(info.st_uid)
    if owner != student:
        return _refuse(refused, f"{label}: submitted under the name {student!r} by the user "
                                f"{owner!r}; only a student's own submissions are collected")
    named = _parse_time(stamp)
    if named is None:
        return _refuse(refused, f"{label}: unreadable timestamp")
    if (named if named.tzinfo else named.replace(tzinfo=timezone.utc)) > now + CLOCK_SLACK:
        return _refuse(refused, f"{label}: named as submitted in the future; not collected")
    key = (student, assignment)
    if key not in latest or (info.st_ctime_ns, entry.name) > latest[key]:
        latest[key] = (info.st_ctime_ns, entry.name)
    return None


def _refuse(refused: list, line: str) -> None:
    """At most :data:`MAX_REFUSED_ROWS` lines are kept; the rest only counted (the last item)."""
    if len(refused) < MAX_REFUSED_ROWS:
        refused.append(line)
    elif len(refused) == MAX_REFUSED_ROWS:
        refused.append(1)
    else:
        refused[-1] += 1


def collect(layout: Layout, out: Path, students=None, assignments=None) -> Collected:
    """Copy the latest submission of each student and assignment into
    ``out/<student>/<assignment>/`` (notebooks, ``timestamp.txt``, ``submission_secret.txt``).

    ``timestamp.txt`` holds the kernel's time of the submission (:class:`OwnTree`'s ``changed``:
    the latest ``ctime`` of the folder and the files copied), replacing whatever the student
    wrote there. A folder already holding that submission (same time) is left as it is, so
    grading does not redo it; a newer one replaces it whole (written beside it, then swapped in).
    A submission that cannot be read or written (any ``OSError``) is refused with the reason; the
    others are still collected.
    """
    result = Collected()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    for (student, assignment), (_ctime, folder) in sorted(
            _candidates(layout, students, assignments, result).items()):
        try:  # one submission that cannot be read or written is refused; the others are still collected
            _collect_one(layout, out, student, assignment, folder, result)
        except OSError as err:
            result.refused.append(f"{shown(folder, 100)}: not collected ({shown(err.strerror or type(err).__name__)})")
    return result


def _collect_one(layout: Layout, out: Path, student: str, assignment: str, folder: str, result: Collected) -> None:
    """:func:`collect` of the submission folder ``inbound/folder`` (into ``result``)."""
    tree = _read(layout, folder)
    if isinstance(tree, str):
        result.refused.append(f"{shown(folder, 100)}: {tree}")
        return
    if user_name(tree.owner) != student:  # what was read, not what was listed
        result.refused.append(f"{shown(folder, 100)}: changed owner while being collected")
        return
    stamp = kernel_time(tree.changed).strftime(TIMESTAMP_FORMAT)
    target = out / student / assignment
    previous = target / "timestamp.txt"
    if previous.is_file() and not previous.is_symlink() and \
            previous.read_text(encoding="utf-8", errors="replace").strip() == stamp:
        result.unchanged.append((student, assignment, stamp))
        return
    files = tree.files
    files["timestamp.txt"] = stamp.encode()  # the kernel's, not the one the student's client wrote
    if tree.left_out:  # grade's row of a notebook left out says why (grading.steps)
        files[LEFT_OUT] = "".join(f"{shown(rel)}\t{why}\n" for rel, why in tree.left_out).encode()
    target.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    replace_tree(target, lambda staging: _write_files(staging, files), PRIVATE_DIR, PRIVATE)
    result.left_out += [(student, assignment, rel, why) for rel, why in tree.left_out]
    result.copied.append((student, assignment, stamp))


def _write_files(folder: Path, files: dict) -> None:
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        path.write_bytes(data)


@dataclass
class Returned:
    """What :func:`return_feedback` did."""

    returned: list[tuple[str, str, str]] = field(default_factory=list)  # student, assignment, notebook
    problems: list[str] = field(default_factory=list)  # pages not returned
    rendered: int = 0  # pages rendered again from the gradebook first
    notes: list[str] = field(default_factory=list)  # returned, but rendered from the scores alone


def return_feedback(graded: Path, submissions: Path, layout: Layout, students=None,
                    assignments=None, db_url: str | None = None, refresh: bool = True) -> Returned:
    """Put each ``graded/feedback/<student>/<assignment>/<notebook>.html`` into the exchange's
    ``feedback/`` under nbgrader's name for it (a hash of the submission's secret and the
    notebook), where that student's Assignment List finds it. With ``refresh`` the pages are
    first rendered again from the gradebook as it is now
    (:func:`ste_course.record.recorder.refresh_feedback`: scores and comments entered in formgrader since
    grading included). A page replaces the earlier file (written beside it, then renamed)."""
    from nbgrader.utils import notebook_hash

    result = Returned()
    if refresh:
        from ste_course.record.recorder import refresh_feedback

        try:
            rendered = refresh_feedback(graded, db_url, students=students, assignments=assignments)
        except FileNotFoundError as err:
            raise ExchangeError(str(err)) from None
        result.rendered, result.notes = len(rendered.rendered), rendered.problems
    feedback = Path(graded) / "feedback"
    if not feedback.is_dir():
        raise ExchangeError(f"no feedback folder at {feedback} (run `ste-course grade ... --out {graded}` first)")
    if not layout.feedback.is_dir():
        raise ExchangeError(f"no feedback folder in the exchange at {layout.feedback}")
    as_root = os.geteuid() == 0
    for html in sorted(feedback.glob("*/*/*.html")):
        notebook, assignment, student = html.stem, html.parent.name, html.parent.parent.name
        if (students and student not in students) or (assignments and assignment not in assignments):
            continue
        try:  # the collected copy of the student's folder: read as theirs (no link at any level)
            secret = read_own(Path(submissions), (student, assignment, "submission_secret.txt"), SECRET_BYTES,
                              "submission_secret.txt")
        except OSError:
            result.problems.append(f"{student}/{assignment}: no submission_secret.txt in "
                                   f"{Path(submissions) / student / assignment} (collect it with `ste-course collect`)")
            continue
        name = notebook_hash(secret=secret.decode("utf-8", "replace"), notebook_id=notebook)
        account = user(student) if as_root else None
        # the student's own page (0600, theirs) when run as root, else readable by the Assignment List
        atomic_write(layout.feedback / f"{name}.html", html.read_bytes(), PRIVATE if account else SHARED,
                     owner=account.pw_uid if account else None)
        result.returned.append((student, assignment, notebook))
    return result

