"""``ste-course similarity`` on a tiny fake assignment: copies are flagged, honest work is not.

The fake assignment ``01_sign`` has one notebook with two solution cells: ``ste_sign`` (provided
signature, docstring and argument check; 7-14 lines to write) and a one-line ``clip_window``.
Every notebook is written here from Python, so the test does not depend on the real assignments.
"""

import ast
import csv
import json
import os
from pathlib import Path

import pytest

from ste_course.authoring.release import blank_solution
from ste_course.grading.similarity import MIN_OVERLAP, THRESHOLD, default_library, highlight, similarity_report

ASSIGNMENT, NOTEBOOK = "01_sign", "sign"

HEAD = '''import tensorflow as tf


def ste_sign(x, clip_value=1.0):
    """Sign with a straight-through gradient clipped to |x| <= clip_value.

    Forward: +1 for x >= 0 (so 0 -> +1), -1 otherwise. Backward: 1{|x| <= clip_value}.
    """
    x = tf.convert_to_tensor(x)
    if clip_value is not None and clip_value < 0:
        raise ValueError(f"clip_value must be >= 0. Received: clip_value={clip_value!r}")
'''
WINDOW_HEAD = '''def clip_window(x, clip_value):
    """1 where |x| <= clip_value, 0 elsewhere, in the dtype of x."""
'''

INSTRUCTOR = '''    sign = tf.where(x >= 0, tf.constant(1, x.dtype), tf.constant(-1, x.dtype))

    @tf.custom_gradient
    def _forward(inputs):
        def _grad(upstream):
            if clip_value is None:
                return upstream
            return upstream * tf.cast(tf.abs(inputs) <= clip_value, upstream.dtype)
        return sign, _grad

    return _forward(x)
'''
WINDOW = "    return tf.cast(tf.abs(x) <= clip_value, x.dtype)\n"

# ann's answer, and bob's copy of it: renamed variables, other comments, other spacing.
ANN = '''    # forward pass: +1 for x >= 0 (so 0 maps to +1), -1 otherwise
    out = tf.where(x >= 0, tf.ones_like(x), -tf.ones_like(x))

    @tf.custom_gradient
    def identity_with_clip(value):
        def grad(upstream):
            # let the gradient through only where |x| <= clip_value
            inside = tf.abs(value) <= clip_value
            mask = tf.cast(inside, upstream.dtype)
            return upstream * mask

        return out, grad

    return identity_with_clip(x)
'''
BOB = '''    # +1 / -1
    result = tf.where(x >= 0,   tf.ones_like(x), -tf.ones_like(x))
    @tf.custom_gradient
    def f(v):
        def backward(dy):
            # clipped STE (Hubara et al.)
            within = tf.abs(v) <= clip_value
            m = tf.cast(within, dy.dtype)

            return dy * m
        return result, backward
    return f(x)
'''
# Independent correct answers, each written its own way.
CAT = '''    # sign that maps 0 to +1
    hard = tf.sign(x) + tf.cast(tf.equal(x, 0.0), x.dtype)
    if clip_value is None:
        return x + tf.stop_gradient(hard - x)
    # hardtanh proxy: its derivative is 1 on [-clip_value, clip_value]
    soft = tf.clip_by_value(x, -clip_value, clip_value)
    return soft + tf.stop_gradient(hard - soft)
'''
DAN = '''    positive = tf.cast(x >= 0, x.dtype)
    forward = 2.0 * positive - 1.0
    limit = float("inf") if clip_value is None else clip_value

    @tf.custom_gradient
    def _sign(v):
        def _grad(dy):
            keep = tf.logical_and(v >= -limit, v <= limit)
            return dy * tf.cast(keep, dy.dtype)
        return forward, _grad

    return _sign(x)
'''
EVA = '''    sign = tf.where(x < 0.0, -1.0, 1.0)
    sign = tf.cast(sign, x.dtype)
    if clip_value is None:
        window = tf.ones_like(x)
    else:
        window = tf.cast(tf.math.abs(x) <= clip_value, x.dtype)
    # straight-through: the value is sign(x), the gradient is the window
    surrogate = x * window
    return surrogate + tf.stop_gradient(sign - surrogate)
'''
WINDOW_ALT = "    inside = tf.less_equal(tf.abs(x), clip_value)\n    return tf.where(inside, 1.0, 0.0)\n"


