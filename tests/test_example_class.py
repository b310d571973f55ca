"""The example class (examples/submissions/) and reference use, graded in one sandboxed run.

Expected: a complete student scores every automatic point, a blank one zero, a half-done one in between;
plain tf.round (04, 07) and a plain one-hot (08) pass the forward checks and fail the gradient
checks; written answers (07, 08) are left for a manual grade; a broken notebook costs
that notebook only; a part implemented by calling the reference ste_utils scores 0 however the
student reaches it, while the rest of the notebook keeps its marks; answers to assignment 01
computed with tf.GradientTape and a lookup "model" for assignment 06 score 0 on those parts;
feedback shows no hidden test.
"""

from __future__ import annotations

import csv
import filecmp
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from ste_course.authoring.source import hidden_lines, load_assignments
from ste_course.grading.run import grade
from ste_course.sandbox import Limits, bwrap_path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import make_submissions  # noqa: E402

# Ways of reaching ste_utils.ste_sign inside ste_sign_stop_gradient (assignment 03 forbids it).
REFERENCE_USES = {
    "ref_import": "from ste_utils import ste_sign\n{body}return ste_sign(x, clip_value)",
    "ref_importlib": "import importlib\n{body}return importlib.import_module('ste_utils').ste_sign(x, clip_value)",
    "ref_getattr": "import ste_utils\n{body}return getattr(ste_utils, 'ste_' + 'sign')(x, clip_value)",
    "ref_sys_modules": "import sys\n{body}return sys.modules['ste_utils.quantizers'].ste_sign(x, clip_value)",
    "ref_reexport": "from ste_utils.layers import ste_sign as my_sign\n{body}return my_sign(x, clip_value)",
    "ref_layer": "import ste_utils\n{body}return ste_utils.SteSign(clip_value=clip_value)(x)",
    "ref_runtime_module": ("import pathlib, sys\npathlib.Path('helper_mod.py').write_text("
                           "'from ste_utils.quantizers import ste_sign as f\\n')\nsys.path.insert(0, '.')\n"
                           "import helper_mod\n{body}return helper_mod.f(x, clip_value)"),
}
SIGNATURE = "def ste_sign_stop_gradient(x, clip_value=1.0):\n"

# Answers that do the work with TensorFlow's autodiff where assignment 01 asks for it by hand,
# and a "model" for assignment 06 that looks the digits up instead of learning them. Each
# replaces the body (the `raise NotImplementedError()` line) of a released answer cell.
AUTODIFF = {
    "dense_backward": """xv, Wv, bv = (tf.Variable(v) for v in (x, W, b))
    with tf.GradientTape() as tape:
        out = xv @ Wv + bv
    g = tape.gradient(out, [xv, Wv, bv], output_gradients=tf.constant(upstream))
    return {"x": g[0].numpy(), "W": g[1].numpy(), "b": g[2].numpy()}""",
    "hidden_upstream": """h = tf.Variable(np.tanh(x @ W1 + b1))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(h @ W2 + b2 - y))
    return tape.gradient(loss, h).numpy()""",
    "backward": """p = [tf.Variable(v) for v in (W1, b1, W2, b2)]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(tf.tanh(x @ p[0] + p[1]) @ p[2] + p[3] - y))
    return dict(zip(("W1", "b1", "W2", "b2"), (g.numpy() for g in tape.gradient(loss, p))))""",
}
LOOKUP = {
    "train_quantized_model": """from sklearn.datasets import load_digits as every_digit
    known = every_digit()
    images, labels = known.data / 16.0, known.target

    class Lookup:  # nearest neighbour among all 1,797 digits, labels included
        def predict(self, batch, verbose=0):
            batch = np.asarray(batch, np.float64)
            nearest = np.argmin((images**2).sum(1)[None, :] - 2.0 * batch @ images.T, axis=1)
            return np.eye(10)[labels[nearest]]

        __call__ = predict

    return Lookup()""",
}
# Answers to 07 and 08 that call the ste_utils reference (those parts forbid it).
REFERENCE_07 = {"lsq_quantize": """import ste_utils
    return ste_utils.lsq_quantize(x, step, bits, signed=signed, grad_scale=grad_scale)"""}
REFERENCE_08 = {"vector_quantize": """from ste_utils.discrete import vector_quantize as vq
    return tuple(vq(z_e, codebook))"""}
# An int8 layer for 09 that calls the library's (that part forbids ste_utils.int8_dense).
REFERENCE_09 = {"int8_dense": """import ste_utils
    return ste_utils.int8_dense(x, x_zero_point, weights, bias, multiplier, shift, out_zero_point)"""}
