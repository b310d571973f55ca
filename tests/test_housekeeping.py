"""Housekeeping (issue 27): ``ste-course remove student|assignment`` on a small gradebook (written
as ``ste-course grade`` writes it, no grading run), and ``ste-course exchange list|purge`` on a
temporary exchange with hostile inbound entries (as root, as tests/test_exchange.py)."""

from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path

import pytest
from nbgrader.api import Gradebook
from nbgrader.utils import notebook_hash

from ste_course.classroom.exchange import ExchangeError, collect
from ste_course.classroom.housekeeping import LATEST, OLDER, REFUSED, purge, survey
from ste_course.cli import main
from ste_course.record.prune import PruneError, remove
from ste_course.record.recorder import NotebookResult, Recorder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_exchange import layout  # noqa: E402,F401 (a fixture: a temporary exchange, 03_ste published)
from test_export_late import _course  # noqa: E402 (solutions/ of 01_backprop and 03_ste, one 10-point cell)

ASSIGNMENT = "03_ste"
STAMP = "2026-12-01 10:00:00.000000 UTC"
# ann: 01 graded 10/10, 03 never handed in; bo: never handed in anything
RESULTS = [("ann", "01_backprop", 10.0, "ok"), ("ann", "03_ste", 0.0, "missing"),
           ("bo", "01_backprop", 0.0, "missing"), ("bo", "03_ste", 0.0, "missing")]


