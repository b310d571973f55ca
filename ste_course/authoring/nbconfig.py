"""A course's own ``nbgrader_config.py``: honoured where it sets what ste-course also sets, refused
(naming the setting) where it asks for something ste-course does not do.

nbgrader reads the file as Python (traitlets' config loader); so does this module, from the
course root (the folder holding ``solutions/``), as ``nbgrader`` itself would. Only the
instructor's file is read here, never a student's.

Honoured:

* ``ClearSolutions.code_stub`` (a dict by kernel language, or a string for Python, as nbgrader
  converts it), ``ClearSolutions.text_stub``: the stubs of ``ste-course release`` and of the blank
  answer a missing cell is graded with;
* ``CourseDirectory.course_id``: the gradebook's course id;
* ``LateSubmissionPlugin.penalty_method`` (``none`` or ``zero``): the late rule, unless
  ``ste_course.toml`` sets one;
* ``Execute.timeout``: seconds per cell, unless ``--cell-timeout`` is given.

Ignored, because they only say where nbgrader keeps its own files or how its servers run
(ste-course chooses those itself): the settings of :data:`PLACES`.

Anything else is a :class:`NbgraderConfigError` naming the setting: a course that changed, say,
``ClearSolutions.begin_solution_delimeter`` or ``Autograde.autograde_preprocessors`` would
otherwise be graded by rules other than its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
DEFAULT_TEXT_STUB = "YOUR ANSWER HERE"
CONFIG_NAME = "nbgrader_config.py"

# class -> settings honoured (see the module's docstring)
HONOURED = {
    "ClearSolutions": {"code_stub", "text_stub"},
    "CourseDirectory": {"course_id"},
    "LateSubmissionPlugin": {"penalty_method"},
    "Execute": {"timeout"},
}
# Where nbgrader keeps its files and how its servers run: ste-course decides these itself.
PLACES = {
    "CourseDirectory": {"root", "db_url", "source_directory", "release_directory", "submitted_directory",
                        "autograded_directory", "feedback_directory", "solution_directory",
                        "groupshared", "ignore", "include", "max_file_size", "student_id",
                        "student_id_exclude", "assignment_id", "notebook_id"},
    "Exchange": None, "ExchangeFactory": None, "ExchangeCollect": None, "ExchangeFetchAssignment": None,
    "ExchangeFetchFeedback": None, "ExchangeList": None, "ExchangeReleaseAssignment": None,
    "ExchangeReleaseFeedback": None, "ExchangeSubmit": None, "NbGrader": {"logfile"},
    "FormgradeExtension": None, "CourseListHandler": None, "Application": {"log_level"},
    "NbGraderApp": {"log_level", "logfile"}, "JupyterHubAuthPlugin": None, "Authenticator": None,
}


class NbgraderConfigError(ValueError):
    """A setting of ``nbgrader_config.py`` ste-course cannot honour; the message names it."""


@dataclass(frozen=True)
class NbgraderSettings:
    """What a course's ``nbgrader_config.py`` sets that ste-course uses (``None``: not set)."""

    code_stub: str = DEFAULT_CODE_STUB
    text_stub: str = DEFAULT_TEXT_STUB
    course_id: str | None = None
    penalty_method: str | None = None  # "none" or "zero"
    cell_timeout: float | None = None
    path: Path | None = None
    ignored: list = field(default_factory=list)  # "Class.setting" left to ste-course


def _code_stub(value, path) -> str:
    if isinstance(value, str):  # nbgrader converts a string to {"python": value}
        return value
    if isinstance(value, dict) and isinstance(value.get("python"), str):
        return value["python"]
    raise NbgraderConfigError(f"{path}: ClearSolutions.code_stub must be a string or a dict with a "
                              f"'python' entry. Received: {value!r:.120}")


def load(root: Path) -> NbgraderSettings:
    """The settings of ``root/nbgrader_config.py`` (defaults when there is none).

    Raises:
        NbgraderConfigError: the file does not load, or sets something ste-course does not do
            (one line naming ``Class.setting``).
    """
    path = Path(root) / CONFIG_NAME
    if not path.is_file():
        return NbgraderSettings()
    from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

    try:
        config = PyFileConfigLoader(path.name, str(path.parent)).load_config()
    except ConfigFileNotFound:
        return NbgraderSettings()
    except Exception as err:  # noqa: BLE001 - the instructor's Python: say what went wrong
        raise NbgraderConfigError(f"{path}: could not be loaded ({type(err).__name__}: {err})") from None
    values, ignored = {}, []
    for section, settings in config.items():
        for name, value in (settings.items() if hasattr(settings, "items") else [(None, settings)]):
            setting = f"{section}.{name}" if name else section
            if name in HONOURED.get(section, ()):
                values[setting] = value
            elif section in PLACES and (PLACES[section] is None or name in PLACES[section]):
                ignored.append(setting)
            else:
                raise NbgraderConfigError(
                    f"{path}: {setting} is not supported by ste-course (it honours "
                    f"{', '.join(f'{c}.{s}' for c, names in HONOURED.items() for s in sorted(names))}); "
                    "remove it, or grade this course with nbgrader itself")
    method = values.get("LateSubmissionPlugin.penalty_method")
    if method is not None and method not in ("none", "zero"):
        raise NbgraderConfigError(f"{path}: LateSubmissionPlugin.penalty_method must be 'none' or 'zero' "
                                  f"(nbgrader's methods). Received: {method!r:.60}")
    timeout = values.get("Execute.timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise NbgraderConfigError(f"{path}: Execute.timeout must be a positive number of seconds "
                                  f"(ste-course has no unlimited cells). Received: {timeout!r:.60}")
    text_stub = values.get("ClearSolutions.text_stub", DEFAULT_TEXT_STUB)
    if not isinstance(text_stub, str):
        raise NbgraderConfigError(f"{path}: ClearSolutions.text_stub must be a string. Received: {text_stub!r:.60}")
    course_id = values.get("CourseDirectory.course_id")
    return NbgraderSettings(
        code_stub=_code_stub(values.get("ClearSolutions.code_stub", DEFAULT_CODE_STUB), path),
        text_stub=text_stub, course_id=str(course_id) if course_id else None, penalty_method=method,
        cell_timeout=float(timeout) if timeout is not None else None, path=path, ignored=ignored)


def course_id(root: Path) -> str | None:
    """``CourseDirectory.course_id`` of the course's ``nbgrader_config.py`` (None: not set, no
    file, or a file ste-course refuses, which release and grade report)."""
    try:
        return load(root).course_id
    except NbgraderConfigError:
        return None