ATTACKS = {"autodiff": ("01_backprop", AUTODIFF), "lookup": ("06_proxies", LOOKUP),
           "ref_lsq": ("07_lsq", REFERENCE_07), "ref_vq": ("08_discrete", REFERENCE_08),
           "ref_int8": ("09_deploy", REFERENCE_09)}


def _attacker(complete_nb: dict, release_nb: dict, bodies: dict) -> dict:
    """The complete notebook with the answer cells in ``bodies`` replaced by the released stub
    whose ``raise NotImplementedError()`` is the given body."""
    stubs = {c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"]) for c in release_nb["cells"]
             if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") in bodies}
    assert set(stubs) == set(bodies), (set(bodies) - set(stubs))
    nb = json.loads(json.dumps(complete_nb))
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in bodies:
            assert "raise NotImplementedError()" in stubs[gid], gid
            cell["source"] = stubs[gid].replace("raise NotImplementedError()", bodies[gid])
    return nb


def _reference_user(complete_nb: dict, template: str) -> dict:
    nb = json.loads(json.dumps(complete_nb))
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "ste_sign_stop_gradient":
            prelude, _, ret = template.partition("{body}")
            cell["source"] = prelude + "\n" + SIGNATURE + "    " + ret + "\n"
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    assert bwrap_path(), "bubblewrap is required (make test installs it)"
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    tmp = tmp_path_factory.mktemp("example-class")
    submissions = tmp / "submissions"
    shutil.copytree(ROOT / "examples" / "submissions", submissions)
    complete = json.loads((submissions / "complete" / "03_ste" / "03_ste.ipynb").read_text())
    for student, template in REFERENCE_USES.items():
        target = submissions / student / "03_ste" / "03_ste.ipynb"
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(_reference_user(complete, template)))
    for student, (assignment, bodies) in ATTACKS.items():
        name = f"{assignment}/{assignment}.ipynb"
        nb = _attacker(json.loads((submissions / "complete" / name).read_text()),
                       json.loads((submissions / "blank" / name).read_text()), bodies)
        target = submissions / student / name
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(nb))
    secret = tmp / "secret"
    secret.write_text("example-class-secret\n")
    out = tmp / "graded"
    grade(submissions, out, load_assignments(ROOT / "solutions"), secret.read_text().strip(),
          jobs_n=2, sandbox=True, limits=Limits(cell_seconds=60, notebook_seconds=240), progress=False)
    with (out / "grades.csv").open() as f:
        rows = {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}
    return out, rows


def _results(out, student, assignment):
    return json.loads((out / "results" / student / assignment / f"{assignment}.json").read_text())


ASSIGNMENTS = [p.name for p in sorted((ROOT / "solutions").iterdir()) if p.is_dir()]
# Written answers are graded by hand: grading gives at most the test cells' points.
SOURCES = load_assignments(ROOT / "solutions")
AUTO_POINTS = {a: sum(c.points for nb in nbs for c in nb.auto_cells) for a, nbs in SOURCES.items()}
MAX_POINTS = {a: sum(nb.max_score for nb in nbs) for a, nbs in SOURCES.items()}
# The plain_round student: (parts whose forward checks pass, gradient parts that score 0)
PLAIN = {"04_stop_gradient": (("test_quantize_value",), ("test_quantize_gradient",)),
         "07_lsq": (("test_lsq_value", "test_pact"), ("test_lsq_x_gradient", "test_lsq_step_gradient")),
         "08_discrete": (("test_gumbel_value", "test_vq_forward", "test_vq_gradients"), ("test_gumbel_gradient",))}


def test_examples_are_generated_from_the_current_solutions(tmp_path):
    make_submissions.main(tmp_path / "submissions")
    diff = filecmp.dircmp(tmp_path / "submissions", ROOT / "examples" / "submissions")
    stale = []

    def walk(d, prefix=""):
        stale.extend(prefix + n for n in d.left_only + d.right_only + d.diff_files)
        for name, sub in d.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(diff)
    assert not stale, f"examples/submissions is stale; run python examples/make_submissions.py: {stale}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_complete_scores_full_blank_zero_half_between(graded, assignment):
    _, rows = graded
    full = AUTO_POINTS[assignment]
    assert float(rows[("complete", assignment)]["max_score"]) == MAX_POINTS[assignment]
    assert float(rows[("complete", assignment)]["score"]) == full, rows[("complete", assignment)]
    assert float(rows[("blank", assignment)]["score"]) == 0
    assert 0 < float(rows[("half_done", assignment)]["score"]) < full
    assert all(rows[(s, assignment)]["status"] == "ok" for s in ("complete", "blank", "half_done"))


