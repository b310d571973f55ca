"""The gradebook in PostgreSQL (``ste-course grade --db postgresql://...``).

A real PostgreSQL 15 server runs for this module (Debian's ``postgresql`` package: ``initdb``
into a temporary folder owned by the ``postgres`` user, since PostgreSQL refuses root, serving
on a free loopback port and a socket in that folder); it is stopped whatever happens. The tests
fail, never skip, when it cannot start.

A small class is graded into SQLite and into PostgreSQL (same grades), then again into
PostgreSQL (same grades, no duplicate rows), and by two grading runs into one fresh database at
once (nothing lost, nothing doubled). Notebooks run on one sandboxed fork server booted once for
the module, shared by the runs (the executor interface of ``ste_course.grading.executors``).
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ste_course.authoring.source import load_assignments
import ste_course.cli  # noqa: F401 - puts this environment's bin/ on PATH (nbgrader runs alembic)
from ste_course.grading.run import grade
from ste_course.record.recorder import gradebook_url
from ste_course.sandbox import Limits, Worker, bwrap_path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from classroom import make_class  # noqa: E402

SOURCE = Path(os.environ.get("STE_GRADING_SOURCE", HERE / "adversarial" / "source")).resolve()
PG_BIN = Path(os.environ.get("STE_PG_BIN", "/usr/lib/postgresql/15/bin"))
SECRET = "postgres-test-secret"
CLASS = {"ada": "complete", "bo": "blank", "cy": "complete"}
TABLES = ("assignment", "notebook", "grade_cells", "solution_cells", "student", "submitted_assignment",
          "submitted_notebook", "grade", "comment", "course")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A throw-away PostgreSQL cluster owned by the ``postgres`` user (or by us when not root)."""

    def __init__(self):
        for tool in ("initdb", "postgres"):
            if not (PG_BIN / tool).exists():
                pytest.fail(f"PostgreSQL 15 is not installed ({PG_BIN / tool} missing): run make system-deps")
        self.root = Path(tempfile.mkdtemp(prefix="ste-pg-"))
        self.run_as = {}
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("no 'postgres' user: install Debian's postgresql package (make system-deps)")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.run_as = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        self.port = _free_port()
        self.proc = None
        self.log = self.root / "server.log"

    def start(self):
        data = self.root / "data"
        init = subprocess.run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                               "-E", "UTF8", "--no-sync"], capture_output=True, text=True, cwd=self.root,
                              **self.run_as)
        if init.returncode:
            pytest.fail(f"initdb failed ({init.returncode}): {init.stderr[-2000:]}")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.root),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, **self.run_as)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.execute("SELECT 1")
                return
            except Exception as err:  # noqa: BLE001 - not accepting connections yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"PostgreSQL did not start ({err}); log:\n{self.log.read_text()[-2000:]}")
                time.sleep(0.2)

    def url(self, database: str = "postgres") -> str:
        """The plain URL an instructor would write."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> list:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(request):
    server = Server()
    request.addfinalizer(server.stop)  # registered before start: stopped whatever happens
    server.start()
    return server


class WarmExecutor:
    """One sandboxed fork server, booted once and shared by every grading run of the module.

    A single thread owns it (bubblewrap's --die-with-parent ties the server to the thread that
    started it) and serves the runs in the order they were sent, so the results of two
    concurrent grading runs interleave.
    """

    def __init__(self):
        self.worker = Worker(0, True, Limits())  # it leases its uid itself
        self.todo: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            item = self.todo.get()
            if item is None:
                self.worker.stop()
                return
            run, index, on_result = item
            try:
                on_result(index, self.worker.run(run))
            finally:
                self.todo.task_done()

    def run_all(self, runs, on_result):
        for index, run in enumerate(runs):
            self.todo.put((run, index, on_result))

    def join(self):
        self.todo.join()

    def close(self):
        self.todo.put(None)
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def warm():
    if not bwrap_path():
        pytest.fail("bubblewrap is required for sandboxed grading (make system-deps)")
    executor = WarmExecutor()
    yield executor
    executor.close()


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("pgclass")
    sources = load_assignments(SOURCE)
    count = make_class(SOURCE, root / "submissions", CLASS)
    return dict(root=root, subs=root / "submissions", sources=sources, count=count)


def _grade(course, out, warm, db_url=None, force=False):
    return grade(course["subs"], out, course["sources"], SECRET, sandbox=True, db_url=db_url,
                 force=force, progress=False, executor=warm)


def _grades(results) -> dict:
    """What a student is given, per notebook."""
    return {(r.student, r.assignment, r.notebook): (r.score, r.max_score, r.status, r.reason,
                                                    json.dumps(r.cells, sort_keys=True)) for r in results}


def _counts(server, database) -> dict:
    return {t: server.execute(f"SELECT count(*) FROM {t}", database)[0][0] for t in TABLES}


def _expected_counts(course) -> dict:
    sources, n = course["sources"], len(CLASS)
    notebooks = [nb for nbs in sources.values() for nb in nbs]
    grade_cells = sum(1 for nb in notebooks for c in nb.cells if c.grade)
    solution_cells = sum(1 for nb in notebooks for c in nb.cells if c.solution)
    return {"assignment": len(sources), "notebook": len(notebooks), "grade_cells": grade_cells,
            "solution_cells": solution_cells, "student": n, "submitted_assignment": n * len(sources),
            "submitted_notebook": n * len(notebooks), "grade": n * grade_cells,
            "comment": n * solution_cells, "course": 1}


def _database_scores(server, database) -> dict:
    """(student, assignment, notebook) -> the auto score the gradebook holds."""
    rows = server.execute(
        "SELECT st.id, a.name, nb.name, sum(g.auto_score) FROM grade g "
        "JOIN submitted_notebook sn ON g.notebook_id = sn.id JOIN notebook nb ON sn.notebook_id = nb.id "
        "JOIN submitted_assignment sa ON sn.assignment_id = sa.id JOIN assignment a ON sa.assignment_id = a.id "
        "JOIN student st ON sa.student_id = st.id GROUP BY st.id, a.name, nb.name", database)
    return {(s, a, nb): float(score) for s, a, nb, score in rows}


def test_plain_postgresql_urls_get_the_psycopg_driver():
    assert gradebook_url("postgresql://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    assert gradebook_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert gradebook_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    assert gradebook_url("sqlite:////tmp/gradebook.db") == "sqlite:////tmp/gradebook.db"


def test_grading_twice_into_postgres_gives_the_same_grades_and_no_duplicate_rows(postgres, warm, course, tmp_path):
    in_sqlite = _grade(course, tmp_path / "sqlite", warm)
    url = postgres.create_database("twice")
    first = _grade(course, tmp_path / "pg", warm, db_url=url)
    assert len(first) == course["count"]
    assert _grades(first) == _grades(in_sqlite), "PostgreSQL and SQLite runs disagree"
    assert (tmp_path / "pg" / "grades.csv").read_text() == (tmp_path / "sqlite" / "grades.csv").read_text()
    expected = _expected_counts(course)
    assert _counts(postgres, "twice") == expected
    scores = {key: grade[0] for key, grade in _grades(first).items()}
    assert _database_scores(postgres, "twice") == scores
    assert any(s > 0 for s in scores.values()) and any(s == 0 for s in scores.values())

    again = _grade(course, tmp_path / "pg", warm, db_url=url, force=True)
    assert _grades(again) == _grades(first)
    assert _counts(postgres, "twice") == expected, "grading again added rows"
    assert _database_scores(postgres, "twice") == scores


def test_two_grading_runs_into_one_database_at_once(postgres, warm, course, tmp_path):
    url = postgres.create_database("concurrent")
    start = threading.Barrier(2)
    outcomes: dict = {}

    def run(name):
        start.wait()
        try:
            outcomes[name] = _grade(course, tmp_path / name, warm, db_url=url)
        except BaseException as err:  # noqa: BLE001 - reported below
            outcomes[name] = err

    threads = [threading.Thread(target=run, args=(name,)) for name in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    errors = {k: repr(v) for k, v in outcomes.items() if isinstance(v, BaseException)}
    assert not errors, errors
    assert set(outcomes) == {"one", "two"}
    assert _grades(outcomes["one"]) == _grades(outcomes["two"])
    assert _counts(postgres, "concurrent") == _expected_counts(course)
    assert _database_scores(postgres, "concurrent") == {k: g[0] for k, g in _grades(outcomes["one"]).items()}


class Recorded:
    """An executor that answers each run with a worker result recorded earlier (by run id),
    calling ``before(index)`` first: here, dropping the gradebook's connections mid-run."""

    def __init__(self, payloads, before):
        self.payloads, self.before = payloads, before

    def run_all(self, runs, on_result):
        for index, run in enumerate(runs):
            self.before(index)
            on_result(index, self.payloads[run["id"]])

    def join(self):
        pass


