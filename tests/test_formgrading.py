"""Hand grading on the hub (issue 27): ``ste-course hub`` gives the instructor's formgrader the
class's real gradebook (ste_course/classroom/formgrading.py): the graded course folder (the
instructor's and the graders' group's, 2770), ``~/graded`` linking to it inside the server's
root, and an nbgrader configuration whose course root and gradebook are those. Run as root
(owners are set), with ``nobody`` as the instructor."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest
from traitlets.config.loader import PyFileConfigLoader

from ste_course.classroom.formgrading import GRADED_MODE, prepare_graded


@pytest.fixture
def nobody():
    if os.geteuid() != 0:
        pytest.fail("formgrading's set-up gives folders to the instructor: run it as root", pytrace=False)
    account = pwd.getpwnam("nobody")
    return account.pw_uid, account.pw_gid


def _load(config: Path, home: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(home))
    return PyFileConfigLoader("nbgrader_config.py", path=str(config)).load_config()


def test_formgrader_gets_the_graded_course_inside_the_instructors_root(tmp_path, nobody, monkeypatch):
    uid, gid = nobody
    home, graded, config = tmp_path / "home", tmp_path / "srv" / "graded", tmp_path / "config"
    home.mkdir()
    assert prepare_graded(graded, config, "ste", home, uid, gid) == []
    info = os.stat(graded)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (uid, gid, GRADED_MODE)
    assert os.readlink(home / "graded") == str(graded) and os.lstat(home / "graded").st_uid == uid
    loaded = _load(config, home, monkeypatch)
    root = loaded.CourseDirectory.root
    assert root == str(home / "graded") and not os.path.relpath(root, home).startswith("..")  # formgrader's test
    assert loaded.CourseDirectory.db_url == f"sqlite:///{graded}/gradebook.db"  # what grade --out ~/graded writes
    assert loaded.CourseDirectory.course_id == "ste"
    # again: idempotent, a term's files kept
    (graded / "grades.csv").write_text("kept")
    assert prepare_graded(graded, config, "ste", home, uid, gid) == []
    assert (graded / "grades.csv").read_text() == "kept"


def test_nothing_in_the_home_is_followed_or_replaced(tmp_path, nobody):
    uid, gid = nobody
    home, graded = tmp_path / "home", tmp_path / "graded"
    home.mkdir()
    (home / "graded").write_text("the instructor's own file")
    problems = prepare_graded(graded, tmp_path / "config", "ste", home, uid, gid)
    assert len(problems) == 1 and "not a link to" in problems[0], problems
    assert (home / "graded").read_text() == "the instructor's own file"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp_path / "linked")
    problems = prepare_graded(tmp_path / "linked", tmp_path / "config", "ste", home, uid, gid)
    assert "formgrader is not set up" in problems[0] and os.stat(elsewhere).st_uid == 0


def test_a_gradebook_root_wrote_is_named_as_a_problem(tmp_path, nobody):
    uid, gid = nobody
    home, graded = tmp_path / "home", tmp_path / "graded"
    home.mkdir()
    graded.mkdir()
    (graded / "gradebook.db").write_bytes(b"")
    problems = prepare_graded(graded, tmp_path / "config", "ste", home, uid, gid)
    assert len(problems) == 1 and "cannot save hand grades" in problems[0], problems


def test_the_graders_course_copy_is_theirs_to_read_and_no_one_elses(tmp_path, nobody):
    from ste_course.classroom.formgrading import install_course_copy

    _uid, gid = nobody
    repo = tmp_path / "repo"
    (repo / "solutions" / "03_ste").mkdir(parents=True)
    (repo / "solutions" / "03_ste" / "03_ste.ipynb").write_text("{}")
    (repo / "my_checks").mkdir()
    (repo / "my_checks" / "a.toml").write_text("")
    (repo / "ste_course.toml").write_text('[course]\nchecks = "my_checks"\n')
    (repo / "course").mkdir()  # not what grading reads: not copied
    target = install_course_copy(repo, tmp_path / "state" / "course", gid)
    assert sorted(p.name for p in target.iterdir()) == ["my_checks", "solutions", "ste_course.toml"]
    for path in [target, *target.rglob("*")]:
        info = os.lstat(path)
        mode = stat.S_IMODE(info.st_mode)
        assert (info.st_uid, info.st_gid) == (0, gid) and mode & 0o007 == 0, (path, oct(mode))
        assert mode == (0o2750 if path.is_dir() else 0o640), (path, oct(mode))
