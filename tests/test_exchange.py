"""The exchange between the hub's students and the grader (ste_course/classroom/exchange.py), without a
hub: nbgrader's real ``submit`` against a temporary exchange, and ``collect`` on hostile
inbound folders. (tests/e2e/test_hub.py checks the same as real users, in a browser.)"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ste_course.classroom.exchange import collect, prepare, publish
from ste_course.files import user
from ste_course.grading.late import LatePolicy, read_timestamp

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "03_ste"
STAMP = "2026-12-01 10:00:00.000000 UTC"



@pytest.fixture
def layout(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the exchange's tests set owners and groups: run them as root", pytrace=False)
    layout = prepare(tmp_path / "exchange", "c", "root")
    publish(ROOT / "exercises", [ASSIGNMENT], layout)
    return layout


@pytest.fixture
def open_layout():
    """An exchange every user can reach (tmp_path's parents are root's alone): for the tests that
    act as a student."""
    if os.geteuid() != 0:
        pytest.fail("the exchange's tests set owners and groups: run them as root", pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="ste-exchange-"))
    os.chmod(base, 0o755)
    layout = prepare(base / "exchange", "c", "root")
    publish(ROOT / "exercises", [ASSIGNMENT], layout)
    yield layout
    shutil.rmtree(base)


def submit(layout, tmp_path, submit_class: str) -> Path:
    """``nbgrader submit`` of the released notebook; returns the folder it made in inbound."""
    work = tmp_path / "student"
    shutil.copytree(ROOT / "exercises" / ASSIGNMENT, work / ASSIGNMENT)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    env.pop("JUPYTER_CONFIG_PATH", None)
    out = subprocess.run([str(Path(sys.executable).parent / "nbgrader"), "submit", ASSIGNMENT, "--course", "c",
                          f"--Exchange.root={layout.root}", f"--ExchangeFactory.submit={submit_class}"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (folder,) = list(layout.inbound.iterdir())
    return folder


def others_can_read(folder: Path) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(folder):
        for path in [dirpath] + [os.path.join(dirpath, f) for f in files]:
            if os.stat(path).st_mode & (stat.S_IROTH | stat.S_IWOTH):
                found.append(os.path.relpath(path, folder))
    return found


def test_nbgraders_own_submit_leaves_the_submission_to_everyone(layout, tmp_path):
    """The hole PrivateSubmit closes: only the folder's random name hides it."""
    folder = submit(layout, tmp_path, "nbgrader.exchange.default.submit.ExchangeSubmit")
    assert f"{ASSIGNMENT}.ipynb" in others_can_read(folder)


def test_private_submit_leaves_nothing_to_other_students(layout, tmp_path):
    folder = submit(layout, tmp_path, "ste_course.classroom.exchange.PrivateSubmit")
    assert others_can_read(folder) == []
    assert stat.S_IMODE(os.stat(folder).st_mode) & 0o777 == 0o750
    assert stat.S_IMODE(os.stat(layout.inbound).st_mode) == 0o3773  # write, never list, sticky


def _fake_submission(layout, name: str, owner: int) -> Path:
    folder = layout.inbound / name
    folder.mkdir()
    (folder / f"{ASSIGNMENT}.ipynb").write_text("{}")
    (folder / "timestamp.txt").write_text(STAMP)
    os.chown(folder, owner, -1)
    return folder


def test_collect_takes_only_the_students_own_submissions(layout, tmp_path):
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
    _fake_submission(layout, f"root+{ASSIGNMENT}+2026-11-30 10:00:00.000000 UTC+r0", 0)  # older
    (_fake_submission(layout, f"root+{ASSIGNMENT}+{STAMP}+r1", 0) / "mark").write_text("r1")
    _fake_submission(layout, f"nobody+{ASSIGNMENT}+{STAMP}+r2", 0)  # root submitting as nobody
    _fake_submission(layout, f"root+{ASSIGNMENT}+2026-12-02 10:00:00.000000 UTC+r3", nobody)  # and back
    os.symlink("/etc", layout.inbound / f"root+{ASSIGNMENT}+2026-12-03 10:00:00.000000 UTC+r4")
    done = collect(layout, tmp_path / "submitted")
    assert [c[:2] for c in done.copied] == [("root", ASSIGNMENT)], done
    assert len(done.refused) == 3, done.refused
    target = tmp_path / "submitted" / "root" / ASSIGNMENT
    assert (target / "mark").read_text() == "r1"  # the one made last
    stamp = done.copied[0][2]
    assert (target / "timestamp.txt").read_text() == stamp
    assert not (tmp_path / "submitted" / "nobody").exists()
    again = collect(layout, tmp_path / "submitted")
    assert again.copied == [] and again.unchanged == [("root", ASSIGNMENT, stamp)]


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def as_nobody(*command: str) -> subprocess.CompletedProcess:
    """``command`` as the unprivileged user nobody, with no supplementary group: what a student
    with a terminal on the hub can do."""
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *command],
                          capture_output=True, text=True, timeout=60)


