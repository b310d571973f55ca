"""How many students one server holds: N students on a real hub, while the instructor grades.

One ``ste-course hub`` (the command an instructor runs, as tests/e2e/hub_fixtures.py starts it)
on a free port of 127.0.0.1 for ``max(--sizes)`` students made for this run, then one round per
size N, the first N students at once, each through the hub's REST API and nbgrader's exchange:

1. log in: a token from ``POST /hub/api/users/NAME/tokens`` with the student's password (PAM);
2. spawn: ``POST /hub/api/users/NAME/server``, then ``GET /hub/api/users/NAME`` until the server
   is ready (the spawn latency: from the request to ready);
3. fetch 03_ste (``POST /user/NAME/assignments/fetch``, the Assignment List's own request);
4. validate, for a share of the students (``--validate-share``): ``POST
   /user/NAME/assignments/validate`` (runs the notebook in a kernel, as Validate does);
5. submit (``POST /user/NAME/assignments/submit``).

Meanwhile the instructor (as root, the established path) collects and grades the submissions
so far, again and again (``ste-course collect``, ``ste-course grade --jobs 1``), and once more
after the students are done. Then every server of the round is stopped. Reported per round:
steps that failed (and the first error of each kind), spawn latency (median, p95), the peak
memory of the run's users' processes (their servers and kernels, summed RSS) and of the
machine (MemTotal - MemAvailable, above the level before the round), the grading passes and
their time.

Bounded everywhere: every HTTP request has a timeout, a student's round has a deadline
(``--round-timeout``), the instructor's passes are counted (at most ``MAX_PASSES``); the hub, the
users and their files are removed at the end whatever happens. Traffic goes to 127.0.0.1 only.
Run as root, not in ``make test`` (minutes per round):

    .venv/bin/python bench/hub_capacity.py [--sizes 10 20 30] [--validate-share 0.2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pwd
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from hub_fixtures import STE_COURSE, _teardown, wait_for_hub  # noqa: E402 (the e2e hub's own start and end)

from ste_course.classroom.hub import free_port  # noqa: E402

ASSIGNMENT = "03_ste"
HTTP_TIMEOUT = 120  # seconds, any one request
SPAWN_TIMEOUT = 300  # seconds from the spawn request to a ready server
STOP_TIMEOUT = 120
HUB_START_TIMEOUT = 180
MAX_PASSES = 4  # the instructor's collect + grade passes during a round (one more after it)
PASS_PAUSE = 15  # seconds between them


def request(url: str, method: str = "GET", token: str | None = None, data: dict | None = None,
            form: dict | None = None, timeout: float = HTTP_TIMEOUT) -> tuple[int, dict | str]:
    """One HTTP request to the hub (127.0.0.1 only); returns (status, JSON or text)."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the benchmark only talks to 127.0.0.1. Received: {url}")
    headers, body = {}, None
    if token:
        headers["Authorization"] = f"token {token}"
    if data is not None:
        body, headers["Content-Type"] = json.dumps(data).encode(), "application/json"
    elif form is not None:
        body = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, text = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode("utf-8", "replace")
    try:
        return status, json.loads(text) if text else {}
    except ValueError:
        return status, text


class Step(Exception):
    """A student's step that failed: its name and what was received."""

    def __init__(self, step: str, detail: str):
        super().__init__(f"{step}: {detail}")
        self.step = step


def expect(step: str, status: int, body, ok=(200, 201, 202)):
    if status not in ok:
        raise Step(step, f"HTTP {status} {str(body)[:200]}")
    return body


def student_round(url: str, name: str, password: str, validate: bool, deadline: float) -> dict:
    """One student's steps; returns timings (seconds) and the failed step, if any."""
    out = {"student": name, "failed": "", "error": ""}
    try:
        t = time.monotonic()
        body = expect("login", *request(f"{url}/hub/api/users/{name}/tokens", "POST",
                                        data={"auth": {"username": name, "password": password},
                                              "note": "hub_capacity"}))
        token = body["token"]
        out["login"] = time.monotonic() - t
        t = time.monotonic()
        expect("spawn", *request(f"{url}/hub/api/users/{name}/server", "POST", token, data={}))
        while True:
            status, model = request(f"{url}/hub/api/users/{name}", token=token)
            server = (model.get("servers") or {}).get("", {}) if isinstance(model, dict) else {}
            if status == 200 and server.get("ready"):
                break
            if time.monotonic() - t > SPAWN_TIMEOUT or time.monotonic() > deadline:
                raise Step("spawn", f"not ready after {time.monotonic() - t:.0f} s: {str(model)[:200]}")
            time.sleep(0.5)
        out["spawn"] = time.monotonic() - t
        out["token"] = token
        args = {"assignment_id": ASSIGNMENT, "course_id": COURSE[0]}
        for step, path, form in (("fetch", "assignments/fetch", args),
                                 ("validate", "assignments/validate",
                                  {"path": f"exercises/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"}),
                                 ("submit", "assignments/submit", args)):
            if step == "validate" and not validate:
                continue
            if time.monotonic() > deadline:
                raise Step(step, "the round's deadline passed")
            t = time.monotonic()
            body = expect(step, *request(f"{url}/user/{name}/{path}", "POST", token, form=form,
                                         timeout=min(600, max(1, deadline - time.monotonic()))))
            if isinstance(body, dict) and body.get("success") is False:
                raise Step(step, str(body.get("value") or body.get("message") or body)[:200])
            out[step] = time.monotonic() - t
    except Step as err:
        out["failed"], out["error"] = err.step, str(err)
    except (OSError, ValueError, KeyError) as err:  # a timeout, a refused connection, a bad body
        out["failed"], out["error"] = out.get("failed") or "request", f"{type(err).__name__}: {err}"
    return out


