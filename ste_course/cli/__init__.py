"""The ``ste-course`` command: one parser (:func:`~ste_course.cli.commands.build_parser`); the course's
commands (:mod:`~ste_course.cli.commands`) and the classroom's (:mod:`~ste_course.cli.classroom`) only
parse arguments and call the packages that do the work. ``main`` is the console script's entry point
(``ste_course.cli:main`` in ``pyproject.toml``)."""

from ste_course.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
