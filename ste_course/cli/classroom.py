"""The classroom's subcommands of ``ste-course``: hub, publish, collect, return-feedback.

The instructor's loop on the hub's machine (as root)::

    ste-course hub --students roster.csv --publish 03_ste     # users, exchange, JupyterHub
    ste-course publish 04_stop_gradient                       # release another assignment
    ste-course collect --out submitted                        # exchange -> submitted/
    ste-course grade submitted --out graded                   # sandboxed, as always
    ste-course return-feedback --graded graded --submissions submitted
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ste_course.cli.errors import known_errors
from ste_course.untrusted import shown

DEFAULT_EXCHANGE = Path("/srv/ste-course/exchange")
DEFAULT_STATE = Path("/srv/ste-course/hub")
DEFAULT_GRADED = Path("/srv/ste-course/graded")
EXCHANGE_ERROR = "ste_course.classroom.exchange.ExchangeError"  # imported when a command runs: nbgrader is slow to import


def _layout(args):
    from ste_course.classroom.exchange import Layout

    return Layout(args.exchange, args.course)


@known_errors("ste_course.classroom.hub.HubError", EXCHANGE_ERROR)
def cmd_hub(args) -> int:
    from ste_course.classroom.hub import HubError, prepare, start
    from ste_course.classroom.service import start_background, stop

    if args.stop:
        print(f"ste-course hub: {stop(args.state)}")
        return 0
    if args.students is None:
        raise HubError("--students ROSTER.csv is required (a CSV with a student_id column, e.g. hub/roster.example.csv)")
    settings = prepare(args.students, args.root, args.state, args.exchange, instructor=args.instructor,
                       course_id=args.course, ip=args.ip, port=args.port, publish=args.publish)
    from ste_course.classroom.formgrading import for_instructor

    for problem in for_instructor(settings, args.graded, args.root):  # formgrader on the class's gradebook
        print(f"warning: {shown(problem, 400)}", file=sys.stderr)
    for problem in settings.problems:  # a student whose home could not be furnished; the class goes on
        print(f"warning: {shown(problem, 400)}", file=sys.stderr)
    if args.setup_only:
        print(f"ste-course hub: set up in {settings.state}; not started (--setup-only)")
        return 0
    if args.background:
        pid, log = start_background(settings)
        print(f"ste-course hub: http://{settings.ip}:{settings.port}/ runs in the background (pid {pid}, "
              f"log {log}); `ste-course hub --stop --state {settings.state}` stops it")
        return 0
    return start(settings)


@known_errors(EXCHANGE_ERROR)
def cmd_publish(args) -> int:
    from ste_course.classroom.exchange import publish

    names = publish(args.exercises, args.assignment, _layout(args))
    print(f"published {', '.join(names)} to {args.exchange / args.course / 'outbound'}")
    return 0


@known_errors(EXCHANGE_ERROR)
def cmd_collect(args) -> int:
    from ste_course.classroom.exchange import collect

    done = collect(_layout(args), args.out, students=args.student, assignments=args.assignment)
    for student, assignment, stamp in done.copied:
        print(f"collected {shown(student, 40)} {shown(assignment, 40)} submitted {shown(stamp, 40)}")
    for reason in done.refused:
        print(f"refused: {reason}", file=sys.stderr)
    for student, assignment, name, why in done.left_out:
        print(f"left out: {shown(student, 40)} {shown(assignment, 40)} {shown(name, 100)}: {why}", file=sys.stderr)
    print(f"{len(done.copied)} submission(s) collected into {args.out}, {len(done.unchanged)} unchanged, "
          f"{len(done.refused)} refused" + (f", {len(done.left_out)} file(s) left out" if done.left_out else ""))
    return 0


@known_errors(EXCHANGE_ERROR)
def cmd_return_feedback(args) -> int:
    from ste_course.classroom.exchange import return_feedback

    done = return_feedback(args.graded, args.submissions, _layout(args), students=args.student,
                           assignments=args.assignment, db_url=args.db)
    print(f"{done.rendered} feedback page(s) rendered again from the gradebook")
    for note in done.notes:
        print(f"warning: {shown(note, 400)}", file=sys.stderr)
    for problem in done.problems:
        print(f"not returned: {problem}", file=sys.stderr)
    print(f"{len(done.returned)} feedback page(s) returned to {args.exchange / args.course / 'feedback'}")
    return 1 if done.problems else 0


def _exchange_options(parser: argparse.ArgumentParser, course: str = "ste") -> None:
    parser.add_argument("--exchange", type=Path, default=DEFAULT_EXCHANGE,
                        help=f"nbgrader's exchange folder (default: {DEFAULT_EXCHANGE})")
    parser.add_argument("--course", default=course, help=f"nbgrader course id (default: {course}, or the "
                                                         "course's nbgrader_config.py CourseDirectory.course_id)")


def add_commands(sub, root: Path) -> None:
    """Add the classroom's subcommands to ``ste-course``'s subparsers."""
    from ste_course.authoring.nbconfig import course_id

    course = course_id(root) or "ste"
    h = sub.add_parser("hub", help="set up users and the exchange for a roster, then run JupyterHub (as root)")
    h.add_argument("--students", type=Path, help="roster CSV with a student_id column, e.g. hub/roster.example.csv "
                                                  "(required but with --stop)")
    h.add_argument("--instructor", default="instructor", help="the instructor's user name (default: instructor)")
    h.add_argument("--ip", default="127.0.0.1", help="address the hub listens on (default: 127.0.0.1)")
    h.add_argument("--port", type=int, default=8000, help="port the hub listens on (default: 8000)")
    h.add_argument("--state", type=Path, default=DEFAULT_STATE,
                   help=f"hub's database, passwords and users' configuration (default: {DEFAULT_STATE})")
    h.add_argument("--publish", nargs="*", default=[], metavar="ASSIGNMENT",
                   help="also publish these released assignments to the exchange (default: none)")
    h.add_argument("--setup-only", action="store_true", help="set everything up but do not start the hub")
    h.add_argument("--graded", type=Path, default=DEFAULT_GRADED,
                   help="the class's course folder: the instructor's (with the graders' group), linked as "
                        "~INSTRUCTOR/graded, where formgrader opens the gradebook `grade --out ~/graded` writes "
                        f"(default: {DEFAULT_GRADED})")
    h.add_argument("--background", action="store_true",
                   help="start the hub detached: output appended to STATE/hub.log, its pid in STATE/hub.pid")
    h.add_argument("--stop", action="store_true", help="stop the hub --background started for --state, and exit")
    _exchange_options(h, course)
    h.set_defaults(func=cmd_hub, root=root)
    p = sub.add_parser("publish", help="copy released assignments (exercises/) to the exchange's outbound")
    p.add_argument("assignment", nargs="+", help="one or more assignments of exercises/, e.g. 03_ste (required)")
    p.add_argument("--exercises", type=Path, default=argparse.SUPPRESS,
                   help="the released assignments, e.g. the checkout's from the instructor's hub terminal "
                        "(default: the course's exercises/)")
    _exchange_options(p, course)
    p.set_defaults(func=cmd_publish)
    c = sub.add_parser("collect", help="copy the latest submissions from the exchange into SUBMISSIONS/ for grade")
    c.add_argument("--out", type=Path, default=Path("submitted"), help="submissions folder (default: submitted/)")
    c.add_argument("--student", action="append", help="collect only this student, repeatable (default: all)")
    c.add_argument("--assignment", action="append", help="collect only this assignment, repeatable (default: all)")
    _exchange_options(c, course)
    c.set_defaults(func=cmd_collect)
    r = sub.add_parser("return-feedback", help="render the feedback again from the gradebook (hand grades and "
                                               "comments included), then put it where each student's "
                                               "Assignment List fetches it")
    r.add_argument("--graded", type=Path, default=Path("graded"), help="folder written by grade (default: graded/)")
    r.add_argument("--db", default=None,
                   help="SQLAlchemy URL of the gradebook (default: the one grade wrote in --graded)")
    r.add_argument("--submissions", type=Path, default=Path("submitted"),
                   help="folder written by collect (default: submitted/)")
    r.add_argument("--student", action="append", help="return only this student's, repeatable (default: all)")
    r.add_argument("--assignment", action="append", help="return only this assignment's, repeatable (default: all)")
    _exchange_options(r, course)
    r.set_defaults(func=cmd_return_feedback)
    from ste_course.cli.housekeeping import add_commands as add_housekeeping  # exchange list|purge, remove

    add_housekeeping(sub, lambda parser: _exchange_options(parser, course))
