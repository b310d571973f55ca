"""Commands that only read the gradebook stay light (issue 26): ``ste-course feedback``,
``export`` and ``return-feedback`` import no TensorFlow and none of the machinery that starts a
grading worker (:mod:`ste_course.sandbox`), so they take a second or two, not TensorFlow's import.

One class is graded with a replaying executor (nothing runs, no TensorFlow here); each command then
runs in a fresh interpreter that reports, at exit, which of those modules it had imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ste_course.authoring.source import load_assignments
from ste_course.grading.run import grade

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_containment import SOURCE, Replay, _submit  # noqa: E402

HEAVY = ("tensorflow", "keras", "ste_utils", "ste_course.sandbox", "ste_course.inside.server")
# Runs the CLI; at exit (whatever the command returned) writes the heavy modules it imported on stderr.
RUN = ("import atexit, json, sys\n"
       "atexit.register(lambda: sys.stderr.write('\\nimported: ' + json.dumps("
       f"sorted(m for m in {HEAVY!r} if m in sys.modules)) + '\\n'))\n"
       "from ste_course.cli import main\n"
       "sys.exit(main(sys.argv[1:]))\n")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("light")
    subs, out = tmp / "submitted", tmp / "graded"
    _submit(subs, "ann")
    grade(subs, out, load_assignments(SOURCE), "s", sandbox=False, progress=False, executor=Replay())
    (subs / "ann" / "adv" / "submission_secret.txt").write_text("s3cret-of-ann")
    (tmp / "exchange" / "ste" / "feedback").mkdir(parents=True)
    return tmp, subs, out


def imported(args: list, cwd: Path) -> list:
    """The heavy modules ``ste-course ARGS`` imported (it must succeed)."""
    proc = subprocess.run([sys.executable, "-c", RUN, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (args, proc.stdout[-1000:], proc.stderr[-2000:])
    line = [l for l in proc.stderr.splitlines() if l.startswith("imported: ")][-1]
    return json.loads(line.removeprefix("imported: "))


@pytest.mark.parametrize("command", ["feedback", "export", "return-feedback"])
def test_a_command_that_reads_the_gradebook_imports_no_tensorflow_and_starts_no_worker(graded, command):
    tmp, subs, out = graded
    args = {"feedback": ["feedback", "--graded", out],
            "export": ["export", "--graded", out, "--output", tmp / "grades.csv"],
            "return-feedback": ["return-feedback", "--graded", out, "--submissions", subs,
                                "--exchange", tmp / "exchange", "--course", "ste"]}[command]
    assert imported(args, tmp) == []


def test_the_probe_reports_what_was_imported(graded):
    """The check itself can fail: a command run after importing the worker machinery is reported."""
    tmp, _, out = graded
    proc = subprocess.run([sys.executable, "-c", "import ste_course.sandbox\n" + RUN, "export", "--graded", str(out)],
                          cwd=tmp, capture_output=True, text=True, timeout=300)
    assert proc.stderr.splitlines()[-1] == 'imported: ["ste_course.inside.server", "ste_course.sandbox"]', proc.stderr
