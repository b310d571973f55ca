"""A whole term of grading (issue 12): the gradebook is the one record; re-grades, hand edits,
late work and exports stay consistent.

``test_simulated_term`` is docs/term.md's walk-through ("A simulated term") on a scratch course
(the adversarial fixture's one assignment, 2 + 3 points), graded for real by one fork server
without the sandbox (the sandbox is not what is tested here). The other tests run the parent's
stages only, with the ``Replay`` executor of ``test_containment`` (no TensorFlow).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from ste_course.authoring.source import load_assignments
import ste_course.grading.fingerprint as fingerprint
from ste_course.grading.jobs import GradeError
from ste_course.grading.late import LatePolicy
import ste_course.grading.run as run
from ste_course.grading.run import grade
from ste_course.record.export import export
from ste_course.sandbox import Limits, Worker

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from classroom import make_class  # noqa: E402
from test_containment import SOURCE, Replay, _ended, _notebook, _submit  # noqa: E402

SECRET = "term-secret-0123456789"
NEW_CELL = {"cell_type": "code", "execution_count": None, "outputs": [], "id": "test-again",
            "metadata": {"nbgrader": {"grade": True, "grade_id": "test_value_again", "locked": True, "points": 1,
                                      "schema_version": 3, "solution": False, "task": False}},
            "source": 'check(my_sign, "ste_sign/value")\n### BEGIN HIDDEN TESTS\n'
                      'check(my_sign, "ste_sign/value", hidden=True)\n### END HIDDEN TESTS'}


@pytest.fixture(autouse=True)
def _alembic_on_path(monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture(autouse=True)
def _checks_held_still(monkeypatch):
    """The checking code's fingerprint as it is when the test starts (the tree may be edited while
    the tests run); ``test_the_code_fingerprint_follows_the_checks_and_the_library`` tests the
    real one."""
    frozen = fingerprint.code_fingerprint()
    monkeypatch.setattr(run, "code_fingerprint", lambda root=None: frozen)


class OneWorker:
    """One fork server without the sandbox, booted once, running notebooks in this thread."""

    def __init__(self):
        self.worker = Worker(0, False, Limits())
        self.runs = []

    def run_all(self, runs, on_result):
        for i, run in enumerate(runs):
            self.runs.append(run["id"].split("/")[0])
            on_result(i, self.worker.run(run))

    def join(self):
        pass

    def close(self):
        self.worker.stop()


def _course(root: Path) -> Path:
    shutil.copytree(SOURCE, root / "solutions")
    return root / "solutions"


def _edit_source(solutions: Path, add: bool) -> None:
    """Add the graded cell ``test_value_again`` before the last cell, or take it out again."""
    path = solutions / "adv" / "adv.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"] = [c for c in nb["cells"] if c.get("id") != "test-again"]
    if add:
        nb["cells"].insert(-1, NEW_CELL)
    path.write_text(json.dumps(nb, indent=1))


def _csv(out: Path) -> dict:
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


def _gradebook(out: Path) -> dict:
    """What formgrader shows: each submission's score less its late penalty, and its maximum."""
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        return {s.student.id: (max(0.0, s.score - s.late_submission_penalty), s.max_score)
                for s in gb.assignment_submissions("adv")}


def _exports(out: Path) -> dict:
    return {fmt: list(csv.reader(io.StringIO(export(out, fmt)[0]))) for fmt in ("csv", "canvas", "moodle")}


def _agree(out: Path) -> dict:
    """The grades, checked to be the same in the gradebook, grades.csv and every export."""
    book = _gradebook(out)
    rows = _csv(out)
    assert {s: (float(r["score"]), float(r["max_score"])) for s, r in rows.items()} == book
    exports = _exports(out)
    assert {r[0]: (float(r[1]), float(r[2])) for r in exports["csv"][1:]} == {s: (v, v) for s, (v, _) in book.items()}
    assert {r[0]: float(r[5]) for r in exports["canvas"][2:]} == {s: v for s, (v, _) in book.items()}
    assert float(exports["canvas"][1][5]) == next(iter(book.values()))[1]
    assert {r[0]: float(r[2]) for r in exports["moodle"][1:]} == {s: v for s, (v, _) in book.items()}
    assert _exports(out) == exports  # exporting twice gives the same
    return {s: v for s, (v, _) in book.items()}


