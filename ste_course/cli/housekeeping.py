"""Housekeeping subcommands of ``ste-course``: what is in the exchange, and removing a student or
an assignment from the exchange or from the record::

    ste-course exchange list                                  # inbound: latest, older, refused (why)
    ste-course exchange purge --refused                       # what collect refuses (--dry-run first)
    ste-course exchange purge --student alice --assignment 99_typo
    ste-course remove student alice --graded graded           # gradebook rows + derived files
    ste-course remove assignment 99_typo --graded graded --force
"""

from __future__ import annotations

import sys
from pathlib import Path

from ste_course.cli.errors import known_errors
from ste_course.untrusted import shown

EXCHANGE_ERROR = "ste_course.classroom.exchange.ExchangeError"
PRUNE_ERROR = "ste_course.record.prune.PruneError"


@known_errors(EXCHANGE_ERROR)
def cmd_exchange_list(args) -> int:
    from ste_course.classroom.exchange import Layout
    from ste_course.classroom.housekeeping import survey

    found = survey(Layout(args.exchange, args.course))
    print(f"published: {', '.join(shown(a, 40) for a in found.published) or 'nothing'}")
    for e in found.entries:
        if (args.student and e.student not in args.student) or (args.assignment and e.assignment not in args.assignment):
            continue
        why = f": {shown(e.reason, 300)}" if e.reason else ""
        print(f"{e.state:<8} {shown(e.name, 100)} (owner {shown(e.owner, 32)}){why}")
    counts = {s: sum(e.state == s for e in found.entries) for s in ("latest", "older", "refused")}
    print(f"inbound: {len(found.entries)} entries ({counts['latest']} latest, {counts['older']} older, "
          f"{counts['refused']} refused); {found.feedback_pages} feedback page(s) returned")
    return 0


@known_errors(EXCHANGE_ERROR)
def cmd_exchange_purge(args) -> int:
    from ste_course.classroom.exchange import Layout
    from ste_course.classroom.housekeeping import purge

    done = purge(Layout(args.exchange, args.course), students=args.student, assignments=args.assignment,
                 refused=args.refused, older=args.older, outbound=args.outbound, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for name in done.inbound:
        print(f"{verb} inbound/{shown(name, 100)}")
    for name in done.outbound:
        print(f"{verb} outbound/{shown(name, 40)} (unpublished)")
    for problem in done.problems:
        print(f"not removed: {problem}", file=sys.stderr)
    print(f"{len(done.inbound)} submission(s), {len(done.feedback)} feedback page(s), {len(done.outbound)} "
          f"published assignment(s) {verb}" + (" (--dry-run: nothing changed)" if args.dry_run else ""))
    return 1 if done.problems else 0


@known_errors(PRUNE_ERROR, FileNotFoundError)
def cmd_remove(args) -> int:
    from ste_course.record.prune import remove

    done = remove(args.graded, args.kind, args.name, db_url=args.db, force=args.force, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for student, assignment, notebook in done.rows:
        print(f"{verb} {shown(student, 40)} {shown(assignment, 40)} {shown(notebook, 40)}")
    for path in done.paths:
        print(f"{verb} {shown(path)}")
    print(f"{args.kind} {shown(args.name, 40)}: {len(done.rows)} notebook row(s) and {len(done.paths)} derived "
          f"path(s) {verb}" + ("; grades.csv written again" if not args.dry_run else " (--dry-run: nothing changed)"))
    return 0


def add_commands(sub, exchange_options) -> None:
    """Add ``exchange list|purge`` and ``remove student|assignment`` to ``ste-course``'s
    subparsers; ``exchange_options(parser)`` adds ``--exchange`` and ``--course``."""
    e = sub.add_parser("exchange", help="list or purge what is in the exchange's inbound (as root)")
    actions = e.add_subparsers(dest="action", required=True, metavar="{list,purge}", parser_class=type(e),
                               help="list the inbound entries, or purge some (required)")
    listing = actions.add_parser("list", help="every inbound entry: latest, older or refused by collect (and why)")
    listing.add_argument("--student", action="append", help="only this student's, repeatable (default: all)")
    listing.add_argument("--assignment", action="append", help="only this assignment's, repeatable (default: all)")
    exchange_options(listing)
    listing.set_defaults(func=cmd_exchange_list, command="exchange list")
    p = actions.add_parser("purge", help="remove submissions from inbound (and their returned feedback pages)")
    p.add_argument("--student", action="append", help="every submission of this student, repeatable")
    p.add_argument("--assignment", action="append", help="every submission of this assignment, repeatable")
    p.add_argument("--refused", action="store_true", help="every entry collect refuses (see exchange list)")
    p.add_argument("--older", action="store_true", help="every submission a later one of the same student superseded")
    p.add_argument("--outbound", action="store_true", help="also unpublish the --assignment given (students "
                                                           "can no longer fetch it)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    exchange_options(p)
    p.set_defaults(func=cmd_exchange_purge, command="exchange purge")
    r = sub.add_parser("remove", help="remove a student or an assignment from the gradebook and everything derived "
                                      "(feedback, autograded/, evidence, grades.csv rows), as nbgrader db ... remove")
    r.add_argument("kind", choices=("student", "assignment"), help="what to remove (required)")
    r.add_argument("name", help="the student id or assignment name (required)")
    r.add_argument("--graded", type=Path, default=Path("graded"), help="folder written by grade (default: graded/)")
    r.add_argument("--db", default=None, help="SQLAlchemy URL of the gradebook (default: the one grade wrote in --graded)")
    r.add_argument("--force", action="store_true", help="remove even when graded work or hand grades would be lost")
    r.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    r.set_defaults(func=cmd_remove, command="remove")