def _terminate_others(server, database) -> int:
    """pg_terminate_backend on every other session of ``database`` (the grader's, the lock's)."""
    return len(server.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                              f"'{database}' AND pid <> pg_backend_pid()"))


def _wait_for_rows(server, database, n, timeout=60.0):
    deadline = time.monotonic() + timeout
    while server.execute("SELECT count(*) FROM ste_course_result", database)[0][0] < n:
        assert time.monotonic() < deadline, f"{n} notebooks were not recorded within {timeout} s"
        time.sleep(0.05)


def test_dropped_connections_mid_run_lose_nothing_and_double_nothing(postgres, warm, course, tmp_path):
    payloads = {}

    class Capture:
        def run_all(self, runs, on_result):
            ids = []

            def each():
                for run in runs:
                    ids.append(run["id"])
                    yield run

            warm.run_all(each(), lambda i, r: (payloads.__setitem__(ids[i], r), on_result(i, r)))

        def join(self):
            warm.join()

    reference = _grades(grade(course["subs"], tmp_path / "ref", course["sources"], SECRET, sandbox=True,
                              progress=False, executor=Capture()))
    url = postgres.create_database("dropped")
    dropped = []

    def drop(index):  # once the notebooks before this one are recorded: the grader's connections are open
        _wait_for_rows(postgres, "dropped", index)
        dropped.append(_terminate_others(postgres, "dropped"))

    results = grade(course["subs"], tmp_path / "pg", course["sources"], SECRET, sandbox=True, db_url=url,
                    progress=False, executor=Recorded(payloads, drop))
    assert len(dropped) == course["count"] and min(dropped) >= 1, f"connections terminated per run: {dropped}"
    assert _grades(results) == reference, "a dropped connection changed a grade"
    assert _counts(postgres, "dropped") == _expected_counts(course), "a grade was lost or doubled"
    assert _database_scores(postgres, "dropped") == {k: g[0] for k, g in reference.items()}
    status = postgres.execute("SELECT status, count(*) FROM ste_course_result GROUP BY status", "dropped")
    assert dict(status) == {"ok": course["count"]}, status


def test_writer_lock_times_out_and_never_hides_the_original_error(postgres):
    import psycopg

    from ste_course.record.writelock import LockTimeout, WriterLock

    url = gradebook_url(postgres.create_database("locks"))
    holder = psycopg.connect(postgres.url("locks"), autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (WriterLock.KEY,))
        lock = WriterLock(url, lock_timeout="300ms")
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="300ms"):
            with lock:
                pass
        assert time.monotonic() - started < 10
        holder.execute("SELECT pg_advisory_unlock(%s)", (WriterLock.KEY,))

        class Original(Exception):
            pass

        with pytest.raises(Original):  # the unlock fails too (its connection is gone): not what is raised
            with lock:
                _terminate_others(postgres, "locks")
                raise Original("the write failed")
        with lock:  # the next turn reconnects (pre-ping) and takes the lock again
            assert postgres.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", "locks")[0][0] == 1
        lock.close()
    finally:
        holder.close()