def test_simulated_term(tmp_path):
    solutions = _course(tmp_path)
    subs, out = tmp_path / "submitted", tmp_path / "graded"
    make_class(solutions, subs, {"ann": "complete", "bo": "blank", "cy": "complete"})
    (subs / "cy" / "adv" / "timestamp.txt").write_text("2026-12-03 10:00:00.000000 UTC")  # 2 started days late
    config = tmp_path / "ste_course.toml"
    config.write_text('[grading]\nlate_penalty_per_day = 0.1\n[due]\nadv = "2026-12-01 23:59:00"\n')
    worker = OneWorker()

    def run(**kwargs):
        worker.runs.clear()
        sources = load_assignments(solutions)
        grade(subs, out, sources, SECRET, sandbox=False, progress=False, executor=worker,
              late=LatePolicy.load(config, sources), **kwargs)
        return sorted(worker.runs)

    try:
        # 1. grade: cy loses 2 days x 0.1 x 5 points
        assert run() == ["ann", "bo", "cy"]
        assert _agree(out) == {"ann": 5.0, "bo": 0.0, "cy": 4.0}
        assert _csv(out)["cy"]["late"] == "True" and float(_csv(out)["cy"]["penalty"]) == 1.0
        assert run() == []  # nothing changed: nothing graded again
        # 2. fix the assignment (a graded cell added): every submission graded again, all out of 6
        _edit_source(solutions, add=True)
        assert run() == ["ann", "bo", "cy"]
        assert _agree(out) == {"ann": 6.0, "bo": 0.0, "cy": 4.8}
        assert {float(r["max_score"]) for r in _csv(out).values()} == {6.0}
        # 3. adjust by hand in formgrader (nbgrader's API): kept by a forced re-grade of the same submission
        with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
            gb.find_grade("test_value", "adv", "adv", "bo").manual_score = 1.5
            gb.db.commit()
        assert _gradebook(out)["bo"][0] == 1.5  # the next export has it, before any grading
        assert [r[1] for r in _exports(out)["csv"] if r[0] == "bo"] == ["1.5"]
        assert run(force=True) == ["ann", "bo", "cy"]
        assert _agree(out)["bo"] == 1.5 and _csv(out)["bo"]["manual"] == "True"
        assert "1.5 / 2 points" in (out / "feedback" / "bo" / "adv" / "adv.html").read_text()
        # 4. the cell taken out again: back to 5 points, the hand edit on another cell kept
        _edit_source(solutions, add=False)
        assert run() == ["ann", "bo", "cy"]
        assert _agree(out) == {"ann": 5.0, "bo": 1.5, "cy": 4.0}
        # 5. late work: a new policy grades again; a new timestamp grades that student again
        config.write_text('[grading]\nlate_penalty_per_day = 0.2\n[due]\nadv = "2026-12-01 23:59:00"\n')
        assert run() == ["ann", "bo", "cy"]
        assert _agree(out)["cy"] == 3.0
        (subs / "ann" / "adv" / "timestamp.txt").write_text("2026-12-02 00:30:00 UTC")
        assert run() == ["ann"]
        assert _agree(out)["ann"] == 4.0
        # 6. drop the hand edits
        assert run(force=True, drop_manual=True) == ["ann", "bo", "cy"]
        assert _agree(out) == {"ann": 4.0, "bo": 0.0, "cy": 3.0}
        assert _csv(out)["bo"]["manual"] == "False"
    finally:
        worker.close()
    assert SECRET.encode() not in (out / "gradebook.db").read_bytes()  # a fingerprint, never the secret


# ------------------------------------------------------------------ re-grading, without TensorFlow
def _replay_grade(subs, out, replay, solutions=SOURCE, **kwargs):
    kwargs.setdefault("secret", "s1")
    grade(subs, out, load_assignments(solutions), kwargs.pop("secret"), sandbox=False, progress=False,
          executor=replay, **kwargs)
    return sorted(run["id"].split("/")[0] for run in replay.runs)