def _cell(cell_type, source, **nbgrader):
    meta = {"nbgrader": {"schema_version": 3, "grade": False, "solution": False, "locked": False,
                         "task": False, **nbgrader}} if nbgrader else {}
    cell = {"cell_type": cell_type, "metadata": meta, "source": source}
    if cell_type == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


def _notebook(sign_cell, window_cell):
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3"}}, "cells": [
        _cell("markdown", "# ste_sign\nWrite the sign with a clipped straight-through gradient:\n"
                          "```python\ny = x + tf.stop_gradient(q - x)\n```", grade_id="intro", locked=True),
        _cell("code", sign_cell, grade_id="ste_sign_answer", solution=True),
        _cell("code", window_cell, grade_id="clip_window_answer", solution=True),
        _cell("code", "print(ste_sign(tf.constant([-2.0, 0.0, 0.5])))", grade_id="try_it", locked=True),
    ]}


def _solution(body):
    return f"    ### BEGIN SOLUTION\n{body}    ### END SOLUTION\n"


def _pasted_library_function(name="ste_sign"):
    """The source of a ste_utils function, read from the library's file (without importing it)."""
    path = default_library() / "quantizers.py"
    text = path.read_text(encoding="utf-8")
    node = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == name)
    return "import tensorflow as tf\n\n" + ast.get_source_segment(text, node, padded=True) + "\n"


