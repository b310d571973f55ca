"""One sandboxed grading run of a class of hostile and faulty submissions (see ``cases.py``).

Asserts every student's grade and status, that the instructor's files, the canary in the
instructor's home and the other submissions are byte-identical afterwards, that the gradebook,
``grades.csv`` and feedback are complete and leak no hidden test, that no process of a grading
uid survives and that nothing reached the network.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from ste_course.authoring.source import hidden_lines, load_assignments
from ste_course.grading.run import grade
from ste_course.sandbox import UID_BASE, Limits, bwrap_path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("adversarial_cases", HERE / "cases.py")
cases = importlib.util.module_from_spec(_spec)
sys.modules["adversarial_cases"] = cases
_spec.loader.exec_module(cases)

JOBS = 2
LIMITS = Limits(cell_seconds=10.0, notebook_seconds=40.0, memory_bytes=2 * 2**30)
GRADING_UIDS = range(UID_BASE, UID_BASE + JOBS)


class Listener:
    """TCP and UDP sockets on every interface that record anything reaching them."""

    def __init__(self):
        self.hits = []
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("0.0.0.0", 0))
        self.tcp.listen(8)
        self.tcp.settimeout(0.2)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("0.0.0.0", 0))
        self.udp.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @property
    def ports(self):
        return self.tcp.getsockname()[1], self.udp.getsockname()[1]

    def _loop(self):
        while not self.stopping:
            for sock in (self.tcp, self.udp):
                try:
                    if sock is self.tcp:
                        conn, addr = sock.accept()
                        self.hits.append(("tcp", addr))
                        conn.close()
                    else:
                        data, addr = sock.recvfrom(4096)
                        self.hits.append(("udp", addr, data))
                except (socket.timeout, OSError):
                    pass

    def close(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.tcp.close()
        self.udp.close()


def _host_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _probe(listener, tcp_port, udp_port):
    socket.create_connection(("127.0.0.1", tcp_port), timeout=2).close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"probe", ("127.0.0.1", udp_port))
    deadline = time.monotonic() + 5
    while len(listener.hits) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(h[0] for h in listener.hits) == ["tcp", "udp"], listener.hits
    listener.hits.clear()


def _snapshot(*roots: Path) -> dict:
    """sha256 of every file (and the target of every symlink) under ``roots``."""
    out = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for p in paths:
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _grading_processes() -> list:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid in GRADING_UIDS:
                    pids.append(int(name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if not bwrap_path():
        pytest.fail("bubblewrap is required for the adversarial suite (make system-deps)")
    # nbgrader's gradebook runs `alembic` by name (the CLI puts this environment's bin/ first).
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    root = tmp_path_factory.mktemp("class")
    source_root = root / "source"
    shutil.copytree(HERE / "source", source_root)
    source_nb_path = source_root / cases.ASSIGNMENT / f"{cases.ASSIGNMENT}.ipynb"
    out, subs = root / "out", root / "submissions"
    home = root / "instructor"
    home.mkdir()
    canary = home / "canary.txt"
    canary.write_text("CANARY-5b7f0e secret of the instructor\n")
    secret_file = home / "secret"
    secret_file.write_text("adversarial-suite-secret\n")
    out.mkdir()
    listener = Listener()
    tcp_port, udp_port = listener.ports
    _probe(listener, tcp_port, udp_port)  # the listener does see what reaches it
    ctx = {"root": str(root), "gradebook": str(out / "gradebook.db"), "csv": str(out / "grades.csv"),
           "source_nb": str(source_nb_path), "other_nb": str(subs / "complete" / cases.ASSIGNMENT / f"{cases.ASSIGNMENT}.ipynb"),
           "canary": str(canary), "secret": str(secret_file), "tcp_port": tcp_port, "udp_port": udp_port,
           "host_ip": _host_ip()}
    for student, case in cases.CASES.items():
        case.layout(ctx, subs / student / cases.ASSIGNMENT)
    before = _snapshot(source_root, subs, home)
    started = time.monotonic()
    try:
        results = grade(subs, out, load_assignments(source_root), secret_file.read_text().strip(),
                        jobs_n=JOBS, sandbox=True, limits=LIMITS, progress=False)
    finally:
        time.sleep(0.5)
        listener.close()
    seconds = time.monotonic() - started
    after = _snapshot(source_root, subs, home)
    return dict(root=root, out=out, subs=subs, results=results, before=before, after=after,
                hits=listener.hits, seconds=seconds, source=load_assignments(source_root),
                canary=canary.read_text())


def test_every_student_gets_the_expected_grade(graded):
    by_student = {r.student: r for r in graded["results"]}
    assert set(by_student) == set(cases.CASES), "every student folder is graded exactly once"
    wrong = []
    for student, case in cases.CASES.items():
        r = by_student[student]
        if r.score != case.score or (case.status is not None and r.status != case.status):
            wrong.append(f"{student}: got {r.score:g} ({r.status}: {r.reason[:150]}), "
                         f"expected {case.score:g} ({case.status})")
    report = "\n".join(f"{r.student:28s} {r.score:g}/{r.max_score:g} {r.status:8s} {r.seconds}s {r.reason[:90]}"
                       for r in sorted(graded["results"], key=lambda r: r.student))
    print(f"\ngraded {len(graded['results'])} notebooks in {graded['seconds']:.1f} s\n{report}")
    assert not wrong, "\n".join(wrong)


def test_reference_students_are_unaffected(graded):
    by_student = {r.student: r for r in graded["results"]}
    assert by_student["complete"].score == cases.FULL and by_student["complete"].status == "ok"
    assert all(c["points"] == c["max_points"] for c in by_student["complete"].cells)
    assert by_student["blank"].score == 0 and by_student["blank"].status == "ok"


def test_instructor_files_and_other_submissions_are_untouched(graded):
    before, after = graded["before"], graded["after"]
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"files changed by the grading run: {changed}"
    assert graded["canary"].startswith("CANARY-5b7f0e")


def test_gradebook_holds_every_grade_untampered(graded):
    from nbgrader.api import Gradebook

    by_student = {r.student: r for r in graded["results"]}
    with Gradebook(f"sqlite:///{graded['out'] / 'gradebook.db'}") as gb:
        assert {s.id for s in gb.students} == set(cases.CASES)
        for cell in ("test_value", "test_gradient"):
            assert gb.find_grade_cell(cell, cases.ASSIGNMENT, cases.ASSIGNMENT).max_score in (2.0, 3.0)
        for student, result in by_student.items():
            if result.status in ("missing", "invalid"):
                continue
            sub = gb.find_submission_notebook(cases.ASSIGNMENT, cases.ASSIGNMENT, student)
            assert sub.score == pytest.approx(result.score), student
            assert sub.max_score == cases.FULL


def test_grades_csv_has_a_row_per_notebook_with_status_and_reason(graded):
    with open(graded["out"] / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(cases.CASES)
    for student, row in rows.items():
        assert float(row["score"]) == cases.CASES[student].score, student
        assert row["max_score"] == "5"
        assert row["status"] in ("ok", "missing", "invalid", "timeout", "crash", "output", "error")
        if row["status"] != "ok":
            assert row["reason"].strip(), f"{student}: status {row['status']} without a reason"


def test_feedback_leaks_no_hidden_test_nor_instructor_file(graded):
    lines = {l for nb in graded["source"][cases.ASSIGNMENT] for c in nb.cells for l in hidden_lines(c.source)}
    assert lines
    import html

    forbidden = lines | {html.escape(l) for l in lines} | {"CANARY-5b7f0e", "adversarial-suite-secret",
                                                          "BEGIN HIDDEN TESTS"}
    pages = sorted((graded["out"] / "feedback").rglob("*.html"))
    assert len(pages) == len([c for c in cases.CASES.values()]), "one feedback page per student"
    for page in pages:
        text = page.read_text(encoding="utf-8")
        leaked = [s for s in forbidden if s in text]
        assert not leaked, f"{page}: {leaked}"


def test_no_notebook_got_hold_of_what_it_must_not(graded):
    """Attack notebooks print a line starting with LEAKED when they find an earlier notebook's
    memory or IPC objects, or hold a capability (see the sandbox's cases in ``cases.py``)."""
    leaks = {r.student: c["text"][:300] for r in graded["results"] for c in r.feedback_cells
             if c["kind"] == "output" and "LEAKED" in c["text"]}
    assert not leaks, leaks


def test_no_grading_process_survives(graded):
    deadline = time.monotonic() + 5
    while _grading_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _grading_processes(), [open(f"/proc/{p}/cmdline", "rb").read() for p in _grading_processes()]


def test_nothing_reached_the_network(graded):
    assert graded["hits"] == []
