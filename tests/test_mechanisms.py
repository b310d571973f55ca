"""One helper per mechanism, its hard cases tested once, and no second copy of it in the package:
atomic writes, staging copies and user lookups (``ste_course/files.py``), reading what a student
controls (``untrusted.read_own`` / ``read_own_tree``), a notebook's ``error`` row
(``grading.steps.error_result``) and a command's known errors (``cli.errors.known_errors``)."""

from __future__ import annotations

import argparse
import ast
import os
import stat
import sys
import types
from pathlib import Path

import pytest

import ste_course
from ste_course import files
from ste_course.cli.errors import known_errors
from ste_course.untrusted import NotOwnFile, read_own, read_own_tree

PACKAGE = Path(ste_course.__file__).resolve().parent


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ------------------------------------------------------------------ atomic write
def test_atomic_write_replaces_the_file_with_the_policy_mode_and_syncs_it(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "grades.csv"
    target.write_text("old")
    target.chmod(0o666)
    files.atomic_write(target, "new ü")
    assert target.read_text(encoding="utf-8") == "new ü" and _mode(target) == files.PRIVATE == 0o600
    assert synced, "the bytes are flushed to disk before the rename"
    files.atomic_write(tmp_path / "deep" / "page.html", b"<p>", files.SHARED, parents=True)
    assert _mode(tmp_path / "deep" / "page.html") == 0o644
    files.atomic_write(target, "mine", owner=os.getuid())
    assert os.stat(target).st_uid == os.getuid()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "grades.csv"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "result.json"
    target.write_text("old")

    def fail(*args):
        raise OSError(f"injected: {failing} failed")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="injected"):
        files.atomic_write(target, "new")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"] and target.read_text() == "old"


# ------------------------------------------------------------------ staging copy
def test_replace_tree_swaps_the_new_tree_in_with_its_modes(tmp_path):
    source = tmp_path / "exercises" / "03_ste"
    (source / ".ipynb_checkpoints").mkdir(parents=True)
    (source / "03_ste.ipynb").write_text("{}")
    (source / ".ipynb_checkpoints" / "x.ipynb").write_text("{}")
    outbound = tmp_path / "outbound"
    (outbound / "03_ste").mkdir(parents=True)
    (outbound / "03_ste" / "stale.ipynb").write_text("old")
    files.copy_tree(source, outbound / "03_ste", files.SHARED_DIR, files.SHARED, ignore=files.COPY_IGNORE)
    assert sorted(p.name for p in (outbound / "03_ste").iterdir()) == ["03_ste.ipynb"]
    assert _mode(outbound / "03_ste") == 0o755 and _mode(outbound / "03_ste" / "03_ste.ipynb") == 0o644
    assert [p.name for p in outbound.iterdir()] == ["03_ste"], "no staging folder is left"