def test_a_changed_secret_check_or_late_policy_grades_again(tmp_path, monkeypatch):
    subs, out = tmp_path / "subs", tmp_path / "out"
    for student in ("ann", "bob"):
        _submit(subs, student)
    policy = LatePolicy(due={"adv": LatePolicy.parse_time("2026-12-01 23:59:00")}, penalty_per_day=0.1)
    assert _replay_grade(subs, out, Replay(), late=policy) == ["ann", "bob"]
    assert _replay_grade(subs, out, Replay(), late=policy) == []
    assert _replay_grade(subs, out, Replay(), late=policy, secret="s2") == ["ann", "bob"]
    real = fingerprint.code_fingerprint()
    monkeypatch.setattr(run, "code_fingerprint", lambda: real + "-a check changed")
    assert _replay_grade(subs, out, Replay(), late=policy, secret="s2") == ["ann", "bob"]
    policy.penalty_per_day = 0.2
    assert _replay_grade(subs, out, Replay(), late=policy, secret="s2") == ["ann", "bob"]
    (subs / "bob" / "adv" / "timestamp.txt").write_text("2026-12-02 10:00:00 UTC")
    assert _replay_grade(subs, out, Replay(), late=policy, secret="s2") == ["bob"]
    assert _replay_grade(subs, out, Replay(), late=policy, secret="s2", force=True) == ["ann", "bob"]