def test_a_folder_made_late_but_named_early_is_graded_late(layout, tmp_path):
    """Attack 7: the name is the student's, the time the kernel's. A folder made now, named five
    days ago, with a timestamp.txt of its own saying so, is late for a due date 12 hours ago."""
    now = datetime.now(timezone.utc)
    early = _stamp(now - timedelta(days=5))
    folder = _fake_submission(layout, f"root+{ASSIGNMENT}+{early}+r1", 0)
    (folder / "timestamp.txt").write_text(early)
    done = collect(layout, tmp_path / "submitted")
    assert [c[:2] for c in done.copied] == [("root", ASSIGNMENT)], done
    submitted = read_timestamp(tmp_path / "submitted" / "root" / ASSIGNMENT)
    assert abs((submitted - now.replace(tzinfo=None)).total_seconds()) < 60, submitted
    policy = LatePolicy(due={ASSIGNMENT: (now - timedelta(hours=12)).replace(tzinfo=None)}, penalty_per_day=0.5)
    late, seconds, penalty = policy.rule(ASSIGNMENT, submitted, 10.0)
    assert late and seconds > 43000 and penalty == 5.0, (late, seconds, penalty)


def test_a_file_rewritten_after_submitting_makes_it_later(layout, tmp_path):
    """Rewriting a notebook in an old folder moves its time forward (the file's ctime counts)."""
    folder = _fake_submission(layout, f"root+{ASSIGNMENT}+{STAMP}+r1", 0)
    first = collect(layout, tmp_path / "submitted").copied[0][2]
    os.utime(folder, (0, 0))  # an mtime in 1970 changes nothing: ctime is the kernel's
    (folder / f"{ASSIGNMENT}.ipynb").write_text('{"later": 1}')
    again = collect(layout, tmp_path / "submitted")
    assert again.copied and again.copied[0][2] > first, (first, again)


def test_a_name_dated_in_the_future_is_refused(layout, tmp_path):
    """Attack 7: a future-dated name no longer stays "the latest" for good."""
    future = _stamp(datetime.now(timezone.utc) + timedelta(days=30))
    _fake_submission(layout, f"root+{ASSIGNMENT}+{future}+r9", 0)
    _fake_submission(layout, f"root+{ASSIGNMENT}+{STAMP}+r1", 0)
    done = collect(layout, tmp_path / "submitted")
    assert [c[:2] for c in done.copied] == [("root", ASSIGNMENT)], done
    assert any("future" in r for r in done.refused), done.refused
    assert (tmp_path / "submitted" / "root" / ASSIGNMENT / "timestamp.txt").read_text() != future