def test_replace_tree_replaces_a_link_without_following_it(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not ours")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "checks").symlink_to(elsewhere)
    files.replace_tree(tmp_path / "state" / "checks", lambda folder: (folder.mkdir(), (folder / "a.toml").write_text("")))
    assert not (tmp_path / "state" / "checks").is_symlink()
    assert [p.name for p in (tmp_path / "state" / "checks").iterdir()] == ["a.toml"]
    assert (elsewhere / "keep.txt").read_text() == "not ours"
    assert _mode(tmp_path / "state" / "checks") == files.PRIVATE_DIR


def test_a_failed_staging_copy_removes_the_staging_folder_and_keeps_the_target(tmp_path):
    target = tmp_path / "submitted" / "ann" / "03_ste"
    target.mkdir(parents=True)
    (target / "03_ste.ipynb").write_text("graded before")

    def fill(folder):
        folder.mkdir()
        (folder / "half.ipynb").write_text("half")
        raise OSError("injected: disk full")

    with pytest.raises(OSError, match="disk full"):
        files.replace_tree(target, fill)
    assert [p.name for p in target.parent.iterdir()] == ["03_ste"], "the staging folder is removed"
    assert [p.name for p in target.iterdir()] == ["03_ste.ipynb"]


# ------------------------------------------------------------------ reading what a student controls
def test_read_own_refuses_a_link_at_any_level(tmp_path):
    root = tmp_path / "submitted"
    (root / "ann" / "03_ste").mkdir(parents=True)
    (root / "ann" / "03_ste" / "03_ste.ipynb").write_text("{}")
    (root / "bob").symlink_to(root / "ann")  # a parent folder that is a link
    (root / "ann" / "04").symlink_to(root / "ann" / "03_ste")
    assert read_own(root, ("ann", "03_ste", "03_ste.ipynb"), 100) == b"{}"
    for parts in [("bob", "03_ste", "03_ste.ipynb"), ("ann", "04", "03_ste.ipynb")]:
        with pytest.raises(NotOwnFile, match="is a link"):
            read_own(root, parts, 100)
    with pytest.raises(NotOwnFile, match="the limit is 1 bytes"):
        read_own(root, ("ann", "03_ste", "03_ste.ipynb"), 1)


def test_read_own_tree_keeps_only_the_students_own_regular_files(tmp_path):
    inbound = tmp_path / "inbound"
    folder = inbound / "ann+03_ste+2026-12-01"
    (folder / "sub").mkdir(parents=True)
    (folder / "03_ste.ipynb").write_text("{}")
    (folder / "sub" / "notes.txt").write_text("mine")
    (folder / ".hidden").write_text("x")
    (folder / "big.bin").write_bytes(b"x" * 50)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "answers.txt").write_text("not theirs")
    (folder / "linked_dir").symlink_to(secret)
    (folder / "sub" / "linked_file").symlink_to(secret / "answers.txt")
    os.mkfifo(folder / "pipe")  # never waited on
    got = read_own_tree(inbound, (folder.name,), file_limit=20, total_limit=100, max_files=10)
    assert got == {"03_ste.ipynb": b"{}", "sub/notes.txt": b"mine"}
    assert len(read_own_tree(inbound, (folder.name,), 20, 100, max_files=1)) == 1
    with pytest.raises(NotOwnFile, match="larger than"):
        read_own_tree(inbound, (folder.name,), 20, total_limit=5, max_files=10)
    (inbound / "bob+03_ste+2026-12-01").symlink_to(folder)
    with pytest.raises(NotOwnFile, match="is a link"):
        read_own_tree(inbound, ("bob+03_ste+2026-12-01",), 20, 100, 10)


def test_the_exchange_reads_what_students_control_through_read_own(tmp_path):
    """A student folder of ``submitted/`` that is a link gives no submission secret, so no
    feedback is returned under it (before: the link was followed)."""
    from ste_course.classroom import exchange

    graded, submitted = tmp_path / "graded", tmp_path / "submitted"
    (graded / "feedback" / "bob" / "03_ste").mkdir(parents=True)
    (graded / "feedback" / "bob" / "03_ste" / "03_ste.html").write_text("<p>")
    (tmp_path / "elsewhere" / "03_ste").mkdir(parents=True)
    (tmp_path / "elsewhere" / "03_ste" / "submission_secret.txt").write_text("secret")
    submitted.mkdir()
    (submitted / "bob").symlink_to(tmp_path / "elsewhere")
    layout = exchange.Layout(tmp_path / "exchange", "ste")
    layout.feedback.mkdir(parents=True)
    done = exchange.return_feedback(graded, submitted, layout, refresh=False)
    assert not done.returned and "no submission_secret.txt" in done.problems[0]
    assert not list(layout.feedback.iterdir())


# ------------------------------------------------------------------ user lookup
def test_user_and_group_lookups_say_none_for_names_that_do_not_exist():
    assert files.user("root").pw_uid == 0 and files.user_name(0) == "root"
    assert files.group("root").gr_gid == 0
    assert files.user("ste-course-no-such-user") is None and files.group("ste-course-no-such-group") is None
    assert files.user_name(2**31 - 7) is None


