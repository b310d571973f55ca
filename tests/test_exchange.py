"""The exchange between the hub's students and the grader (ste_course/classroom/exchange.py), without a
hub: nbgrader's real ``submit`` against a temporary exchange, and ``collect`` on hostile
inbound folders. (tests/e2e/test_hub.py checks the same as real users, in a browser.)"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ste_course.classroom.exchange import collect, prepare, publish

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
    assert stat.S_IMODE(os.stat(layout.inbound).st_mode) == 0o2773  # write, never list


def _fake_submission(layout, name: str, owner: int) -> Path:
    folder = layout.inbound / name
    folder.mkdir()
    (folder / f"{ASSIGNMENT}.ipynb").write_text("{}")
    (folder / "timestamp.txt").write_text(STAMP)
    os.chown(folder, owner, -1)
    return folder


def test_collect_takes_only_the_students_own_submissions(layout, tmp_path):
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
    _fake_submission(layout, f"root+{ASSIGNMENT}+{STAMP}+r1", 0)
    _fake_submission(layout, f"root+{ASSIGNMENT}+2026-11-30 10:00:00.000000 UTC+r0", 0)  # older
    _fake_submission(layout, f"nobody+{ASSIGNMENT}+{STAMP}+r2", 0)  # root submitting as nobody
    _fake_submission(layout, f"root+{ASSIGNMENT}+2026-12-02 10:00:00.000000 UTC+r3", nobody)  # and back
    os.symlink("/etc", layout.inbound / f"root+{ASSIGNMENT}+2026-12-03 10:00:00.000000 UTC+r4")
    done = collect(layout, tmp_path / "submitted")
    assert done.copied == [("root", ASSIGNMENT, STAMP)], done
    assert len(done.refused) == 3, done.refused
    target = tmp_path / "submitted" / "root" / ASSIGNMENT
    assert (target / "timestamp.txt").read_text() == STAMP
    assert not (tmp_path / "submitted" / "nobody").exists()
    again = collect(layout, tmp_path / "submitted")
    assert again.copied == [] and again.unchanged == [("root", ASSIGNMENT, STAMP)]
