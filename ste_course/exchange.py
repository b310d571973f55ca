"""Compatibility shim: hubs set up before the package was split into role packages name
``ste_course.exchange.PrivateSubmit`` in their ``nbgrader_config.py``. The exchange lives in
:mod:`ste_course.classroom.exchange`; ``ste-course hub`` writes that path for new set-ups."""

from ste_course.classroom.exchange import PrivateSubmit  # noqa: F401

__all__ = ["PrivateSubmit"]