# ------------------------------------------------------------------ the error row
def test_every_error_row_is_built_by_one_function():
    from ste_course.authoring.source import load_assignments
    from ste_course.grading.jobs import Job
    from ste_course.grading.steps import error_result, guarded, internal_error

    source = next(iter(load_assignments(PACKAGE.parent / "solutions").values()))[0]
    job = Job("ann", source, Path("/nonexistent"), "ann")
    row = error_result(job, "why", source_sha256="abc")
    assert (row.status, row.score, row.max_score, row.reason, row.source_sha256) == \
        ("error", 0.0, source.max_score, "why", "abc")
    assert internal_error(job, "judging", ValueError("bad\x1b[2J")).reason == \
        "internal grading error while judging: ValueError: bad\\x1b[2J"
    assert guarded(job, "recording", lambda: 1 / 0).reason.startswith("internal grading error while recording: ZeroDivisionError")


# ------------------------------------------------------------------ the command wrapper
def test_a_known_error_is_one_line_and_exit_2_any_other_keeps_its_traceback(capsys, monkeypatch):
    lazy = types.ModuleType("ste_course_lazy_errors")

    class LazyError(Exception):
        pass

    lazy.LazyError = LazyError

    @known_errors(FileNotFoundError, "ste_course_lazy_errors.LazyError")
    def cmd_publish(args):
        raise args.error

    args = argparse.Namespace(command="publish", error=FileNotFoundError("no folder\nat /x"))
    assert cmd_publish(args) == 2
    assert capsys.readouterr().err == "ste-course publish: no folder\\x0aat /x\n"  # one line, escaped
    args.error = LazyError("said")
    with pytest.raises(LazyError):  # its module was never imported: the name does not match
        cmd_publish(args)
    monkeypatch.setitem(sys.modules, "ste_course_lazy_errors", lazy)
    assert cmd_publish(args) == 2 and capsys.readouterr().err == "ste-course publish: said\n"
    args.error = KeyError("a bug")
    with pytest.raises(KeyError):
        cmd_publish(args)


def _functions(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]


def _defined(module: str, name: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    path = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
    return any(isinstance(n, ast.ClassDef) and n.name == name for n in ast.walk(ast.parse(path.read_text())))


def test_every_command_leaves_its_known_errors_to_the_wrapper():
    """No command function says an error and returns 2 itself; every error class a command names
    exists."""
    from ste_course.cli import classroom, commands

    wrapped = 0
    for module in (commands, classroom):
        for fn in _functions(Path(module.__file__)):
            if not fn.name.startswith("cmd_"):
                continue
            returns_2 = [n for n in ast.walk(fn) if isinstance(n, ast.Return)
                         and isinstance(n.value, ast.Constant) and n.value.value == 2]
            assert not returns_2, f"{module.__name__}.{fn.name} returns 2 itself: use cli.errors.known_errors"
            known = getattr(getattr(module, fn.name), "known", ())
            wrapped += bool(known)
            for item in known:
                if isinstance(item, str):
                    owner, _, name = item.rpartition(".")
                    assert _defined(owner, name), f"{fn.name} names {item}, which does not exist"
    assert wrapped >= 8


# ------------------------------------------------------------------ no second copy of a mechanism
# call -> the one module allowed to make it (inside/ runs in the sandbox: its own rules). Reading
# what a student controls has no call of its own to look for (O_NOFOLLOW also guards lock files):
# the exchange's and the grader's readers are tested to go through untrusted.read_own above.
MECHANISMS = {
    "tempfile.mkstemp": "files.py", "tempfile.mkdtemp": "files.py", "os.replace": "files.py",
    "os.rename": "files.py", "pwd.getpwnam": "files.py", "pwd.getpwuid": "files.py",
    "grp.getgrnam": "files.py",
}


def test_no_mechanism_is_written_twice():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("inside/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                name = f"{node.value.id}.{node.attr}"
                if name in MECHANISMS and MECHANISMS[name] != rel:
                    found.append(f"{rel}:{node.lineno} {name}")
    assert not found, "use the helper (ste_course/files.py, untrusted.read_own): " + ", ".join(found)


def test_only_error_result_builds_an_error_row():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for fn in _functions(path):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "NotebookResult" and any(
                        isinstance(a, ast.Constant) and a.value == "error"
                        for a in [*node.args, *(k.value for k in node.keywords)]):
                    found.append(f"{path.relative_to(PACKAGE)}:{fn.name}")
    assert found == ["grading/steps.py:error_result"], found