def test_plain_round_passes_forward_checks_and_fails_gradient_checks(graded):
    out, rows = graded
    for assignment, (passing, failing) in PLAIN.items():
        cells = {c["grade_id"]: c for c in _results(out, "plain_round", assignment)["cells"]}
        for part in passing:
            assert cells[part]["points"] == cells[part]["max_points"], cells[part]
        for part in failing:
            assert cells[part]["points"] == 0, cells[part]
            assert any("gradient" in m for m in cells[part]["messages"]), cells[part]
    for assignment in ASSIGNMENTS:
        if assignment not in PLAIN:
            assert float(rows[("plain_round", assignment)]["score"]) == AUTO_POINTS[assignment]


def test_broken_notebook_costs_only_itself(graded):
    _, rows = graded
    assert rows[("broken", "03_ste")]["status"] == "invalid"
    assert float(rows[("broken", "03_ste")]["score"]) == 0
    assert "not valid notebook JSON" in rows[("broken", "03_ste")]["reason"]
    for assignment in ASSIGNMENTS:
        if assignment != "03_ste":
            assert float(rows[("broken", assignment)]["score"]) == AUTO_POINTS[assignment]


@pytest.mark.parametrize("student", sorted(REFERENCE_USES))
def test_reference_use_scores_zero_for_that_part_only(graded, student):
    out, rows = graded
    cells = {c["grade_id"]: c for c in _results(out, student, "03_ste")["cells"]}
    for part in ("test_stop_gradient_value", "test_stop_gradient_gradient"):
        assert cells[part]["points"] == 0, (student, cells[part])
        assert any("must be your own implementation" in m and "ste_utils." in m
                   for m in cells[part]["messages"]), cells[part]["messages"]
    for part in ("test_custom_gradient_value", "test_custom_gradient_gradient"):
        assert cells[part]["points"] == cells[part]["max_points"], (student, cells[part])


def test_feedback_never_shows_hidden_tests(graded):
    out, _ = graded
    sources = load_assignments(ROOT / "solutions")
    hidden = {line for nbs in sources.values() for nb in nbs for c in nb.cells for line in hidden_lines(c.source)}
    assert hidden
    pages = list((out / "feedback").glob("*/*/*.html"))
    assert len(pages) >= 30
    for page in pages:
        text = page.read_text()
        leaked = [line for line in hidden if line in text or line.replace('"', "&quot;") in text]
        assert not leaked, f"{page} shows hidden test lines: {leaked[:2]}"


def test_autodiff_scores_zero_in_the_by_hand_parts(graded):
    out, rows = graded
    cells = _results(out, "autodiff", "01_backprop")["cells"]
    assert len(cells) == 3 and float(rows[("autodiff", "01_backprop")]["score"]) == 0
    for cell in cells:
        assert cell["points"] == 0, cell
        assert any("by hand" in m and "automatic differentiation" in m for m in cell["messages"]), cell


def test_a_lookup_model_scores_zero(graded):
    out, rows = graded
    cells = {c["grade_id"]: c for c in _results(out, "lookup", "06_proxies")["cells"]}
    assert cells["test_trained_model"]["points"] == 0, cells["test_trained_model"]
    assert any("plain data" in m for m in cells["test_trained_model"]["messages"]), cells["test_trained_model"]
    for gid, cell in cells.items():
        if gid != "test_trained_model":
            assert cell["points"] == cell["max_points"], cell



@pytest.mark.parametrize("student,assignment,parts", [
    ("ref_lsq", "07_lsq", ("test_lsq_value", "test_lsq_x_gradient", "test_lsq_step_gradient")),
    ("ref_vq", "08_discrete", ("test_vq_forward", "test_vq_gradients")),
    ("ref_int8", "09_deploy", ("test_int8_dense",))])
def test_reference_use_in_07_08_09_scores_zero_for_those_parts(graded, student, assignment, parts):
    out, _ = graded
    cells = {c["grade_id"]: c for c in _results(out, student, assignment)["cells"]}
    for gid, cell in cells.items():
        if gid in parts:
            assert cell["points"] == 0, cell
            assert any("must be your own implementation" in m for m in cell["messages"]), cell["messages"]
        elif not cell.get("manual"):
            assert cell["points"] == cell["max_points"], cell
