"""The one error wrapper of the ``ste-course`` commands: a known error is one line on stderr and
exit status 2; any other exception is a bug and keeps its traceback."""

from __future__ import annotations

import functools
import sys

from ste_course.untrusted import shown


def known_errors(*known):
    """Decorate a command function ``command(args) -> int``: an exception of one of ``known``
    raised while it runs is printed as ``ste-course COMMAND: message`` (escaped by
    :func:`~ste_course.untrusted.shown`, so one line) on stderr, and the command returns 2.

    ``known`` holds exception classes, or the dotted names of classes whose modules the command
    imports only when it runs (``"ste_course.classroom.exchange.ExchangeError"``: importing them
    up front would make every command as slow to start as the slowest); an error of a module that
    was never imported cannot have been raised, so such a name is looked up in ``sys.modules``.
    """

    def decorate(command):
        @functools.wraps(command)
        def run(args) -> int:
            try:
                return command(args)
            except Exception as err:
                if not isinstance(err, tuple(loaded(known))):
                    raise
                name = getattr(args, "command", None) or command.__name__.removeprefix("cmd_").replace("_", "-")
                print(f"ste-course {name}: {shown(err, 600)}", file=sys.stderr)
                return 2

        run.known = known
        return run

    return decorate


def loaded(known) -> list:
    """The classes of ``known`` (see :func:`known_errors`) whose modules are imported."""
    classes = []
    for item in known:
        if isinstance(item, type):
            classes.append(item)
            continue
        module, _, name = item.rpartition(".")
        if module in sys.modules:
            classes.append(getattr(sys.modules[module], name))
    return classes