def _write(path: Path, nb) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nb if isinstance(nb, str) else json.dumps(nb), encoding="utf-8")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    source = _notebook(HEAD + _solution(INSTRUCTOR), WINDOW_HEAD + _solution(WINDOW))
    _write(root / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", source)
    released = _notebook(blank_solution(HEAD + _solution(INSTRUCTOR)), blank_solution(WINDOW_HEAD + _solution(WINDOW)))
    _write(root / "exercises" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", released)
    answers = {
        "ann": (HEAD + ANN, WINDOW_HEAD + WINDOW),
        "bob": (HEAD.replace("\n\n\n", "\n\n") + BOB, WINDOW_HEAD + WINDOW),
        "cat": (HEAD + CAT, WINDOW_HEAD + WINDOW_ALT),
        "dan": (HEAD + DAN, WINDOW_HEAD + WINDOW),
        "eva": (HEAD + EVA, WINDOW_HEAD + WINDOW_ALT),
        "fin": (HEAD + INSTRUCTOR.replace("_forward", "fwd").replace("upstream", "g"), WINDOW_HEAD + WINDOW),
        "gil": (_pasted_library_function(), WINDOW_HEAD + WINDOW),
    }
    subs = root / "submitted"
    for student, (sign, window) in answers.items():
        _write(subs / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb", _notebook(sign, window))
    for student in ("hal", "ivy"):  # the released notebook, untouched
        _write(subs / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb", released)
    _write(subs / "jo" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", '{"cells": [ not json')
    hostile = _notebook(HEAD + "    # </pre><script>alert(1)</script>\n" + ANN, WINDOW_HEAD + WINDOW)
    _write(subs / "kim<script>" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", hostile)
    # Hostile names and text: a formula id, a lone surrogate in a cell, a folder name that is not
    # UTF-8, one with a terminal escape, and a student folder that is a link to a classmate's.
    _write(subs / "=1+2" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", _notebook(HEAD + ANN, WINDOW_HEAD + WINDOW))
    _write(subs / "sur" / ASSIGNMENT / f"{NOTEBOOK}.ipynb",
           json.dumps(_notebook(HEAD + "    # lone \ud800 surrogate\n    return tf.sign(x)\n", WINDOW_HEAD + WINDOW_ALT)))
    for name in (b"\xffbad", b"esc\x1b[2J"):
        folder = os.path.join(os.fsencode(subs), name, ASSIGNMENT.encode())
        os.makedirs(folder)
        with open(os.path.join(folder, f"{NOTEBOOK}.ipynb".encode()), "w", encoding="utf-8") as f:
            f.write(json.dumps(_notebook(HEAD + ANN, WINDOW_HEAD + WINDOW)))
    (subs / "linked").symlink_to(subs / "ann")
    out = root / "report"
    flagged = similarity_report(subs, root / "solutions", root / "exercises", out)
    with (out / "similarity.csv").open(encoding="utf-8") as f:
        scores = {(r["student"], r["compared_with"]): r for r in csv.DictReader(f)}
    return {"root": root, "flagged": flagged, "scores": scores,
            "html": (out / "similarity.html").read_text(encoding="utf-8")}


def test_hostile_names_and_text_never_stop_the_report_and_are_neutralised(course):
    assert ("'=1+2", "ann") in course["scores"] or ("ann", "'=1+2") in course["scores"]
    assert not any(k[0].startswith("=") or k[1].startswith("=") for k in course["scores"])
    assert _score(course, "ann", "'=1+2")[0] == 1.0  # the formula id, neutralised in its cell
    page = course["html"]
    assert "# lone \ufffd surrogate" in page
    assert "\\xffbad" in page and "esc\\x1b[2J" in page and "\x1b" not in page
    assert "linked" in page and "is a link" in page
    names = {n for pair in course["scores"] for n in pair}
    assert not any("linked" in n or "bad" in n or "esc" in n for n in names)


def _score(course, a, b):
    row = course["scores"].get((a, b)) or course["scores"][(b, a)]
    return float(row["score"]), int(row["overlap"])


def _flagged(course):
    return {(m.left, m.right) for m in course["flagged"]}


def test_copy_with_renamed_variables_and_new_comments_is_flagged(course):
    score, overlap = _score(course, "ann", "bob")
    assert score >= THRESHOLD and overlap >= MIN_OVERLAP
    assert ("ann", "bob") in _flagged(course)


def test_independent_answers_written_differently_are_not_flagged(course):
    honest = ["ann", "cat", "dan", "eva"]
    for i, a in enumerate(honest):
        for b in honest[i + 1:]:
            assert _score(course, a, b)[0] < THRESHOLD, (a, b)
        assert _score(course, a, f"solutions/{ASSIGNMENT}")[0] < THRESHOLD, a
        assert _score(course, a, "ste_utils")[0] < THRESHOLD, a
    flagged_people = {name for pair in _flagged(course) for name in pair}
    assert not {"cat", "dan", "eva"} & flagged_people


def test_blank_released_notebooks_share_nothing(course):
    assert _score(course, "hal", "ivy") == (0.0, 0)
    assert _score(course, "hal", f"solutions/{ASSIGNMENT}") == (0.0, 0)


def test_pasted_published_solution_is_flagged_against_solutions(course):
    assert ("fin", f"solutions/{ASSIGNMENT}") in _flagged(course)


def test_pasted_ste_utils_source_is_flagged_against_ste_utils(course):
    assert ("gil", "ste_utils") in _flagged(course)


def test_bad_notebook_is_a_note_and_student_text_is_escaped(course):
    page = course["html"]
    assert "jo/01_sign/sign.ipynb: skipped" in page
    assert "<script>" not in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)" in page and "kim&lt;script&gt;" in page


def test_highlight_escapes_and_marks():
    assert highlight("a<b>c", ((1, 4),)) == "a<mark>&lt;b&gt;</mark>c"
    text = "\n".join(f"line{i}" for i in range(20))
    start = text.index("line10")
    shown = highlight(text, ((start, start + 6),), context=1)
    assert shown.split("\n") == ["...", "line9", "<mark>line10</mark>", "line11", "..."]


def test_cli_prints_the_flagged_pairs(course, capsys):
    from ste_course.cli import main

    root = course["root"]
    code = main(["--solutions", str(root / "solutions"), "--exercises", str(root / "exercises"),
                 "similarity", str(root / "submitted"), "--out", str(root / "cli_report")])
    out = capsys.readouterr().out
    assert code == 0 and (root / "cli_report" / "similarity.html").is_file()
    assert "ann ~ bob (students)" in out and f"{len(course['flagged'])} flagged pair(s)" in out


def test_threshold_is_checked(tmp_path):
    with pytest.raises(ValueError, match="threshold=1.5"):
        similarity_report(tmp_path, tmp_path, tmp_path, tmp_path / "out", threshold=1.5)
