"""The registry of check specs: a name -> spec table that imports nothing of ``ste_course``.

Every spec module registers its specs here at import time (:func:`register`); test cells, the
kernel and the judge look them up by name (:func:`lookup`). A name that is not registered is
looked for once more after the *finders* ran: functions that declare further specs on demand
(:mod:`ste_course.specs` adds :func:`ste_course.specs.declarative.discover`, a course's own
``checks/*.toml``). Keeping the table in a leaf module lets every spec module, the declarative
checks and the package's ``__init__`` depend on it without depending on each other.
"""

from __future__ import annotations

from typing import Callable

SPECS: dict = {}  # name -> ste_course.specs.base.Spec
_FINDERS: tuple = ()  # a tuple: the sandbox's kernel restores module namespaces, not list contents


def register(spec):
    """Add ``spec`` to the registry; names are unique."""
    if spec.name in SPECS:
        raise ValueError(f"a spec named {spec.name!r} is already registered")
    SPECS[spec.name] = spec
    return spec


def add_finder(find: Callable[[], object]) -> None:
    """Call ``find()`` (which registers more specs) when a name is not registered."""
    global _FINDERS
    if find not in _FINDERS:
        _FINDERS = (*_FINDERS, find)


def lookup(name: str):
    """The spec registered as ``name``, after the finders ran if it is not registered yet.

    Raises:
        KeyError: no spec of that name, with the known names.
    """
    if name not in SPECS:
        for find in _FINDERS:
            find()
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown check {name!r}; known: {', '.join(sorted(SPECS))}") from None
