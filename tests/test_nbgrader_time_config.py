"""An nbgrader course's timestamps, late rule and nbgrader_config.py, read as nbgrader reads them
(nbgrader.utils.parse_utc side by side) or refused with the reason."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dateutil.tz import gettz
from nbgrader.utils import parse_utc

from ste_course.authoring.nbconfig import NbgraderConfigError, course_id, load
from ste_course.authoring.source import load_assignments
from ste_course.cli import main
from ste_course.cli.commands import build_parser
from ste_course.grading.late import LateConfigError, LateError, LatePolicy, parse_time

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "nbgrader_course" / "source"

# Both read these alike: what nbgrader's exchange writes with a zone the IANA database knows by
# that name, zone names, ISO offsets, no zone (UTC); an hour that occurs twice (the first one).
AGREED = [
    "2015-02-02 15:58:23.948203 UTC",
    "2015-02-02 15:58:23.948203 GMT",
    "2015-02-02 15:58:23.948203 America/Los_Angeles",  # nbgrader's documentation example
    "2015-07-02 15:58:23.948203 America/Los_Angeles",  # summer time
    "2015-02-02 15:58:23 Europe/Berlin",
    "2015-02-02 15:58:23 Asia/Kolkata",  # +05:30
    "2015-02-02 15:58:23 US/Pacific",
    "2015-02-02 15:58:23 Etc/GMT+5",  # the database's sign: UTC-5
    "2015-02-02 15:58:23.948203 EST",  # abbreviations the database defines
    "2015-02-02 15:58:23.948203 CET",
    "2015-02-02 15:58:23 MST",
    "2015-02-02 15:58:23 HST",
    "2015-02-02 15:58:23 EST5EDT",
    "2015-02-02 15:58:23.948203",
    "2015-02-02 15:58:23",
    "2015-02-02T15:58:23.948203-08:00",
    "2015-02-02 15:58:23.948203-0800",
    "2015-02-02T15:58:23Z",
    "2021-11-07 01:30:00 America/New_York",  # occurs twice: both take the first (EDT)
]


@pytest.mark.parametrize("text", AGREED)
def test_timestamps_are_read_as_nbgrader_reads_them(text):
    assert parse_time(text) == parse_utc(text)


def test_what_nbgraders_exchange_writes_is_read_by_both():
    """ExchangeSubmit's timestamp: now in Exchange.timezone, formatted "%Y-%m-%d %H:%M:%S.%f %Z"."""
    stamp = datetime(2026, 12, 2, 0, 0, 1, 500000, tzinfo=gettz("UTC")).strftime("%Y-%m-%d %H:%M:%S.%f %Z")
    assert stamp == "2026-12-02 00:00:01.500000 UTC"
    assert parse_time(stamp) == parse_utc(stamp) == datetime(2026, 12, 2, 0, 0, 1, 500000)


def test_where_nbgrader_misreads_we_read_the_offset_or_refuse():
    """Differences, each measured: nbgrader reads a spaced "-0800" as -800 seconds and a spaced
    "-08:00" or an abbreviation the database does not define (what %Z writes for
    America/Los_Angeles: PST) as UTC; we read the offsets as offsets and refuse the abbreviation."""
    clock = datetime(2015, 2, 2, 15, 58, 23)
    assert parse_utc("2015-02-02 15:58:23 -0800") == clock + timedelta(seconds=800)
    assert parse_utc("2015-02-02 15:58:23 -08:00") == clock
    assert parse_time("2015-02-02 15:58:23 -0800") == parse_time("2015-02-02 15:58:23 -08:00") == \
        parse_utc("2015-02-02 15:58:23-08:00") == clock + timedelta(hours=8)
    written = datetime(2015, 2, 2, 15, 58, 23, tzinfo=gettz("America/Los_Angeles")).strftime("%Y-%m-%d %H:%M:%S %Z")
    assert written == "2015-02-02 15:58:23 PST" and parse_utc(written) == clock  # 8 hours off
    with pytest.raises(LateError, match="PST is an abbreviation the time zone database does not define"):
        parse_time(written)


@pytest.mark.parametrize("text", ["2015-02-02 15:58:23 Mars/Olympus", "2015-02-02 15:58:23 ../../etc/passwd",
                                  "2015-02-02 15:58:23 /etc/localtime", "Feb 2 2015 15:58"])
def test_anything_else_is_refused_with_the_reason(text):
    with pytest.raises(LateError):
        parse_time(text)