def test_the_code_fingerprint_follows_the_checks_and_the_library(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real fingerprint
    root = Path(fingerprint.__file__).resolve().parents[2]
    for entry in fingerprint.GRADING_PACKAGES:
        shutil.copytree(root / entry, tmp_path / entry, ignore=shutil.ignore_patterns("__pycache__"))
    first = fingerprint.code_fingerprint(tmp_path)
    assert first == fingerprint.code_fingerprint(tmp_path)
    spec = tmp_path / "ste_course" / "specs" / "elementwise.py"
    spec.write_text(spec.read_text() + "\n# a changed tolerance\n")
    second = fingerprint.code_fingerprint(tmp_path)
    (tmp_path / "ste_utils" / "quantizers.py").write_text("# changed\n")
    assert len({first, second, fingerprint.code_fingerprint(tmp_path)}) == 3


def test_a_lost_worker_is_graded_again_on_the_next_run(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    for student in ("ann", "bob"):
        _submit(subs, student)

    def lost(run):
        if run["id"].startswith("bob/"):
            return {"status": "error", "reason": "the grading worker was lost (KilledWorker)", "events": []}
        return _ended(run, "hello")

    assert _replay_grade(subs, out, Replay(lost)) == ["ann", "bob"]
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        assert {r["student_id"]: r["status"] for r in csv.DictReader(f)} == {"ann": "ok", "bob": "error"}
    assert _replay_grade(subs, out, Replay()) == ["bob"]
    assert _replay_grade(subs, out, Replay()) == []


# ------------------------------------------------------------------ wrong layouts
def _swapped(subs):
    _submit(subs / "adv", "alice", name="adv.ipynb")  # subs/adv/alice/adv/adv.ipynb -> rename below
    (subs / "adv" / "alice" / "adv" / "adv.ipynb").rename(subs / "adv" / "alice" / "adv.ipynb")
    (subs / "adv" / "alice" / "adv").rmdir()


LAYOUTS = {
    "swapped": (_swapped, "found adv/alice/adv.ipynb: assignment and student swapped?"),
    "flat": (lambda subs: (subs.mkdir(), (subs / "alice.ipynb").write_text("{}")), "found alice.ipynb: flat files"),
    "one student": (lambda subs: _submit(subs.parent, subs.name), "found adv/adv.ipynb: this looks like one student's"),
    "unknown assignment": (lambda subs: (subs / "alice" / "hw1").mkdir(parents=True)
                           or (subs / "alice" / "hw1" / "adv.ipynb").write_text("{}"), "hw1 is not an assignment"),
    "empty": (lambda subs: subs.mkdir(), "found no notebook at all"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_wrong_layout_fails_saying_what_was_expected_and_found(tmp_path, layout):
    make, message = LAYOUTS[layout]
    subs = tmp_path / "subs"
    make(subs)
    replay = Replay()
    with pytest.raises(GradeError) as err:
        _replay_grade(subs, tmp_path / "out", replay)
    assert "expected <student>/<assignment>/<notebook>.ipynb" in str(err.value) and message in str(err.value)
    assert replay.runs == [] and not (tmp_path / "out").exists()


def test_the_command_exits_non_zero_on_a_wrong_layout(tmp_path, capsys):
    from ste_course.cli import main

    _swapped(tmp_path / "subs")
    code = main(["--solutions", str(SOURCE), "grade", str(tmp_path / "subs"), "--no-sandbox",
                 "--out", str(tmp_path / "out"), "--secret-file", str(tmp_path / "secret"),
                 "--config", str(tmp_path / "none.toml")])
    assert code == 2 and "assignment and student swapped?" in capsys.readouterr().err


# ------------------------------------------------------------------ feedback
PAYLOADS = ['<script>alert("md")</script>', '<img src=x onerror="alert(1)">', '[click](javascript:alert(2))',
            '<a href="javascript:alert(3)">x</a>', '<svg onload="alert(4)"></svg>', '<style>body{display:none}</style>',
            '<iframe src="https://example.org"></iframe>', '<div onclick="alert(5)">d</div>']


def _parsed(page: str) -> tuple:
    """The element names and the (name, value) attributes of ``page``, as a browser parses it."""
    from html.parser import HTMLParser

    tags, attributes = set(), []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.add(tag)
            attributes.extend(attrs)

    Parser().feed(page)
    return tags, attributes


def test_feedback_renders_markdown_and_maths_and_is_sanitised(tmp_path):
    """A written answer (a markdown solution cell, as nbgrader's manually graded answers) with
    maths and payloads, and a payload in the output."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    solutions = _course(tmp_path)
    source_nb = json.loads((solutions / "adv" / "adv.ipynb").read_text())
    explain = {"cell_type": "markdown", "id": "explain", "source": "### BEGIN SOLUTION\nThe model answer.\n### END SOLUTION",
               "metadata": {"nbgrader": {"grade": True, "grade_id": "explain", "locked": False, "points": 1,
                                         "schema_version": 3, "solution": True, "task": False}}}
    source_nb["cells"].insert(3, explain)
    (solutions / "adv" / "adv.ipynb").write_text(json.dumps(source_nb))
    nb = _notebook("print('<script>alert(\"out\")</script><img src=x onerror=alert(6)>')\n")
    answer = dict(explain, source="## My notes\n\nThe **STE** passes $\\frac{\\partial L}{\\partial x}$ where "
                                   "$|x| \\le 1$:\n\n$$g = \\mathbb{1}_{|x|\\le 1}\\, u$$\n\n" + "\n\n".join(PAYLOADS))
    nb["cells"].insert(3, answer)
    _submit(subs, "ann", nb)
    replay = Replay(lambda run: _ended(run, '<script>alert("out")</script><img src=x onerror=alert(6)>'))
    _replay_grade(subs, out, replay, solutions)
    page = (out / "feedback" / "ann" / "adv" / "adv.html").read_text(encoding="utf-8")
    body = page.split("<body>", 1)[1]
    assert "<h2" in body and "<strong>STE</strong>" in body  # markdown rendered
    assert "<mfrac>" in body and 'display="block"' in body  # maths as MathML
    assert 'highlight hl-python"' in body and '<span class="k">def</span>' in body  # code highlighted (nbconvert writes class=" highlight ...")
    assert "Student: <b>ann</b>" in body and "<h1>adv / adv</h1>" in body  # who and what
    assert "test_value" in body and "0 / 2" in body and "0 / 3" in body and "0 / 1" in body  # each part
    tags, attributes = _parsed(body)
    assert not tags & {"script", "iframe", "svg", "style", "img", "object", "embed", "form"}, tags
    assert not [a for a in attributes if a[0].startswith("on") or "javascript:" in (a[1] or "").lower()
                or a[0] in ("style", "srcdoc")], attributes
    assert "&lt;script&gt;alert(\"out\")" in body  # the output's payload is shown as text
    assert "Content-Security-Policy" in page and "script-src" not in page.split("</head>")[0].replace(
        "default-src 'none'", "")
    hidden = 'check(my_sign, "ste_sign/value", hidden=True)'
    assert hidden not in page and "HIDDEN" not in page
