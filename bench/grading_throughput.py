"""Seconds per notebook: plain serial ``nbgrader autograde`` vs ``ste-course grade``.

Builds a synthetic class from ``solutions/`` (students alternate between the full solution and
the blank release), then grades the same class, side by side in one run, with:

* plain nbgrader: ``nbgrader autograde <assignment>`` for each assignment (serial, unsandboxed,
  one kernel per notebook: nbgrader's own pipeline);
* ``ste-course grade`` without the sandbox and with it, with 1 and with N jobs.

Prints a markdown table and the speed-up over nbgrader. Usage:

    python bench/grading_throughput.py [--students 8] [--jobs 2] [--solutions solutions]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def build_class(solutions: Path, released: Path, dest: Path, students: int) -> int:
    count = 0
    for i in range(students):
        student = f"student{i:02d}"
        origin = solutions if i % 2 == 0 else released
        for folder in sorted(p for p in origin.iterdir() if p.is_dir()):
            for nb in folder.glob("*.ipynb"):
                target = dest / student / folder.name / nb.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(nb, target)
                count += 1
    return count


def run(cmd, cwd, env):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def plain_nbgrader(solutions: Path, klass: Path, work: Path, env) -> float:
    course = work / "nbgrader-course"
    shutil.copytree(solutions, course / "source")
    shutil.copytree(klass, course / "submitted")
    (course / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.root = %r\n" % str(course))
    assignments = sorted(p.name for p in (course / "source").iterdir() if p.is_dir())
    for a in assignments:
        run([BIN / "nbgrader", "generate_assignment", a, "--force"], course, env)
        for student in sorted(p.name for p in (course / "submitted").iterdir()):
            run([BIN / "nbgrader", "db", "student", "add", student], course, env) if a == assignments[0] else None
    start = time.perf_counter()
    for a in assignments:
        run([BIN / "nbgrader", "autograde", a, "--force"], course, env)
    return time.perf_counter() - start


def ste_grade(solutions: Path, klass: Path, work: Path, env, jobs: int, sandbox: bool) -> float:
    out = work / f"graded-{jobs}-{sandbox}"
    cmd = [BIN / "ste-course", "--solutions", solutions, "grade", klass, "--out", out, "--jobs", str(jobs),
           "--secret-file", work / "secret"]
    if not sandbox:
        cmd.append("--no-sandbox")
    return run(cmd, work, env)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    parser.add_argument("--exercises", type=Path, default=ROOT / "exercises")
    parser.add_argument("--skip-nbgrader", action="store_true", help="skip the slow plain-nbgrader baseline")
    args = parser.parse_args(argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    with tempfile.TemporaryDirectory(prefix="ste-bench-") as tmp:
        work = Path(tmp)
        klass = work / "submitted"
        n = build_class(args.solutions.resolve(), args.exercises.resolve(), klass, args.students)
        rows = []
        if not args.skip_nbgrader:
            rows.append(("plain nbgrader autograde (serial, no sandbox)", plain_nbgrader(args.solutions.resolve(), klass, work, env)))
        for sandbox in (False, True):
            for jobs in sorted({1, args.jobs}):
                label = f"ste-course grade, {jobs} job{'s' if jobs > 1 else ''}, {'sandboxed' if sandbox else 'no sandbox'}"
                rows.append((label, ste_grade(args.solutions.resolve(), klass, work, env, jobs, sandbox)))
    base = rows[0][1] if not args.skip_nbgrader else None
    print(f"\n{n} notebooks ({args.students} students x {n // max(args.students, 1)} notebooks), {os.cpu_count()} cores\n")
    print("| pipeline | total s | s / notebook | speed-up vs nbgrader |")
    print("|---|---:|---:|---:|")
    for label, seconds in rows:
        speed = f"{base / seconds:.1f}x" if base else "n/a"
        print(f"| {label} | {seconds:.1f} | {seconds / n:.2f} | {speed} |")


if __name__ == "__main__":
    main()
