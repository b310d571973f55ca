"""Start-up and throughput of ``ste-course grade`` beside plain ``nbgrader autograde``, in one run.

The class is the example class (``examples/submissions/``: complete, blank, half_done and
plain_round, every assignment), ``--copies`` times over (copy k of a student is
``<student>_k``). Measured side by side, on the same notebooks, in this order:

* the floor: ``python -c "import tensorflow"`` (anything that runs a notebook pays it once);
* one notebook (the complete 03_ste): plain ``nbgrader autograde`` and
  ``ste-course grade --student S --assignment A`` (sandboxed, ``--jobs``), each in a fresh course;
* the class: plain ``nbgrader autograde`` of every assignment (serial, unsandboxed, one kernel
  per notebook: nbgrader's own pipeline) and ``ste-course grade`` (sandboxed, ``--jobs``);
* the judges: seconds per notebook spent judging (references, comparison, the feedback page),
  per assignment, timed around ``judge_job`` in a run without the sandbox that judges in its
  own process (TensorFlow imported beforehand, so only the per-notebook cost is counted);
* ``ste-course feedback``, ``export`` and ``return-feedback`` on the graded class: wall time and
  whether they imported TensorFlow or the worker machinery (``ste_course.sandbox``).

For every ``ste-course`` command the grading parent's own peak RSS (``getrusage(RUSAGE_SELF)``
at exit) and whether it imported TensorFlow are printed; for nbgrader, the peak RSS of its
largest process (the kernel). The forbid lists are derived once before anything is timed (a
cache under ``~/.cache/ste_course``, rebuilt when ``ste_utils`` or the specs change). Usage:

    python bench/grading_throughput.py [--copies 1] [--jobs 2] [--skip-nbgrader] [--skip-class]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ONE = ("complete", "03_ste")
# Runs a command (argv) and prints its largest descendant's peak RSS (kB) on the last stderr line.
CHILDREN_RSS = ("import resource, subprocess, sys\n"
                "code = subprocess.run(sys.argv[1:]).returncode\n"
                "sys.stderr.write('\\nrss_kb %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
                "sys.exit(code)\n")
# Runs the ste-course CLI and reports, at exit, its own peak RSS and what it imported.
PARENT = ("import atexit, json, resource, sys\n"
          "atexit.register(lambda: sys.stderr.write('\\nparent ' + json.dumps({"
          "'rss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
          "'tensorflow': 'tensorflow' in sys.modules, 'worker': 'ste_course.sandbox' in sys.modules}) + '\\n'))\n"
          "from ste_course.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")
# Grades in this process without the sandbox and times judge_job per assignment (JSON on stdout):
# warmed as a judge process is (TensorFlow imported first only if a reference of the run needs it).
JUDGE_COST = ("import json, sys, time\n"
              "from pathlib import Path\n"
              "import ste_course.grading.judges as judges\n"
              "from ste_course.authoring.source import load_assignments\n"
              "from ste_course.grading.run import grade\n"
              "sources = load_assignments(Path(sys.argv[3]))\n"
              "needs = {a: judges.needs_tensorflow([c for nb in nbs for c in nb.grade_cells]) for a, nbs in sources.items()}\n"
              "judges._warm(any(needs.values()))\n"
              "times, judge_job = {}, judges.judge_job\n"
              "def timed(job, *args):\n"
              "    start = time.perf_counter()\n"
              "    try:\n"
              "        return judge_job(job, *args)\n"
              "    finally:\n"
              "        times.setdefault(job.source.assignment, []).append(time.perf_counter() - start)\n"
              "judges.judge_job = timed\n"
              "grade(Path(sys.argv[1]), Path(sys.argv[2]), sources, 'bench-secret',\n"
              "      jobs_n=int(sys.argv[4]), sandbox=False, judges=0, progress=False)\n"
              "print(json.dumps({'times': times, 'tensorflow': needs}))\n")


def build_class(dest: Path, copies: int) -> int:
    """The example class, ``copies`` times over; returns the number of notebooks."""
    count = 0
    for student in sorted(p for p in (ROOT / "examples" / "submissions").iterdir() if p.is_dir()):
        if student.name == "broken":  # an invalid notebook: nbgrader stops the assignment on it
            continue
        for k in range(copies):
            name = student.name if copies == 1 else f"{student.name}_{k}"
            shutil.copytree(student, dest / name)
            count += sum(1 for _ in (dest / name).glob("*/*.ipynb"))
    return count


def run(cmd, cwd, env, wrapper=None, check=True):
    """(seconds, stderr) of ``cmd``; a failure stops the benchmark with its output (``check``)."""
    cmd = [str(c) for c in cmd]
    if wrapper:
        cmd = [sys.executable, "-c", wrapper, *cmd]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)[:300]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds, proc.stderr


def last(stderr: str, prefix: str) -> str:
    return [l for l in stderr.splitlines() if l.startswith(prefix)][-1][len(prefix):]


def ste(args, cwd, env, check=True) -> dict:
    """``ste-course ARGS`` with the parent's report: seconds, rss_mb, tensorflow, worker."""
    seconds, err = run(args, cwd, env, wrapper=PARENT, check=check)
    print(f"measured: ste-course {' '.join(map(str, args[:1]))}: {seconds:.1f} s; {last(err, 'parent ')}",
          file=sys.stderr, flush=True)
    report = json.loads(last(err, "parent "))
    return {"seconds": seconds, "rss_mb": report["rss_kb"] / 1024, "tensorflow": report["tensorflow"],
            "worker": report["worker"]}