COURSE = [""]  # the run's course id, set in main()


class Sampler(threading.Thread):
    """Peak memory every second until stopped: summed RSS of ``uids``' processes, and the
    machine's MemTotal - MemAvailable."""

    def __init__(self, uids: set[int]):
        super().__init__(daemon=True)
        self.uids, self.peak_users, self.peak_machine = uids, 0, 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(1.0):
            self.peak_users = max(self.peak_users, users_rss(self.uids))
            self.peak_machine = max(self.peak_machine, machine_used())


def users_rss(uids: set[int]) -> int:
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid not in uids:
                continue
            for line in open(f"/proc/{entry}/status", encoding="ascii", errors="replace"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError):
            pass
    return total


def machine_used() -> int:
    info = {}
    for line in open("/proc/meminfo", encoding="ascii"):
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


def instructor(base: Path, exchange: list, stop: threading.Event, passes: list, final: bool = False) -> None:
    """Collect and grade what is submitted so far, at most MAX_PASSES times until ``stop``
    (once with ``final``); each pass's time and counts go to ``passes``."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    for _ in range(1 if final else MAX_PASSES):
        t = time.monotonic()
        collected = subprocess.run([str(STE_COURSE), "collect", "--out", str(base / "submitted"), *exchange],
                                   capture_output=True, text=True, env=env, timeout=600)
        graded = None
        if (base / "submitted").is_dir() and any((base / "submitted").iterdir()):
            graded = subprocess.run([str(STE_COURSE), "grade", str(base / "submitted"), "--out", str(base / "graded"),
                                     "--assignment", ASSIGNMENT, "--jobs", "1", "--secret-file",
                                     str(base / "secret")], capture_output=True, text=True, env=env, timeout=1800)
        rows = 0
        if (base / "graded" / "grades.csv").is_file():
            with open(base / "graded" / "grades.csv", encoding="utf-8") as fh:
                rows = sum(1 for _ in csv.DictReader(fh))
        passes.append({"seconds": time.monotonic() - t, "collect_rc": collected.returncode,
                       "grade_rc": None if graded is None else graded.returncode, "graded_rows": rows,
                       "collect": collected.stdout.strip().splitlines()[-1:] or collected.stderr[-200:]})
        if final or stop.wait(PASS_PAUSE):
            return


def stop_servers(url: str, results: list) -> int:
    """Stop every server of the round; returns how many did not stop within STOP_TIMEOUT."""
    tokens = {r["student"]: r["token"] for r in results if r.get("token")}
    for name, token in tokens.items():
        request(f"{url}/hub/api/users/{name}/server", "DELETE", token)
    deadline, left = time.monotonic() + STOP_TIMEOUT, set(tokens)
    while left and time.monotonic() < deadline:
        for name in sorted(left):
            status, model = request(f"{url}/hub/api/users/{name}", token=tokens[name])
            if status == 200 and not (model.get("servers") or {}):
                left.discard(name)
        time.sleep(1)
    return len(left)


def percentile(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def one_round(url: str, students: list, passwords: dict, share: float, base: Path, exchange: list,
              uids: set[int], round_timeout: float) -> dict:
    before = machine_used()
    sampler = Sampler(uids)
    sampler.start()
    stop, passes = threading.Event(), []
    grader = threading.Thread(target=instructor, args=(base, exchange, stop, passes), daemon=True)
    grader.start()
    deadline = time.monotonic() + round_timeout
    every = max(1, round(1 / share)) if share > 0 else 0
    t = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(students)) as pool:
        results = list(pool.map(lambda i: student_round(url, students[i], passwords[students[i]],
                                                        bool(every) and i % every == 0, deadline),
                                range(len(students))))
    students_seconds = time.monotonic() - t
    stop.set()
    grader.join(timeout=1800)
    instructor(base, exchange, stop, passes, final=True)
    sampler.halt.set()
    sampler.join(timeout=5)
    not_stopped = stop_servers(url, results)
    spawns = [r["spawn"] for r in results if "spawn" in r]
    failed: dict = {}
    for r in results:
        if r["failed"]:
            failed.setdefault(r["failed"], []).append(r["error"])
    return {"n": len(students), "failed": {k: len(v) for k, v in failed.items()},
            "first_errors": {k: v[0] for k, v in failed.items()},
            "spawn_median": statistics.median(spawns) if spawns else float("nan"),
            "spawn_p95": percentile(spawns, 0.95), "spawned": len(spawns),
            "validated": sum("validate" in r for r in results), "submitted": sum("submit" in r for r in results),
            "students_seconds": students_seconds, "peak_users_rss": sampler.peak_users,
            "peak_machine_above_start": sampler.peak_machine - before, "passes": passes,
            "not_stopped": not_stopped}


def start_hub(base: Path, students: list, instructor_name: str, course: str) -> tuple:
    roster = base / "roster.csv"
    roster.write_text("student_id,name\n" + "".join(f"{s},Student {s}\n" for s in students))
    port = free_port()
    log = base / "hub.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(STE_COURSE), "hub", "--students", str(roster), "--instructor", instructor_name, "--course", course,
             "--state", str(base / "state"), "--exchange", str(base / "exchange"), "--graded", str(base / "graded-i"),
             "--port", str(port), "--publish", ASSIGNMENT],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for_hub(process, url, log, HUB_START_TIMEOUT)
    with open(base / "state" / "passwords.csv", encoding="utf-8") as fh:
        passwords = {row["user"]: row["password"] for row in csv.DictReader(fh)}
    return process, url, passwords


def table(rounds: list) -> str:
    lines = ["| N | failed steps | spawn median (s) | spawn p95 (s) | students' round (s) | peak RSS of the "
             "users' processes (GB) | peak machine memory above start (GB) | grading passes (s each; rows graded) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rounds:
        failed = ", ".join(f"{k} {v}" for k, v in r["failed"].items()) or "0"
        passes = ", ".join(f"{p['seconds']:.0f}" + ("" if p["grade_rc"] in (0, None) else " (failed)")
                           for p in r["passes"])
        passes += f"; {r['passes'][-1]['graded_rows'] if r['passes'] else 0} rows"
        lines.append(f"| {r['n']} | {failed} | {r['spawn_median']:.1f} | {r['spawn_p95']:.1f} | "
                     f"{r['students_seconds']:.0f} | {r['peak_users_rss'] / 2**30:.2f} | "
                     f"{r['peak_machine_above_start'] / 2**30:.2f} | {passes} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 30], help="students per round (default: 10 20 30)")
    parser.add_argument("--validate-share", type=float, default=0.2,
                        help="share of the students who also validate, 0..1 (default: 0.2)")
    parser.add_argument("--round-timeout", type=float, default=900, help="seconds a round's students may take (default: 900)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rounds as JSON here (default: none)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/hub_capacity.py makes system users and starts a hub: run it as root", file=sys.stderr)
        return 2
    if not all(0 < n <= 100 for n in args.sizes) or not 0 <= args.validate_share <= 1:
        print(f"sizes must be 1..100 and the share 0..1. Received: {args.sizes}, {args.validate_share}", file=sys.stderr)
        return 2
    run = secrets.token_hex(3)
    course = f"cap{run}"
    COURSE[0] = course
    students = [f"cap{run}s{i:02d}" for i in range(max(args.sizes))]
    teacher = f"cap{run}i"
    base = Path(f"/srv/ste-course-capacity-{run}")
    base.mkdir(parents=True, mode=0o755)
    process, rounds = None, []
    try:
        t = time.monotonic()
        process, url, passwords = start_hub(base, students, teacher, course)
        print(f"hub for {len(students)} students up in {time.monotonic() - t:.0f} s at {url}", flush=True)
        uids = {pwd.getpwnam(s).pw_uid for s in students}
        exchange = ["--exchange", str(base / "exchange"), "--course", course]
        for n in args.sizes:
            result = one_round(url, students[:n], passwords, args.validate_share, base, exchange, uids,
                               args.round_timeout)
            rounds.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "passes"}, default=str), flush=True)
            print(table(rounds[-1:]).splitlines()[-1], flush=True)
    finally:
        _teardown(process, students + [teacher], f"{course}-graders", base)
    print(table(rounds))
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
