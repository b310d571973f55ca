"""One file-mode policy (issue 21, attack 10): what ``ste-course grade`` writes is read by the
instructor and their group only. ``ste-course grade`` runs twice (the second run makes a backup
of the gradebook) with the ``Replay`` executor of ``test_containment`` (no TensorFlow), in a
folder every user can enter; then every path it wrote is tried as ``nobody``, a student with a
terminal on the hub."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from classroom import make_class  # noqa: E402
from test_containment import SOURCE, Replay  # noqa: E402

import ste_course.grading.run as run  # noqa: E402
from ste_course.cli.commands import main  # noqa: E402

# run as nobody: every path of argv[1:] that can be opened (files) or listed (folders)
TRY_ALL = """
import json, os, sys
found = []
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").close()
        found.append(path)
    except OSError:
        pass
print(json.dumps(found))
"""


@pytest.fixture
def graded(monkeypatch):
    if os.geteuid() != 0:
        pytest.fail("the file-mode test runs a command as nobody: run it as root", pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="ste-modes-"))
    os.chmod(base, 0o755)  # every user may enter: what the grader writes must keep them out
    umask = os.umask(0o022)  # a root shell's usual umask
    try:
        subs, out = base / "submitted", base / "graded"
        make_class(SOURCE, subs, {"ann": "complete", "bo": "blank"})
        monkeypatch.setattr(run, "LocalExecutor", lambda *args, **kwargs: Replay())
        for force in ([], ["--force"]):
            code = main(["--solutions", str(SOURCE), "grade", str(subs), "--out", str(out), "--no-sandbox",
                         "--secret-file", str(base / "secret"), "--jobs", "1", "--judges", "0", *force])
            assert code == 0
        yield out
    finally:
        os.umask(umask)
        shutil.rmtree(base)


def test_a_student_reads_nothing_the_grader_wrote(graded):
    paths = [str(graded)] + [str(p) for p in graded.rglob("*")]
    assert {"gradebook.db", "grades.csv", "backups", "feedback"} <= {Path(p).name for p in paths}
    assert any(Path(p).parent.name == "backups" for p in paths), "no backup was made"
    out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                          sys.executable, "-c", TRY_ALL, *paths], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    # and not by the folder alone: no file or folder is left to every user, should it be moved
    for path in paths:
        mode = os.lstat(path).st_mode
        assert not stat.S_IMODE(mode) & 0o007, f"{path} is {stat.filemode(mode)}"