@pytest.fixture(autouse=True)
def _alembic_on_path(monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture(scope="module")
def _graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        sources = _course(root)
        recorder = Recorder(root / "graded", None, sources)
        for student, assignment, points, status in RESULTS:
            recorder.record(NotebookResult(student, assignment, assignment, points, 10.0, status, "",
                                           cells=[{"grade_id": "test", "points": points, "max_points": 10.0,
                                                   "messages": []}]), sources[assignment][0])
        recorder.write_csv()
        recorder.close()
    return root / "graded"


@pytest.fixture
def graded(_graded, tmp_path):
    shutil.copytree(_graded, tmp_path / "graded")
    return tmp_path / "graded"


def _csv(graded: Path) -> set:
    with (graded / "grades.csv").open(encoding="utf-8") as fh:
        return {(r["student_id"], r["assignment"]) for r in csv.DictReader(fh)}


def test_removing_an_assignment_nobody_handed_in_needs_no_force(graded):
    assert (graded / "feedback" / "ann" / "03_ste").is_dir()
    done = remove(graded, "assignment", "03_ste")
    assert sorted(done.rows) == [("ann", "03_ste", "03_ste"), ("bo", "03_ste", "03_ste")]
    assert _csv(graded) == {("ann", "01_backprop"), ("bo", "01_backprop")}
    for folder in ("feedback", "autograded", "results"):
        assert not list((graded / folder).glob("*/03_ste")), folder
    assert not (graded / "source" / "03_ste").exists()
    assert (graded / "feedback" / "ann" / "01_backprop").is_dir()
    with Gradebook(f"sqlite:///{graded / 'gradebook.db'}") as gb:
        assert [a.name for a in gb.assignments] == ["01_backprop"]


def test_removing_graded_work_is_refused_without_force(graded):
    before = (graded / "grades.csv").read_text()
    with pytest.raises(PruneError, match=r"1 graded notebook.*ann 01_backprop 01_backprop: ok, 10/10.*--force"):
        remove(graded, "student", "ann")
    assert (graded / "grades.csv").read_text() == before and (graded / "feedback" / "ann").is_dir()
    with pytest.raises(PruneError, match="graded notebook"):
        remove(graded, "assignment", "01_backprop")
    done = remove(graded, "student", "ann", force=True)
    assert len(done.rows) == 2 and _csv(graded) == {("bo", "01_backprop"), ("bo", "03_ste")}
    for folder in ("feedback", "autograded", "results"):
        assert not (graded / folder / "ann").exists(), folder
    with Gradebook(f"sqlite:///{graded / 'gradebook.db'}") as gb:
        assert [s.id for s in gb.students] == ["bo"]
    from sqlalchemy import select

    from ste_course.record.gradebook import STATUS, open_gradebook
    gb = open_gradebook(f"sqlite:///{graded / 'gradebook.db'}")
    try:
        assert {r.student for r in gb.db.execute(select(STATUS))} == {"bo"}
    finally:
        gb.close()


def test_a_hand_grade_counts_as_a_grade(graded):
    with Gradebook(f"sqlite:///{graded / 'gradebook.db'}") as gb:
        grade = gb.find_grade("test", "03_ste", "03_ste", "bo")
        grade.manual_score = 3.0
        gb.db.commit()
    with pytest.raises(PruneError, match="bo 03_ste 03_ste: missing, 3/10"):
        remove(graded, "student", "bo")


def test_remove_says_what_it_did_and_refuses_unknown_names(graded, capsys):
    with pytest.raises(PruneError, match="no student 'zed'"):
        remove(graded, "student", "zed")
    with pytest.raises(PruneError, match="folder name"):
        remove(graded, "student", "../ann")
    assert main(["remove", "student", "ann", "--graded", str(graded)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["remove", "student", "bo", "--graded", str(graded), "--dry-run"]) == 0
    assert ("bo", "03_ste") in _csv(graded)
    assert main(["remove", "student", "bo", "--graded", str(graded)]) == 0
    out = capsys.readouterr().out
    assert "student bo: 2 notebook row(s)" in out and ("bo", "03_ste") not in _csv(graded)


# ---------------------------------------------------------------- the exchange
def _submission(layout, name: str, owner: int = 0, secret: str = "s3cret") -> Path:
    folder = layout.inbound / name
    folder.mkdir()
    (folder / f"{ASSIGNMENT}.ipynb").write_text("{}")
    (folder / "submission_secret.txt").write_text(secret)
    os.chown(folder, owner, -1)
    return folder


def test_the_list_agrees_with_collect_and_purge_removes_what_is_chosen(layout, tmp_path, capsys):
    old = _submission(layout, f"root+{ASSIGNMENT}+2026-11-30 10:00:00.000000 UTC+r0", secret="old")
    new = _submission(layout, f"root+{ASSIGNMENT}+{STAMP}+r1", secret="new")
    _submission(layout, f"nobody+{ASSIGNMENT}+{STAMP}+r2")  # root submitting as nobody
    _submission(layout, f"root+99_unpublished+{STAMP}+r3")
    _submission(layout, f"root+{ASSIGNMENT}+2999-01-01 00:00:00.000000 UTC+r4")  # named in the future
    os.mkfifo(layout.inbound / "a fifo")
    os.symlink("/etc", layout.inbound / f"root+{ASSIGNMENT}+2026-12-03 10:00:00.000000 UTC+r5")
    # a feedback page returned for the old submission
    page = notebook_hash(secret="old", notebook_id=ASSIGNMENT) + ".html"
    (layout.feedback / page).write_text("<p>old</p>")

    states = {e.name: e.state for e in survey(layout).entries}
    done = collect(layout, tmp_path / "submitted")
    assert [c[:2] for c in done.copied] == [("root", ASSIGNMENT)]
    assert sorted(n for n, s in states.items() if s == REFUSED) == sorted(
        ["a fifo", f"nobody+{ASSIGNMENT}+{STAMP}+r2", f"root+99_unpublished+{STAMP}+r3",
         f"root+{ASSIGNMENT}+2999-01-01 00:00:00.000000 UTC+r4",
         f"root+{ASSIGNMENT}+2026-12-03 10:00:00.000000 UTC+r5"])
    assert len(done.refused) == 5
    assert states[new.name] == LATEST
    assert states[old.name] == OLDER  # changed (ctime) before the new one

    assert main(["exchange", "list", "--exchange", str(layout.root), "--course", "c"]) == 0
    out = capsys.readouterr().out
    assert "was never published" in out and "in the future" in out and "inbound: 7 entries" in out

    with pytest.raises(ExchangeError, match="say what to purge"):
        purge(layout)
    dry = purge(layout, refused=True, dry_run=True)
    assert len(dry.inbound) == 5 and len(list(layout.inbound.iterdir())) == 7
    done = purge(layout, refused=True)
    assert sorted(p.name for p in layout.inbound.iterdir()) == sorted([old.name, new.name])
    assert Path("/etc/passwd").exists()  # the link went, not what it named
    done = purge(layout, students=["root"])
    assert list(layout.inbound.iterdir()) == [] and page in done.feedback
    assert not (layout.feedback / page).exists()
    done = purge(layout, assignments=[ASSIGNMENT], outbound=True)
    assert done.outbound == [ASSIGNMENT] and not (layout.outbound / ASSIGNMENT).exists()


def test_collect_says_what_it_left_out_and_grade_gives_it_as_the_reason(layout, tmp_path, capsys):
    """A FIFO named as the notebook and a file over the size limit: collect's summary names both
    with why, and grade's row for the notebook says it was left out, not just 'not submitted'."""
    from ste_course.classroom.exchange import MAX_FILE_BYTES
    from ste_course.grading.jobs import Job
    from ste_course.grading.steps import _missing_reason

    folder = layout.inbound / f"root+{ASSIGNMENT}+{STAMP}+r1"
    folder.mkdir()
    os.mkfifo(folder / f"{ASSIGNMENT}.ipynb")
    with open(folder / "data.bin", "wb") as big:
        big.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written
    (folder / "notes.txt").write_text("kept")
    done = collect(layout, tmp_path / "submitted")
    assert [c[:2] for c in done.copied] == [("root", ASSIGNMENT)]
    assert sorted(done.left_out) == [("root", ASSIGNMENT, f"{ASSIGNMENT}.ipynb", "a FIFO"),
                                     ("root", ASSIGNMENT, "data.bin", "larger than 20.0 MB")], done.left_out
    assert main(["collect", "--out", str(tmp_path / "again"), "--exchange", str(layout.root), "--course", "c"]) == 0
    out = capsys.readouterr()
    assert f"left out: root {ASSIGNMENT} {ASSIGNMENT}.ipynb: a FIFO" in out.err, out
    assert "2 file(s) left out" in out.out, out.out

    source = type("Source", (), {"assignment": ASSIGNMENT, "name": ASSIGNMENT})()
    reason = _missing_reason(Job("root", source, tmp_path / "submitted", "root"))
    assert reason == f"{ASSIGNMENT}.ipynb was not collected: a FIFO (ste-course collect leaves it out)", reason
