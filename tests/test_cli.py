"""The command line: every subcommand and argument described with its default, options after the
subcommand, and `make grade` needing only bubblewrap. (The commands printed in the README and
docs/ are parsed by tests/test_docs.py.)"""

import argparse
import re
import subprocess
from pathlib import Path

import pytest

from ste_course.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PARSER = build_parser(ROOT)
COMMANDS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_and_argument_is_described_with_its_default(name, capsys):
    with pytest.raises(SystemExit) as done:
        PARSER.parse_args([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    command = COMMANDS[name]
    assert command.description and command.description in " ".join(text.split()), name
    assert "``" not in text and "`" not in command.description
    formatter = command._get_formatter()
    for action in command._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        shown = formatter._get_help_string(action) or ""
        assert shown, f"{name} {action.dest}: no help text"
        assert "default" in shown or "required" in shown, f"{name} {action.dest}: {shown!r} says no default"
        assert "``" not in shown


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        PARSER.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text
    for name in COMMANDS:
        assert re.search(rf"^\s+{re.escape(name)}\s+\S", text, re.M), name


@pytest.mark.parametrize("argv", [["check", "--solutions", "X"], ["--solutions", "X", "check"],
                                  ["release", "--solutions", "X", "--exercises", "Y"],
                                  ["grade", "subs", "--solutions", "X"]])
def test_course_options_before_or_after_the_subcommand(argv):
    args = PARSER.parse_args(argv)
    assert args.solutions == Path("X")
    assert args.exercises == (Path("Y") if "Y" in argv else ROOT / "exercises")


def test_course_options_default_to_the_course_root():
    args = PARSER.parse_args(["check"])
    assert (args.solutions, args.exercises) == (ROOT / "solutions", ROOT / "exercises")


def test_make_grade_installs_only_bubblewrap():
    out = subprocess.run(["make", "-n", "grade", "SUBMISSIONS=subs"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "scripts/system-deps.sh grade" in out and "system-deps.sh test" not in out
    script = (ROOT / "scripts" / "system-deps.sh").read_text()
    grade_needs = re.search(r"declare -A need=\((.*?)\)", script).group(1)
    assert grade_needs == "[bwrap]=bubblewrap"
    assert "grade) ;;" in script  # nothing added for grading