def nbgrader_course(work: Path, klass: Path, students, assignments, env) -> Path:
    """A plain nbgrader course holding ``assignments`` of ``students`` (released, in the db)."""
    course = work
    course.mkdir(parents=True)
    for a in assignments:
        shutil.copytree(ROOT / "solutions" / a, course / "source" / a)
        for s in students:
            shutil.copytree(klass / s / a, course / "submitted" / s / a)
    (course / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.root = %r\n" % str(course))
    for a in assignments:
        run([BIN / "nbgrader", "generate_assignment", a, "--force"], course, env)
    for s in students:
        run([BIN / "nbgrader", "db", "student", "add", s], course, env)
    return course


def autograde(course: Path, assignments, env) -> dict:
    """Plain ``nbgrader autograde`` of each assignment, serially: seconds and the kernel's peak RSS
    (nbgrader exits with 1 when a notebook of the assignment raised outside its tests: graded all the same)."""
    seconds, rss = 0.0, 0
    for a in assignments:
        s, err = run([BIN / "nbgrader", "autograde", a, "--force"], course, env, wrapper=CHILDREN_RSS, check=False)
        seconds, rss = seconds + s, max(rss, int(last(err, "rss_kb ")))
        print(f"measured: nbgrader autograde {a}: {s:.1f} s", file=sys.stderr, flush=True)
    return {"seconds": seconds, "rss_mb": rss / 1024}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=1, help="copies of the example class (1: 4 students)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--skip-nbgrader", action="store_true", help="skip the plain-nbgrader baselines")
    parser.add_argument("--skip-class", action="store_true", help="only the floor and the one notebook")
    args = parser.parse_args(argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    solutions = ROOT / "solutions"
    sources = sorted(p.name for p in solutions.iterdir() if p.is_dir())
    rows, judge_rows, light = [], [], []
    with tempfile.TemporaryDirectory(prefix="ste-bench-") as tmp:
        work = Path(tmp)
        klass = work / "submitted"
        n = build_class(klass, args.copies)
        students = sorted(p.name for p in klass.iterdir())
        (work / "secret").write_text("bench-secret\n")
        common = ["--solutions", solutions]
        run([sys.executable, "-c", "from ste_course.authoring.source import load_assignments\n"
             "from ste_course.authoring.derive import derive_all\n"
             f"derive_all(c for nbs in load_assignments({str(solutions)!r}).values() for nb in nbs "
             "for c in nb.grade_cells)"], work, env)  # the forbid lists' cache: not timed

        seconds, _ = run([sys.executable, "-c", "import tensorflow"], work, env)
        rows.append(("floor: python -c 'import tensorflow'", 1, {"seconds": seconds}))
        if not args.skip_nbgrader:
            course = nbgrader_course(work / "nbgrader-one", klass, [ONE[0]], [ONE[1]], env)
            rows.append(("plain nbgrader autograde, one notebook", 1, autograde(course, [ONE[1]], env)))
        rows.append(("ste-course grade --student --assignment, one notebook", 1,
                     ste(["grade", *common, klass, "--out", work / "graded-one", "--student", ONE[0],
                          "--assignment", ONE[1], "--jobs", args.jobs, "--secret-file", work / "secret"], work, env)))
        if not args.skip_class:
            if not args.skip_nbgrader:
                course = nbgrader_course(work / "nbgrader-class", klass, students, sources, env)
                rows.append(("plain nbgrader autograde, the class (serial)", n, autograde(course, sources, env)))
            out = work / "graded"
            rows.append((f"ste-course grade, the class ({args.jobs} jobs, sandboxed)", n,
                         ste(["grade", *common, klass, "--out", out, "--jobs", args.jobs,
                              "--secret-file", work / "secret"], work, env)))
            proc = subprocess.run([sys.executable, "-c", JUDGE_COST, klass, work / "judged", solutions, str(args.jobs)],
                                  cwd=work, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"judge cost failed:\n{proc.stderr[-2000:]}")
            judged = json.loads(proc.stdout.strip().splitlines()[-1])
            judge_rows = [(a, t, judged["tensorflow"].get(a)) for a, t in sorted(judged["times"].items())]
            (work / "exchange" / "ste" / "feedback").mkdir(parents=True)
            for name, extra in (("feedback", ["--graded", out]), ("export", ["--graded", out, "-o", work / "x.csv"]),
                                ("return-feedback", ["--graded", out, "--submissions", klass,
                                                     "--exchange", work / "exchange", "--course", "ste"])):
                # return-feedback exits 1: nothing was collected, so no submission_secret.txt to return to
                light.append((name, ste([name, *extra], work, env, check=name != "return-feedback")))

    load = os.getloadavg()
    print(f"\n{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(f"class: {len(students)} students, {n} notebooks; one notebook: {ONE[0]}/{ONE[1]}\n")
    print("| what | notebooks | wall s | s / notebook | peak RSS MB | TensorFlow in the parent |")
    print("|---|---:|---:|---:|---:|---|")
    for label, count, r in rows:
        rss = f"{r['rss_mb']:.0f}" if "rss_mb" in r else ""
        tf = {True: "yes", False: "no"}.get(r.get("tensorflow"), "")
        print(f"| {label} | {count} | {r['seconds']:.1f} | {r['seconds'] / count:.2f} | {rss} | {tf} |")
    by = {label.split(",")[0] + ("/one" if count == 1 else "/class"): r["seconds"] for label, count, r in rows}
    floor = by.get("floor: python -c 'import tensorflow'/one")
    one, nb_one = by.get("ste-course grade --student --assignment/one"), by.get("plain nbgrader autograde/one")
    print()
    if one and nb_one:
        print(f"- one notebook: ste-course / nbgrader = {one / nb_one:.2f}x (goal <= 1.25x); "
              f"ste-course - floor = {one - floor:.1f} s (goal <= 2 s)")
    cls, nb_cls = by.get("ste-course grade/class"), by.get("plain nbgrader autograde/class")
    if cls and nb_cls:
        print(f"- the class: nbgrader / ste-course = {nb_cls / cls:.1f}x (goal >= 10x at 4 students, 15x at 16)")
    if judge_rows:
        means = [sum(t) / len(t) for _, t, _ in judge_rows]
        print("\n| assignment | notebooks judged | judge ms / notebook (mean) | max ms | references need TensorFlow |")
        print("|---|---:|---:|---:|---|")
        for (a, t, tf), mean in zip(judge_rows, means):
            print(f"| {a} | {len(t)} | {1000 * mean:.0f} | {1000 * max(t):.0f} | {'yes' if tf else 'no'} |")
        print(f"| mean over the assignments | | {1000 * sum(means) / len(means):.0f} (goal <= 50) | | |")
    if light:
        print("\n| command (on the graded class) | wall s | parent peak RSS MB | TensorFlow | worker machinery |")
        print("|---|---:|---:|---|---|")
        for name, r in light:
            print(f"| ste-course {name} | {r['seconds']:.1f} | {r['rss_mb']:.0f} | "
                  f"{'yes' if r['tensorflow'] else 'no'} | {'yes' if r['worker'] else 'no'} |")


if __name__ == "__main__":
    main()
