"""A failing check in the student's kernel shows the message first: no frames of the grading
package, each distinct message once, long lines wrapped (never cut)."""

from __future__ import annotations

import tensorflow as tf
from IPython.core.interactiveshell import InteractiveShell

from ste_course.inside.kernel import WIDTH, CheckFailed, failure_message


def test_an_ipython_kernel_shows_the_message_and_no_grader_frames(capsys):
    shell = InteractiveShell.instance()
    shell.run_cell("import tensorflow as tf\nfrom ste_course.checks import check\n"
                   "def my_sign(x, clip_value=1.0):\n    return tf.sign(x)\n")
    capsys.readouterr()
    result = shell.run_cell('check(my_sign, "ste_sign/value")')
    shown = capsys.readouterr().out
    assert isinstance(result.error_in_exec, CheckFailed)
    first = [line for line in shown.splitlines() if line.strip()][0]
    assert first == "Check failed: forward values of your ste_sign", shown
    assert "ste_course" not in shown and "Traceback" not in shown and "raise" not in shown, shown
    assert "should be 1 because x >= 0 maps to +1" in " ".join(shown.split()), shown


def test_messages_shared_by_two_cases_appear_once():
    text = failure_message("values", ["On x the value is wrong.", "On x the value is wrong.", "Other."])
    assert text.splitlines() == ["Check failed: values", "- On x the value is wrong.", "- Other."]


def test_long_values_are_wrapped_not_cut():
    long = "The gradient at x = 0.333333333333 should be " + ", ".join(str(i) for i in range(60)) + " exactly."
    lines = failure_message("gradients", [long, "x" * 200]).splitlines()
    assert all(len(line) <= WIDTH for line in lines), lines
    assert " ".join(" ".join(lines[1:]).replace("- ", "", 1).split()).startswith(long)
    assert "".join(line.strip() for line in lines[-3:]).endswith("x" * 200)
    assert CheckFailed("a\nb")._render_traceback_() == ["a", "b"]
    assert tf.constant(1.0).numpy() == 1.0  # the kernel's TensorFlow is untouched