def _course(tmp_path, config: str | None = None, toml: str | None = None) -> Path:
    root = tmp_path / "course"
    shutil.copytree(FIXTURE, root / "solutions")
    if config is not None:
        (root / "nbgrader_config.py").write_text(config)
    if toml is not None:
        (root / "ste_course.toml").write_text(toml)
    return root


def test_due_dates_carry_a_zone_and_nbgraders_methods_apply(tmp_path):
    root = _course(tmp_path, toml='[grading]\nlate_penalty = "zero"\n[due]\nps1 = "2026-12-01 23:59:00 America/Los_Angeles"\n')
    policy = LatePolicy.load(root / "ste_course.toml", ["ps1"])
    assert policy.due["ps1"] == datetime(2026, 12, 2, 7, 59) == parse_utc("2026-12-01 23:59:00 America/Los_Angeles")
    assert policy.rule("ps1", datetime(2026, 12, 2, 7, 59), 6.0) == (False, 0.0, 0.0)
    assert policy.rule("ps1", datetime(2026, 12, 2, 8, 0), 6.0) == (True, 60.0, 6.0)  # zero: everything
    none = LatePolicy.load(None, ["ps1"], method="none")
    none.due = policy.due
    assert none.rule("ps1", datetime(2026, 12, 9), 6.0)[::2] == (True, 0.0)  # late, no penalty
    assert none.fingerprint("ps1") != policy.fingerprint("ps1")
    with pytest.raises(LateConfigError, match='late_penalty must be "none" or "zero"'):
        (root / "ste_course.toml").write_text('[grading]\nlate_penalty = "half"\n')
        LatePolicy.load(root / "ste_course.toml", ["ps1"])


HONOURED = '''c = get_config()
c.CourseDirectory.course_id = "phys101"
c.CourseDirectory.root = "/srv/nbgrader/phys101"
c.Exchange.root = "/srv/nbgrader/exchange"
c.ClearSolutions.code_stub = {"python": "# ANSWER HERE\\npass"}
c.ClearSolutions.text_stub = "Write your answer here."
c.LateSubmissionPlugin.penalty_method = "zero"
c.Execute.timeout = 12
'''


def test_a_courses_nbgrader_config_is_honoured(tmp_path):
    root = _course(tmp_path, HONOURED)
    settings = load(root)
    assert (settings.course_id, settings.penalty_method, settings.cell_timeout) == ("phys101", "zero", 12.0)
    assert sorted(settings.ignored) == ["CourseDirectory.root", "Exchange.root"]
    assert course_id(root) == "phys101"
    assert build_parser(root).parse_args(["publish", "ps1"]).course == "phys101"
    sources = load_assignments(root / "solutions")
    assert all(nb.settings == settings and not nb.problems for nb in sources["ps1"])
    assert LatePolicy.load(None, ["ps1"], settings.penalty_method).method == "zero"
    # the release uses the course's stubs, as nbgrader generate_assignment with this config does
    assert main(["release", "--solutions", str(root / "solutions"), "--exercises", str(root / "exercises")]) == 0
    released = json.loads((root / "exercises" / "ps1" / "problem2.ipynb").read_text())
    sources = {"".join(c["source"]) for c in released["cells"]}
    assert "def fib(n):\n    # ANSWER HERE\n    pass" in sources and "Write your answer here." in sources


@pytest.mark.parametrize("line, setting", [
    ('c.ClearSolutions.begin_solution_delimeter = "BEGIN ANSWER"', "ClearSolutions.begin_solution_delimeter"),
    ("c.OverwriteCells.add_missing_cells = False", "OverwriteCells.add_missing_cells"),
    ('c.Autograde.autograde_preprocessors = []', "Autograde.autograde_preprocessors"),
    ('c.LateSubmissionPlugin.penalty_method = "half"', "LateSubmissionPlugin.penalty_method"),
    ("c.Execute.timeout = -1", "Execute.timeout"),
])
def test_a_setting_we_do_not_do_is_refused_by_name(tmp_path, capsys, line, setting):
    root = _course(tmp_path, f"c = get_config()\n{line}\n")
    with pytest.raises(NbgraderConfigError, match=setting.replace(".", r"\.")):
        load(root)
    assert all(setting in nb.problems[-1] for nb in load_assignments(root / "solutions")["ps1"])
    assert main(["release", "--solutions", str(root / "solutions"), "--exercises", str(root / "exercises")]) == 1
    assert setting in capsys.readouterr().err and not (root / "exercises").exists()
