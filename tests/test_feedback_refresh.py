"""Feedback pages are a view of the gradebook (issues 12 and 15): a hand grade and comment
entered after grading reach the student's page with `ste-course feedback` and
`ste-course return-feedback`, sanitised; grades.csv and the summary show what still waits for a
hand grade; a course's own checks are in the re-grade fingerprint and reach the hub's kernels.

``test_a_hand_grade_reaches_the_page_the_csv_and_the_exchange`` grades the bring-your-own
fixture (asserts and a written answer) for real, without the sandbox, on one fork server (as
tests/test_term.py does); the others run the parent's stages only (no TensorFlow in this
process).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nbgrader.api import Gradebook
from nbgrader.utils import notebook_hash

from ste_course.authoring.source import load_assignments
from ste_course.classroom.exchange import Layout, return_feedback
from ste_course.classroom.hub import Settings, install_checks
from ste_course.cli import main
from ste_course.cli.commands import _summary
import ste_course.grading.fingerprint as fingerprint
import ste_course.grading.run as run
from ste_course.grading.run import grade
from ste_course.specs.declarative import CHECKS_ENV

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from classroom import make_class  # noqa: E402
from test_containment import SOURCE, Replay, _submit  # noqa: E402
from test_hub_setup import spawner_environment  # noqa: E402
from test_term import OneWorker  # noqa: E402

HOSTILE = ("Good idea. <script>alert(1)</script><img src=x onerror=alert(2)> "
           "<a href=\"javascript:alert(3)\">more</a> & see $n^2$")


@pytest.fixture(autouse=True)
def _alembic_on_path(monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture(autouse=True)
def _checks_held_still(monkeypatch):
    """The package's checking code as it is when the test starts (others may edit the tree while
    the tests run); the course's checks folder is fingerprinted for real."""
    frozen = fingerprint.code_fingerprint()
    monkeypatch.setattr(run, "code_fingerprint", lambda root=None: frozen)


def _csv(out: Path) -> dict:
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


def _hand_grade(out: Path, score: float, comment: str) -> None:
    """What formgrader saves for the written answer ``why``, through nbgrader's API alone."""
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        gb.find_grade("why", "ps1", "ps1", "ann").manual_score = score
        gb.find_comment("why", "ps1", "ps1", "ann").manual_comment = comment
        gb.db.commit()


def _assert_sanitised(page: str) -> None:
    """No element of the page runs anything: no script or img, no event handler, no
    ``javascript:`` URL (tags and attributes as a browser parses them); the comment is text."""
    from html.parser import HTMLParser

    found = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

    Tags().feed(page)
    assert not [t for t, _ in found if t in ("script", "img", "iframe", "object", "embed")]
    assert not [(t, a) for t, attrs in found for a in attrs if a.startswith("on")]
    assert not [v for _, attrs in found for v in attrs.values() if "javascript:" in (v or "").lower()]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the comment is shown as text


def test_a_hand_grade_reaches_the_page_the_csv_and_the_exchange(tmp_path, capsys):
    shutil.copytree(HERE / "fixtures" / "byo", tmp_path / "solutions")
    subs, out = tmp_path / "submitted", tmp_path / "graded"
    make_class(tmp_path / "solutions", subs, {"ann": "complete"})
    worker = OneWorker()
    try:
        grade(subs, out, load_assignments(tmp_path / "solutions"), "secret", sandbox=False, progress=False,
              executor=worker)
    finally:
        worker.close()
    page_path = out / "feedback" / "ann" / "ps1" / "ps1.html"
    row = _csv(out)["ann"]
    assert (float(row["score"]), float(row["max_score"]), row["needs_manual"]) == (4.0, 5.0, "why")
    page = page_path.read_text()
    assert "0 / 1 point so far, waiting for a hand grade" in page and "(1 point waiting for a hand grade)" in page
    _summary(out / "grades.csv", 1)
    summary = capsys.readouterr().out
    assert "4/5!" in summary and "! = waiting for a hand grade (1 notebooks" in summary
    # how to open formgrader on it (`nbgrader formgrader` only lists nbgrader's subcommands)
    assert f"make lab-instructor GRADED={out}" in summary and "nbgrader formgrader" not in summary, summary
    assert "nbgrader formgrader" not in (out / "nbgrader_config.py").read_text()

    # formgrader: half a point and a hostile comment; the page is stale until it is rendered again
    _hand_grade(out, 0.5, HOSTILE)
    assert "Good idea" not in page_path.read_text()
    assert main(["feedback", "--graded", str(out)]) == 0
    page = page_path.read_text()
    assert "0.5 / 1 points <span class=\"manual\">(graded by hand)</span>" in page
    assert "Score: 4.5 / 5" in page and "waiting for a hand grade" not in page
    assert "Grader&#39;s comment: Good idea." in page or "Grader's comment: Good idea." in page
    _assert_sanitised(page)
    row = _csv(out)["ann"]  # grades.csv written again from the same gradebook
    assert (float(row["score"]), row["manual"], row["needs_manual"]) == (4.5, "True", "")
    elsewhere = tmp_path / "pages"
    assert main(["feedback", "--graded", str(out), "--out", str(elsewhere)]) == 0
    assert (elsewhere / "ann" / "ps1" / "ps1.html").read_text() == page

    # return-feedback renders again before returning: a later hand grade reaches the exchange
    _hand_grade(out, 1.0, "Full marks after all.")
    (subs / "ann" / "ps1" / "submission_secret.txt").write_text("s3cret-of-ann")
    layout = Layout(tmp_path / "exchange", "ste")
    layout.feedback.mkdir(parents=True)
    done = return_feedback(out, subs, layout)
    assert (done.returned, done.problems, done.rendered) == ([("ann", "ps1", "ps1")], [], 1)
    returned = (layout.feedback / f"{notebook_hash(secret='s3cret-of-ann', notebook_id='ps1')}.html").read_text()
    assert "1 / 1 points" in returned and "Full marks after all." in returned and "Score: 5 / 5" in returned
    assert float(_csv(out)["ann"]["score"]) == 5.0