def test_the_latest_is_the_latest_made_not_the_latest_named(layout, tmp_path):
    new = _fake_submission(layout, f"root+{ASSIGNMENT}+2026-01-01 00:00:00.000000 UTC+new", 0)
    (new / f"{ASSIGNMENT}.ipynb").write_text('{"made": "first"}')
    later = _fake_submission(layout, f"root+{ASSIGNMENT}+2025-01-01 00:00:00.000000 UTC+old", 0)
    (later / f"{ASSIGNMENT}.ipynb").write_text('{"made": "second"}')
    collect(layout, tmp_path / "submitted")
    assert "second" in (tmp_path / "submitted" / "root" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()


def test_an_assignment_never_published_is_not_collected(layout, tmp_path):
    """Attack 10: a submission for an assignment that was never published is refused, saying so."""
    _fake_submission(layout, f"root+99_unpublished+{STAMP}+r1", 0)
    done = collect(layout, tmp_path / "submitted")
    assert done.copied == [] and any("never published" in r for r in done.refused), done
    assert not (tmp_path / "submitted" / "root").exists()


def test_a_student_cannot_rename_anothers_submission(open_layout):
    """Attack 10: inbound is writable by every student; its sticky bit keeps each folder its
    owner's, so one who learns a classmate's folder name cannot rename it away."""
    layout = open_layout
    folder = _fake_submission(layout, f"root+{ASSIGNMENT}+{STAMP}+r1", 0)
    out = as_nobody(sys.executable, "-c", "import os, sys; os.rename(sys.argv[1], sys.argv[1] + 'x')", str(folder))
    assert out.returncode != 0 and "PermissionError" in out.stderr, out
    assert folder.is_dir()
    made = as_nobody("mkdir", str(layout.inbound / f"nobody+{ASSIGNMENT}+{STAMP}+r2"))
    assert made.returncode == 0, made.stderr  # submitting still works


# a student's loop: their folder, then a link in its place, then their folder again, without end
SWAP_LOOP = """
import os, sys
folder, target = sys.argv[1], sys.argv[2]
hold = os.path.join(os.path.dirname(folder), "hold")
while True:
    os.rename(folder, hold)
    os.symlink(target, folder)
    os.unlink(folder)
    os.rename(hold, folder)
"""


def test_collect_never_follows_a_link_swapped_in(layout, tmp_path):
    """Attack 8: while collect runs, the student swaps their submission folder for a link to a
    folder they cannot read (here another student's collected submission) and back, in a tight
    loop; collect never copies anything through the link."""
    victim = tmp_path / "victim" / "bob" / ASSIGNMENT
    victim.mkdir(parents=True, mode=0o700)
    (victim / f"{ASSIGNMENT}.ipynb").write_text('{"victim": "SECRET"}')
    name = f"root+{ASSIGNMENT}+{STAMP}+r1"
    folder = _fake_submission(layout, name, 0)
    swapper = subprocess.Popen([sys.executable, "-c", SWAP_LOOP, str(folder), str(victim)])
    try:
        out = tmp_path / "submitted"
        for i in range(300):
            shutil.rmtree(out, ignore_errors=True)  # collected afresh each time
            collect(layout, out)
            copied = out / "root" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
            assert not copied.exists() or "SECRET" not in copied.read_text(), f"followed the link on try {i}"
        assert swapper.poll() is None, "the swapping loop stopped early"
    finally:
        swapper.kill()
        swapper.wait()


def shared_python() -> Path:
    """The shared venv's python, which other users can run (root's .venv may sit where they cannot
    reach); the tests put this checkout first on its PYTHONPATH."""
    python = Path(os.environ.get("STE_SHARED_VENV", "/opt/ste-course/venv")) / "bin" / "python"
    if not python.exists():
        pytest.fail(f"no shared venv at {python.parent.parent}: run `make shared-venv`", pytrace=False)
    return python


def test_a_students_own_submit_leaves_every_file_to_the_graders(open_layout):
    """nbgrader's submit as a student (not in the graders' group): every file of the folder,
    timestamp.txt and submission_secret.txt included (nbgrader writes them after its copy), has
    the graders' group and is readable by it, and by no other student. (Old: copytree copied the
    folder's mode last, clearing the setgid bit it took from inbound, so those two files got the
    student's group and the instructor, unprivileged, could not return feedback.)"""
    layout = open_layout
    python = shared_python()
    work = Path(tempfile.mkdtemp(prefix="ste-student-"))
    try:
        shutil.copytree(ROOT / "exercises" / ASSIGNMENT, work / ASSIGNMENT)
        subprocess.run(["chown", "-R", "nobody:nogroup", str(work)], check=True)
        out = as_nobody("env", f"HOME={work}", f"PYTHONPATH={ROOT}", f"JUPYTER_CONFIG_DIR={work}/cfg", f"JUPYTER_DATA_DIR={work}/data",
                        "sh", "-c", 'cd "$1" && exec "$2" -m nbgrader submit 03_ste --course c --Exchange.root="$3" '
                        '--ExchangeFactory.submit=ste_course.classroom.exchange.PrivateSubmit', "sh", str(work),
                        str(python), str(layout.root))
        assert out.returncode == 0, out.stderr
    finally:
        shutil.rmtree(work)
    (folder,) = list(layout.inbound.iterdir())
    graders = os.stat(layout.inbound).st_gid
    files = {p.name: os.stat(p) for p in folder.iterdir()}
    assert {"timestamp.txt", "submission_secret.txt", f"{ASSIGNMENT}.ipynb"} <= set(files), files
    assert {name: (s.st_gid, stat.S_IMODE(s.st_mode)) for name, s in files.items()} == \
        {name: (graders, 0o640) for name in files}
    assert others_can_read(folder) == []


INSTRUCTOR_STEPS = """
import sys
from pathlib import Path
from ste_course.classroom.exchange import Layout, publish, return_feedback
layout = Layout(Path(sys.argv[1]), "c")
print(publish(Path(sys.argv[2]), ["03_ste"], layout))
done = return_feedback(Path(sys.argv[3]) / "graded", Path(sys.argv[3]) / "submitted", layout, refresh=False)
print(done.returned, done.problems)
"""


def test_the_graders_publish_and_return_feedback_without_root(open_layout):
    """The instructor's account (here daemon, in the graders' group, not root) publishes again over
    root's copy and returns feedback; a student (nobody, not in it) can write in neither outbound
    nor feedback."""
    layout = open_layout  # root published 03_ste
    python = shared_python()
    work = Path(tempfile.mkdtemp(prefix="ste-instructor-"))
    try:
        (work / "graded" / "feedback" / "s1" / ASSIGNMENT).mkdir(parents=True)
        (work / "graded" / "feedback" / "s1" / ASSIGNMENT / f"{ASSIGNMENT}.html").write_text("<p>page</p>")
        (work / "submitted" / "s1" / ASSIGNMENT).mkdir(parents=True)
        (work / "submitted" / "s1" / ASSIGNMENT / "submission_secret.txt").write_text("abc")
        # the instructor's copy of the release (the checkout itself may sit in a folder only root enters)
        shutil.copytree(ROOT / "exercises" / ASSIGNMENT, work / "exercises" / ASSIGNMENT)
        subprocess.run(["chown", "-R", "daemon:daemon", str(work)], check=True)
        graders = os.stat(layout.inbound).st_gid
        out = subprocess.run(["setpriv", "--reuid=daemon", "--regid=daemon", f"--groups={graders}", "--",
                              "env", f"PYTHONPATH={ROOT}", str(python), "-c", INSTRUCTOR_STEPS, str(layout.root),
                              str(work / "exercises"), str(work)], capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(work)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['03_ste']", f"[('s1', '{ASSIGNMENT}', '{ASSIGNMENT}')] []"], out.stdout
    published = layout.outbound / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert os.stat(published).st_uid == user("daemon").pw_uid and stat.S_IMODE(os.stat(published).st_mode) == 0o644
    for folder in (layout.outbound, layout.outbound / ASSIGNMENT, layout.feedback):
        assert as_nobody("touch", str(folder / "x")).returncode != 0, f"a student can write in {folder}"
    assert as_nobody("ls", str(layout.feedback)).returncode != 0  # a page's name is its only key


def test_the_feedback_link_is_given_the_page(tmp_path, monkeypatch):
    """nbgrader's "view feedback" link goes to local_feedback_path in the file browser: with one
    page in the submission's feedback folder, FeedbackList gives it the page (the browser opens
    the folder with the page selected); with two, the folder as before."""
    from nbgrader.exchange.default.list import ExchangeList

    from ste_course.classroom.exchange import FeedbackList

    one, two = tmp_path / "one", tmp_path / "two"
    for folder, pages in ((one, ["03_ste.html"]), (two, ["a.html", "b.html"])):
        folder.mkdir()
        for page in pages:
            (folder / page).write_text("<p>page</p>")
    listed = [{"submissions": [{"local_feedback_path": str(one)}, {"local_feedback_path": str(two)},
                               {"local_feedback_path": None}]}]
    monkeypatch.setattr(ExchangeList, "parse_assignments", lambda self: listed)
    got = FeedbackList.parse_assignments(object.__new__(FeedbackList))
    assert [s["local_feedback_path"] for s in got[0]["submissions"]] == [str(one / "03_ste.html"), str(two), None]


def test_a_path_longer_than_path_max_is_left_out_and_the_class_still_collected(layout, tmp_path):
    """RT2: folders of 255-character names, 20 deep (past PATH_MAX, each name legal, read by
    descriptor) once made collect raise ENAMETOOLONG and stop before the students sorted after."""
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
    attacker = _fake_submission(layout, f"nobody+{ASSIGNMENT}+{STAMP}+r1", nobody)
    fd = os.open(attacker, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(20):
        os.mkdir("d" * 255, dir_fd=fd)
        child = os.open("d" * 255, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("x.ipynb", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    _fake_submission(layout, f"root+{ASSIGNMENT}+{STAMP}+r2", 0)  # a classmate, collected after
    done = collect(layout, tmp_path / "submitted")
    assert [c[:2] for c in done.copied] == [("nobody", ASSIGNMENT), ("root", ASSIGNMENT)], done
    assert [why for *_, why in done.left_out if why.startswith("a path longer")] == [
        "a path longer than 1024 bytes"], done.left_out


def test_a_file_the_student_does_not_own_is_not_collected(layout, tmp_path):
    """RT2: a hard link to another user's 0600 file (possible where fs.protected_hardlinks=0)
    inside a student's submission was copied by root's collect as the student's."""
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
    secret = tmp_path / "classmates-notebook.ipynb"
    secret.write_text('{"secret": "classmate"}')
    os.chmod(secret, 0o600)
    attacker = _fake_submission(layout, f"nobody+{ASSIGNMENT}+{STAMP}+r1", nobody)
    os.chown(attacker / f"{ASSIGNMENT}.ipynb", nobody, -1)
    os.link(secret, attacker / "copied.ipynb")
    done = collect(layout, tmp_path / "submitted")
    target = tmp_path / "submitted" / "nobody" / ASSIGNMENT
    assert (target / f"{ASSIGNMENT}.ipynb").exists() and not (target / "copied.ipynb").exists(), done
    assert ("nobody", ASSIGNMENT, "copied.ipynb", "not the student's own file") in done.left_out


def test_one_submission_that_cannot_be_written_is_refused_not_the_class(layout, tmp_path, monkeypatch):
    from ste_course.classroom import exchange

    _fake_submission(layout, f"root+{ASSIGNMENT}+{STAMP}+r1", 0)
    def too_long(folder, files):
        raise OSError(36, "File name too long")

    monkeypatch.setattr(exchange, "_write_files", too_long)
    done = collect(layout, tmp_path / "submitted")
    assert done.copied == [] and done.refused == [f"root+{ASSIGNMENT}+{STAMP}+r1: not collected (File name too long)"]


def test_the_walk_bounds_folders_and_depth_as_it_bounds_files(tmp_path):
    from ste_course.untrusted import walk_own_tree

    (tmp_path / "s" / "a" / "b" / "c" / "d" / "e" / "f" / "g" / "h" / "i").mkdir(parents=True)
    (tmp_path / "s" / "a" / "b" / "c" / "d" / "e" / "f" / "g" / "h" / "ok.ipynb").write_text("{}")
    for n in range(5):
        (tmp_path / "s" / f"z{n}").mkdir()
    tree = walk_own_tree(tmp_path, ("s",), 100, 1000, max_files=14)  # 13 folders and 1 file
    assert tree.files == {"a/b/c/d/e/f/g/h/ok.ipynb": b"{}"}
    assert tree.left_out == [("a/b/c/d/e/f/g/h/i", "deeper than 8 folders")]
    fewer = walk_own_tree(tmp_path, ("s",), 100, 1000, max_files=13)  # the folders count too
    assert fewer.files == {} and ("a/b/c/d/e/f/g/h/ok.ipynb", "beyond the first 13 files and folders") in fewer.left_out


def test_a_folder_of_many_entries_is_read_only_so_far(tmp_path):
    """Red team, round 3: every entry of every folder was listed, sorted and kept, one left-out row
    each: hard links to one empty file cost a student no inode and no quota, so millions of names
    held gigabytes in root's collect (a MemoryError, which the per-submission OSError guard does not
    catch). The walk reads at most 4 x max_files entries and keeps at most MAX_LEFT_OUT rows."""
    from ste_course.untrusted import MAX_LEFT_OUT, walk_own_tree

    sub = tmp_path / "inbound" / "s+a+2026-01-01 00:00:00.000000 UTC"
    sub.mkdir(parents=True)
    (sub / "a.ipynb").write_bytes(b"{}")
    for i in range(3000):
        os.link(sub / "a.ipynb", sub / f"x{i:05d}")
    tree = walk_own_tree(tmp_path / "inbound", (sub.name,), 2**20, 2**24, 200)
    assert len(tree.files) == 200
    assert len(tree.left_out) == MAX_LEFT_OUT + 1
    assert any("more than 800 entries" in why for _, why in tree.left_out)
    assert tree.left_out[-1][0] == "..." and tree.left_out[-1][1].endswith("more left out")


def test_junk_in_inbound_is_read_as_a_stream_and_counted(layout, tmp_path):
    """Red team, round 3: inbound (anyone may create entries) was listed and sorted whole, one
    refused line per entry, in root's collect. Now it is read as a stream and at most
    MAX_REFUSED_ROWS lines are kept, the rest counted."""
    from ste_course.classroom.exchange import MAX_REFUSED_ROWS

    for i in range(MAX_REFUSED_ROWS + 250):
        (layout.inbound / f"junk-{i:05d}").touch()
    done = collect(layout, tmp_path / "submitted")
    assert len(done.refused) == MAX_REFUSED_ROWS + 1
    assert done.refused[-1] == "... and 250 more entries of inbound refused"
    assert all("not a submission folder" in line for line in done.refused[:-1])
