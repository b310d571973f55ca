"""The ste-course command: release assignments, check them, grade a class, run the classroom."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# nbgrader's gradebook runs `alembic` by name: make this environment's bin/ findable.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

from ste_course.cli.errors import known_errors  # noqa: E402 - light: no TensorFlow
from ste_course.untrusted import shown  # noqa: E402


def _root() -> Path:
    """The course root: the folder holding solutions/ (current folder or the package's repo)."""
    here = Path.cwd()
    if (here / "solutions").is_dir():
        return here
    return Path(__file__).resolve().parents[2]


def _course_checks(args) -> list:
    """Declare the course's own checks (checks/*.toml beside solutions/); problems, one line each.
    The folder is also put in the environment, for the notebooks ``check`` runs."""
    from ste_course.specs.declarative import CHECKS_ENV, ChecksError, checks_folder, load_folder

    folder = checks_folder(Path(args.solutions).resolve().parent)
    os.environ[CHECKS_ENV] = str(folder)
    try:
        load_folder(folder)
    except ChecksError as err:
        return [str(err)]
    return []


def _source_problems(args, strict: bool = False, warn: bool = False) -> list:
    """The course's checks and every notebook of solutions/, validated (one line per problem;
    with ``strict`` the course's conventions are problems too, with ``warn`` they are printed)."""
    from ste_course.authoring.source import SourceError, load_assignments, problems, warnings

    found = _course_checks(args)
    try:
        sources = load_assignments(args.solutions)
    except SourceError as err:
        return found + err.problems
    for w in warnings(sources) if warn and not strict else []:
        print(f"warning: {shown(w, 400)}", file=sys.stderr)
    return found + problems(sources, strict)


def cmd_release(args) -> int:
    from ste_course.authoring.nbconfig import NbgraderConfigError, load
    from ste_course.authoring.release import generate

    problems = _source_problems(args, args.strict, warn=True)
    for p in problems:
        print(f"error: {shown(p, 400)}", file=sys.stderr)
    if problems:
        print(f"ste-course release: {len(problems)} problem(s) in {shown(args.solutions)}; nothing released",
              file=sys.stderr)
        return 1
    try:
        settings = load(Path(args.solutions).resolve().parent)
    except NbgraderConfigError as err:  # reported above as every notebook's problem
        print(f"error: {shown(err, 400)}", file=sys.stderr)
        return 1
    names = generate(args.solutions, args.exercises, settings)
    print(f"released {len(names)} assignments into {args.exercises}: {', '.join(names)}")
    return 0


def cmd_check(args) -> int:
    from ste_course.authoring.selfcheck import run_checks

    from ste_course.authoring.source import SourceError

    problems = _course_checks(args)
    try:
        problems += run_checks(args.solutions, args.exercises, strict=args.strict)
    except SourceError as err:
        problems += err.problems
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    print(f"ste-course check: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


@known_errors("ste_course.grading.late.LateConfigError", "ste_course.grading.jobs.GradeError")
def cmd_grade(args) -> int:
    from ste_course.authoring.source import load_assignments
    from ste_course.grading.late import LatePolicy
    from ste_course.grading.run import grade, load_secret
    from ste_course.sandbox import Limits

    for p in _source_problems(args):  # those notebooks get status error; the rest is graded
        print(f"warning: {shown(p, 400)}", file=sys.stderr)
    sources = load_assignments(args.solutions)
    settings = next((nb.settings for nbs in sources.values() for nb in nbs), None)  # nbgrader_config.py
    # checked before anything is graded
    late = LatePolicy.load(args.config, sources, settings.penalty_method if settings else None)
    if args.cell_timeout is None:
        args.cell_timeout = settings.cell_timeout if settings and settings.cell_timeout else 60.0

    limits = Limits(cell_seconds=args.cell_timeout, notebook_seconds=args.notebook_timeout,
                    memory_bytes=args.memory_mb * 2**20, processes=args.processes,
                    output_chars=args.output_kb * 1024)
    executor = None
    if args.cluster:
        from ste_course.grading.distributed import DaskExecutor, cluster_security

        security = cluster_security(args.cluster, args.tls_ca_file, args.tls_cert, args.tls_key, args.insecure_cluster)
        executor = DaskExecutor(args.cluster, n_workers=args.jobs, sandbox=not args.no_sandbox, limits=limits,
                                security=security)
    try:
        results = grade(args.submissions, args.out, sources,
                        load_secret(args.secret_file), jobs_n=args.jobs, sandbox=not args.no_sandbox,
                        limits=limits, db_url=args.db, students=args.student, assignments=args.assignment,
                        force=args.force, late=late, executor=executor, drop_manual=args.drop_manual,
                        judges=args.judges, keep_results=False, retry_errors=args.retry_errors)
    finally:
        if executor is not None:
            executor.close()
    _summary(Path(args.out) / "grades.csv", len(results), args.db)
    _dropped_summary(Path(args.out), getattr(results, "dropped", []))
    return 0


def _dropped_summary(out: Path, dropped: list) -> None:
    """The notebooks whose hand edits this run dropped (their hand grades were for an earlier
    version of the submission, or ``--drop-manual``): where the old values are kept."""
    if not dropped:
        return
    from ste_course.record.recorder import DROPPED_REPORT

    names = ", ".join(shown("/".join((d.student, d.assignment, d.notebook)), 60) for d in dropped[:20])
    more = f" and {len(dropped) - 20} more" if len(dropped) > 20 else ""
    print(f"hand edits dropped in {len(dropped)} notebook(s), graded for an earlier version of the submission "
          f"or with --drop-manual: {names}{more}; the values they had are in {shown(out / DROPPED_REPORT)}")


@known_errors(FileNotFoundError, ValueError)
def cmd_export(args) -> int:
    from ste_course.record.export import export

    text, warnings = export(args.graded, args.format, args.roster, args.db)
    for w in warnings:
        print(f"warning: {shown(w, 300)}", file=sys.stderr)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


@known_errors(FileNotFoundError)
def cmd_feedback(args) -> int:
    from ste_course.record.recorder import refresh_feedback

    done = refresh_feedback(args.graded, args.db, args.out, students=args.student, assignments=args.assignment)
    for problem in done.problems:
        print(f"warning: {shown(problem, 400)}", file=sys.stderr)
    print(f"{len(done.rendered)} feedback page(s) rendered from the gradebook into "
          f"{shown(args.out or Path(args.graded) / 'feedback')}")
    return 0


@known_errors(FileNotFoundError, ValueError)
def cmd_similarity(args) -> int:
    from ste_course.grading.similarity import THRESHOLD, similarity_report

    threshold = THRESHOLD if args.threshold is None else args.threshold
    flagged = similarity_report(args.submissions, args.solutions, args.exercises, args.out, threshold)
    for m in flagged:
        print(f"{shown(m.assignment, 18):<18} {m.score:5.2f}  {shown(m.left, 40)} ~ {shown(m.right, 40)} ({m.kind})")
    print(f"{len(flagged)} flagged pair(s); ranked report: {args.out / 'similarity.html'}")
    return 0


def _summary(csv_path: Path, graded_now: int, db_url: str | None = None) -> None:
    """The grades as a table on the terminal, from the gradebook that ``grades.csv`` (beside it)
    was written from: every text through :func:`shown`; ``late`` is ``-`` (on time), how late
    (:func:`~ste_course.record.feedback.late_by`: 1.5min, 2.3h, 3d) and the penalty, or ``?``
    (timestamp unreadable, said in the reason); ``*`` marks a score with a hand edit in it,
    ``!`` one with parts still waiting for a hand grade (written answers: grade them in
    formgrader)."""
    from ste_course.record.export import gradebook_rows
    from ste_course.record.feedback import late_by

    rows = gradebook_rows(csv_path.parent, db_url)
    print(f"{'student':<12} {'assignment':<18} {'score':>12} {'late':<14} {'status':<8} reason")
    for r in rows:
        score = f"{r['score']:g}/{r['max_score']:g}{'*' if r['manual'] else ''}{'!' if r['needs_manual'] else ''}"
        late = {"yes": f"{late_by(r['hours_late'], short=True)} -{r['penalty']:g}", "unknown": "?"}.get(r["late"], "-")
        print(f"{shown(r['student_id'])[:12]:<12} {shown(r['assignment'])[:18]:<18} {score:>12} {late:<14} "
              f"{shown(r['status']):<8} {shown(r['reason'])[:70]}")
    unknown = sum(r["late"] == "unknown" for r in rows)
    waiting = sum(bool(r["needs_manual"]) for r in rows)
    capped = sum(bool(r.get("capped")) for r in rows)
    print(f"{len(rows)} notebooks in {shown(csv_path)} ({graded_now} graded in this run"
          + (f"; {unknown} with a timestamp that could not be read, see the reason" if unknown else "")
          + (f"; {capped} notebook{'s' if capped > 1 else ''} left at the error cap, not graded again by a plain run "
             "(ended in an error each time with the same submission and grader: --retry-errors grades "
             f"{'them' if capped > 1 else 'it'} again)" if capped else "") + ")"
          + ("; * = adjusted by hand" if any(r["manual"] for r in rows) else "")
          + (f"; ! = waiting for a hand grade ({waiting} notebooks: make lab-instructor GRADED="
             f"{shown(csv_path.parent)} (on the hub: the instructor's formgrader), then ste-course feedback)"
             if waiting else ""))


class HelpFormatter(argparse.HelpFormatter):
    """Flags say they are off unless given; every other default is in the help text itself."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.nargs == 0 and action.default is False and "default" not in text:
            text += " (default: off)"
        return text


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def _course_options(parser, root: Path, top: bool) -> None:
    """--solutions and --exercises, accepted before or after the subcommand."""
    extra = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--solutions", type=Path, **({"default": root / "solutions"} | extra),
                        help=f"the instructor's source, nbgrader source notebooks (default: {root / 'solutions'})")
    parser.add_argument("--exercises", type=Path, **({"default": root / "exercises"} | extra),
                        help=f"the student release, generated (default: {root / 'exercises'})")


def build_parser(root: Path | None = None) -> argparse.ArgumentParser:
    """The whole command line (every subcommand and argument has a help text with its default)."""
    root = root or _root()
    parser = Parser(prog="ste-course", description=__doc__)
    _course_options(parser, root, top=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    r = sub.add_parser("release", help="validate solutions/ and regenerate exercises/ from it",
                       description="Validate every graded cell of solutions/ (one line per mistake, exit 1), "
                                   "then regenerate exercises/ with nbgrader generate_assignment.")
    _course_options(r, root, top=False)
    r.add_argument("--strict", action="store_true",
                   help="the course's authoring conventions (warnings) are errors too")
    r.set_defaults(func=cmd_release)
    c = sub.add_parser("check", help="validate; exercises/ in sync; solutions pass; blank releases score 0",
                       description="Validate solutions/, check that exercises/ equals a fresh release, run every "
                                   "solution (every automatic test must pass) and every released notebook (no test "
                                   "may pass blank). Written answers are graded by hand and not run. Exit 1 on "
                                   "any problem.")
    _course_options(c, root, top=False)
    c.add_argument("--strict", action="store_true",
                   help="the course's authoring conventions (warnings) are problems too")
    c.set_defaults(func=cmd_check)
    g = sub.add_parser("grade", help="grade SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb",
                       description="Grade a class in the sandbox; write grades.csv, feedback and nbgrader's "
                                   "gradebook into --out. A notebook whose source in solutions/ is invalid gets "
                                   "status error; the rest of the class is graded.")
    _course_options(g, root, top=False)
    g.add_argument("submissions", nargs="?", type=Path, default=Path("submitted"),
                   help="folder of SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb (default: submitted/)")
    g.add_argument("--out", type=Path, default=Path("graded"), help="output course folder (default: graded/)")
    g.add_argument("--db", default=None, help="SQLAlchemy URL of the gradebook (default: SQLite in --out)")
    g.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel workers (default: cores)")
    g.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="run the notebooks on a Dask cluster: its scheduler (tls://host:8786 with the --tls "
                        "files; tcp:// only on 127.0.0.1 or with --insecure-cluster), or 'local' for a "
                        "LocalCluster of --jobs worker processes; this process still records "
                        "(default: none, local worker processes)")
    g.add_argument("--tls-ca-file", default=None, help="the course CA's certificate, for a tls:// --cluster "
                        "(default: Dask's distributed.comm.tls.ca-file)")
    g.add_argument("--tls-cert", default=None, help="this client's certificate, for a tls:// --cluster "
                        "(default: Dask's distributed.comm.tls.client.cert)")
    g.add_argument("--tls-key", default=None, help="this client's private key, for a tls:// --cluster "
                        "(default: Dask's distributed.comm.tls.client.key)")
    g.add_argument("--insecure-cluster", action="store_true",
                   help="allow a tcp:// --cluster on another machine: no encryption, and whoever reaches the "
                        "scheduler can join as a worker (only on a network that trusted machines alone reach; default: refused)")
    g.add_argument("--judges", type=int, default=2,
                   help="processes that plan and judge beside the recording (default 2; 0: in the grading process)")
    g.add_argument("--no-sandbox", action="store_true", help="run without bubblewrap: only for trusted submissions")
    g.add_argument("--secret-file", type=Path, default=Path("~/.config/ste-course/secret"),
                   help="instructor's secret that seeds the hidden inputs, created if missing "
                        "(default: ~/.config/ste-course/secret)")
    g.add_argument("--cell-timeout", type=float, default=None,
                   help="seconds per cell (default: Execute.timeout of the course's nbgrader_config.py, else 60)")
    g.add_argument("--notebook-timeout", type=float, default=300.0, help="seconds per notebook (default 300)")
    g.add_argument("--memory-mb", type=int, default=2048, help="address-space limit per notebook (default 2048)")
    g.add_argument("--processes", type=int, default=64, help="process limit per notebook (default 64)")
    g.add_argument("--output-kb", type=int, default=1024, help="output kept per cell (default 1024 KB)")
    g.add_argument("--student", action="append",
                   help="grade only this student, repeatable (default: every student folder)")
    g.add_argument("--assignment", action="append",
                   help="grade only this assignment, repeatable (default: every assignment of solutions/)")
    g.add_argument("--force", action="store_true",
                   help="re-grade every notebook (by default only those whose submission, assignment, checks, "
                        "secret, late rule or timestamp changed, and those that ended in a grading error, "
                        "unless they did so 3 times in a row with the same inputs: see --retry-errors)")
    g.add_argument("--retry-errors", action="store_true",
                   help="grade again the notebooks that ended in a grading error 3 times in a row with the same "
                        "submission and grader, which a plain run leaves as they are (--force does too)")
    g.add_argument("--drop-manual", action="store_true",
                   help="drop hand edits (formgrader's manual scores, extra credit, comments) of the notebooks "
                        "graded in this run; by default a re-grade of the same submission keeps them")
    g.add_argument("--config", type=Path, default=root / "ste_course.toml",
                   help="due dates and late penalty (default: ste_course.toml in the course root, if present: "
                        "the current folder if it holds solutions/, else the clone ste-course runs from)")
    g.set_defaults(func=cmd_grade)
    x = sub.add_parser("export", help="grades as one row per student: csv, canvas or moodle")
    x.add_argument("--graded", type=Path, default=Path("graded"), help="folder written by grade (default: graded/)")
    x.add_argument("--format", choices=("csv", "canvas", "moodle"), default="csv",
                   help="csv (a column per assignment), canvas or moodle import layout (default: csv)")
    x.add_argument("--roster", type=Path, default=None,
                   help="CSV mapping student_id to the LMS's ids (default: none, ids left empty)")
    x.add_argument("--db", default=None, help="SQLAlchemy URL of the gradebook (default: the one grade wrote in --graded)")
    x.add_argument("--output", "-o", type=Path, default=None, help="file to write (default: standard output)")
    x.set_defaults(func=cmd_export)
    f = sub.add_parser("feedback", help="render the feedback pages again from the gradebook (hand grades and "
                                        "comments from formgrader included), grading nothing")
    f.add_argument("--graded", type=Path, default=Path("graded"), help="folder written by grade (default: graded/)")
    f.add_argument("--out", type=Path, default=None,
                   help="folder of <student>/<assignment>/<notebook>.html pages (default: GRADED/feedback, "
                        "where return-feedback takes them from)")
    f.add_argument("--db", default=None, help="SQLAlchemy URL of the gradebook (default: the one grade wrote in --graded)")
    f.add_argument("--student", action="append", help="only this student, repeatable (default: every student)")
    f.add_argument("--assignment", action="append", help="only this assignment, repeatable (default: every assignment)")
    f.set_defaults(func=cmd_feedback)
    m = sub.add_parser("similarity", help="rank pairs of submissions by shared code (copies of each other, "
                                          "of solutions/ or of ste_utils) in an HTML report")
    _course_options(m, _root(), top=False)
    m.add_argument("submissions", type=Path, help="SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb (required)")
    m.add_argument("--out", type=Path, default=Path("similarity"), help="report folder (default: similarity/)")
    m.add_argument("--threshold", type=float, default=None,
                   help="flag pairs whose score reaches this, 0..1 (default: ste_course.grading.similarity.THRESHOLD)")
    m.set_defaults(func=cmd_similarity)
    from ste_course.cli.classroom import add_commands  # hub, publish, collect, return-feedback

    add_commands(sub, root)
    for action in sub._choices_actions:  # a subcommand's --help starts with what it does
        command = sub.choices[action.dest]
        command.description = command.description or action.help
    return parser


def main(argv=None) -> int:
    from ste_course.files import private_umask

    private_umask()  # one file-mode policy: nothing this process makes is readable by every user
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