def test_a_page_without_its_stored_evidence_still_shows_the_gradebook(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    _submit(subs, "ann")
    grade(subs, out, load_assignments(SOURCE), "s", sandbox=False, progress=False, executor=Replay())
    (out / "results" / "ann" / "adv" / "adv.json").unlink()
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        gb.find_grade("test_gradient", "adv", "adv", "ann").manual_score = 2
        gb.find_comment("answer", "adv", "adv", "ann").manual_comment = "<b onclick=x()>see me</b>"
        gb.db.commit()
    from ste_course.record.recorder import refresh_feedback

    done = refresh_feedback(out)
    assert done.rendered == [("ann", "adv", "adv")]
    assert len(done.problems) == 1 and "no stored evidence" in done.problems[0]
    page = (out / "feedback" / "ann" / "adv" / "adv.html").read_text()
    assert "Score: 2 / 5" in page and "onclick" not in page


# ------------------------------------------------------------------ the course's checks folder
CHECK = '[levels]\nkind = "scalar"\nreference = "refs.py:levels"\n'


def _scratch_course(root: Path) -> Path:
    shutil.copytree(SOURCE, root / "solutions")
    (root / "checks").mkdir()
    (root / "checks" / "levels.toml").write_text(CHECK)
    (root / "checks" / "refs.py").write_text("def levels():\n    return 4\n")
    return root / "solutions"


def test_editing_a_course_check_grades_again_without_force(tmp_path):
    solutions = _scratch_course(tmp_path / "course")
    subs, out = tmp_path / "subs", tmp_path / "out"
    for student in ("ann", "bob"):
        _submit(subs, student)

    def run():
        replay = Replay()
        grade(subs, out, load_assignments(solutions), "s", sandbox=False, progress=False, executor=replay)
        return sorted(r["id"].split("/")[0] for r in replay.runs)

    assert run() == ["ann", "bob"]
    assert run() == []
    (tmp_path / "course" / "checks" / "refs.py").write_text("def levels():\n    return 8\n")  # a reference
    assert run() == ["ann", "bob"]
    assert run() == []
    (tmp_path / "course" / "checks" / "levels.toml").write_text(CHECK + 'rtol = 1e-3\n')  # a declaration
    assert run() == ["ann", "bob"]
    (tmp_path / "course" / "checks" / "__pycache__").mkdir()
    (tmp_path / "course" / "checks" / "__pycache__" / "refs.cpython-311.pyc").write_bytes(b"cache")
    assert run() == []  # a cache is not a check
    shutil.copytree(tmp_path / "course", tmp_path / "moved")  # the same checks elsewhere: nothing to do
    solutions = tmp_path / "moved" / "solutions"
    assert run() == []
    shutil.copytree(tmp_path / "moved" / "checks", tmp_path / "moved" / "other")
    (tmp_path / "moved" / "other" / "refs.py").write_text("def levels():\n    return 16\n")
    (tmp_path / "moved" / "ste_course.toml").write_text('[course]\nchecks = "other"\n')  # the folder it names
    assert run() == ["ann", "bob"]
    assert fingerprint.course_checks(load_assignments(solutions)) == (tmp_path / "moved" / "other").resolve()


# ------------------------------------------------------------------ the hub's kernels
LOOKUP = ("from ste_course.specs.base import get_spec\n"
          "try:\n    print(get_spec('levels').name)\nexcept KeyError:\n    print('unknown')\n")


def _kernel_lookup(cwd: Path, env: dict) -> str:
    """What a student's kernel finds for the course check ``levels`` (the lookup Validate uses)."""
    env = {k: v for k, v in os.environ.items() if k != CHECKS_ENV} | env
    out = subprocess.run([sys.executable, "-c", LOOKUP], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_the_hubs_kernels_find_the_courses_checks(tmp_path):
    _scratch_course(tmp_path / "course")
    state = tmp_path / "state"
    state.mkdir()
    home = tmp_path / "home" / "ann"
    (home / "exercises" / "adv").mkdir(parents=True)
    (home / "course").mkdir()
    assert _kernel_lookup(home / "exercises" / "adv", {}) == "unknown"  # a student's home has no checks

    checks = install_checks(tmp_path / "course", state)
    assert checks == str(state / "checks") and sorted(os.listdir(checks)) == ["levels.toml", "refs.py"]
    assert {oct(os.stat(Path(checks) / f).st_mode & 0o777) for f in os.listdir(checks)} == {"0o644"}
    settings = Settings(students=["ann"], instructor="teacher", course_id="ste", graders_group="g",
                        exchange="/x", state=str(state), venv="/v", proxy="/p", ip="127.0.0.1", port=1,
                        hub_port=2, proxy_api_port=3, student_config="/s", instructor_config="/i", checks=checks)
    env = spawner_environment(settings, "ann", tmp_path)  # a student's server
    assert env[CHECKS_ENV] == checks
    assert _kernel_lookup(home / "exercises" / "adv", {CHECKS_ENV: env[CHECKS_ENV]}) == "levels"

    # a course without a checks folder: the old copy goes, the servers get no variable
    shutil.rmtree(tmp_path / "course" / "checks")
    assert install_checks(tmp_path / "course", state) == "" and not (state / "checks").exists()
    settings.checks = ""
    assert CHECKS_ENV not in spawner_environment(settings, "ann", tmp_path)
