"""Write the example class in examples/submissions/ from solutions/ and exercises/.

Five students, in nbgrader's submitted layout (<student>/<assignment>/<notebook>.ipynb):

* ``complete``: every solution (the instructor's answers, markers removed);
* ``blank``: every released notebook as handed out;
* ``half_done``: the first half of each notebook's answer cells solved, the rest blank;
* ``plain_round``: complete, except that assignment 04's quantizer uses plain ``tf.round``
  without ``straight_through``, assignment 07's LSQ quantizer plain ``tf.round`` without an STE
  and assignment 08's Gumbel-softmax a plain one-hot (in each, the forward checks pass and the
  gradient checks fail);
* ``broken``: complete, except that assignment 03's notebook is truncated (invalid JSON).

Run: ``python examples/make_submissions.py`` (``make grade`` grades the result).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "examples" / "submissions"
PLAIN_ROUND = '''def quantize_ste(x, bits):
    """k-bit quantizer on [0, 1] with the gradient 1{0 <= x <= 1}, built with straight_through."""
    x = tf.convert_to_tensor(x)
    n = 2**bits - 1
    return tf.round(tf.clip_by_value(x, tf.zeros_like(x), tf.ones_like(x)) * n) / n'''

PLAIN_LSQ = '''def lsq_quantize(x, step, bits, signed=True, grad_scale=1.0):
    """LSQ with plain tf.round: the right values, no STE."""
    x = tf.convert_to_tensor(x)
    s = tf.convert_to_tensor(step, x.dtype)
    q_n, q_p = (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    return s * tf.clip_by_value(tf.round(x / s), tf.constant(-q_n, x.dtype), tf.constant(q_p, x.dtype))'''
PLAIN_GUMBEL = '''def gumbel_softmax_st(logits, noise, temperature):
    """The Gumbel-max sample alone: the right one-hot, no gradient."""
    logits = tf.convert_to_tensor(logits)
    return tf.one_hot(tf.argmax(logits + noise, axis=-1), tf.shape(logits)[-1], dtype=logits.dtype)'''
PLAIN = {"04_stop_gradient": {"quantize_ste": PLAIN_ROUND}, "07_lsq": {"lsq_quantize": PLAIN_LSQ},
         "08_discrete": {"gumbel_softmax_st": PLAIN_GUMBEL}}


def _answer(source: str) -> str:
    return "\n".join(l for l in source.splitlines()
                     if l.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


def _nb(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _solution_ids(nb: dict) -> list:
    return [c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"]
            if c.get("metadata", {}).get("nbgrader", {}).get("solution")]


def student_notebook(release: dict, solution: dict, solved: set, overrides: dict) -> dict:
    """The released notebook with the answers of ``solved`` grade ids filled in."""
    answers = {c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"]) for c in solution["cells"]
               if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    nb = json.loads(json.dumps(release))
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in overrides:
            cell["source"] = overrides[gid]
        elif gid in solved:
            cell["source"] = _answer(answers[gid])
    return nb


def main(out: Path = OUT) -> None:
    if out.exists():
        shutil.rmtree(out)
    for release_path in sorted((ROOT / "exercises").glob("*/*.ipynb")):
        assignment, name = release_path.parent.name, release_path.name
        release = _nb(release_path)
        solution = _nb(ROOT / "solutions" / assignment / name)
        ids = _solution_ids(solution)
        students = {
            "complete": student_notebook(release, solution, set(ids), {}),
            "blank": release,
            "half_done": student_notebook(release, solution, set(ids[: max(1, len(ids) // 2)]), {}),
            "plain_round": student_notebook(release, solution, set(ids), PLAIN.get(assignment, {})),
            "broken": student_notebook(release, solution, set(ids), {}),
        }
        for student, nb in students.items():
            target = out / student / assignment / name
            target.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
            if student == "broken" and assignment == "03_ste":
                text = text[: len(text) // 2]  # cut off mid-file, as a failed upload would
            target.write_text(text, encoding="utf-8")
    print(f"wrote {sum(1 for _ in out.glob('*/*/*.ipynb'))} notebooks in {out}")


if __name__ == "__main__":
    main()
