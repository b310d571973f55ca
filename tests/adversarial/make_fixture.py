"""Generate the adversarial suite's fixture assignment ``source/adv/adv.ipynb``.

A tiny nbgrader source notebook in the course's conventions: a locked set-up cell, one answer
cell (``my_sign``, solved with ``ste_utils.ste_sign``) and two graded test cells with visible
and hidden checks (2 points for values, 3 for gradients), then a closing markdown cell.

Run ``python tests/adversarial/make_fixture.py`` to regenerate the committed notebook.
"""

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ASSIGNMENT = "adv"
TARGET = HERE / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"


def _meta(grade_id, *, grade=False, solution=False, locked=True, points=None):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def _test(kind, points):
    return nbformat.v4.new_code_cell(
        f'"""{kind} of my_sign"""\ncheck(my_sign, "ste_sign/{kind}")\n'
        f'### BEGIN HIDDEN TESTS\ncheck(my_sign, "ste_sign/{kind}", hidden=True)\n### END HIDDEN TESTS',
        metadata=_meta(f"test_{kind}", grade=True, points=points))


def build():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                 "name": "python3"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Adversarial fixture\n\nImplement `my_sign`.",
                                      metadata=_meta("intro")),
        nbformat.v4.new_code_cell("import numpy as np\nimport tensorflow as tf\nimport ste_utils\n"
                                  "from ste_course.checks import check", metadata=_meta("setup")),
        nbformat.v4.new_code_cell("def my_sign(x, clip_value=1.0):\n    ### BEGIN SOLUTION\n"
                                  "    return ste_utils.ste_sign(x, clip_value)\n    ### END SOLUTION",
                                  metadata=_meta("answer", solution=True, locked=False)),
        _test("value", 2),
        _test("gradient", 3),
        nbformat.v4.new_markdown_cell("That is all.", metadata=_meta("outro")),
    ]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"adv-{i}"
    return nb


if __name__ == "__main__":
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build(), TARGET)
    print(TARGET)
