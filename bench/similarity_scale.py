"""How ``ste-course similarity`` grows with the number of cells in a submission.

Two students hand in the adversarial fixture's assignment (``tests/adversarial/source``) with
``N`` tiny code cells of their own added (two lines each; every other cell is the same two
lines, in both notebooks, so every such cell shares k-grams with every other: the worst case for
comparing cell by cell). The whole
report (reading, fingerprinting, comparing, HTML and CSV) is timed in a fresh process per size,
best of ``--repeat``, for this tree and, with ``--baseline DIR``, for another checkout's
``ste_course`` side by side (e.g. ``git archive <commit> ste_course | tar -x -C DIR``).

    python bench/similarity_scale.py [--cells 200,2000] [--repeat 3] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "adversarial" / "source"


def _cell(text: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": text}


def make_class(dest: Path, cells: int) -> None:
    """``dest/submitted/<student>/adv/adv.ipynb`` for two students with ``cells`` added cells."""
    source = json.loads((SOURCE / "adv" / "adv.ipynb").read_text(encoding="utf-8"))
    for s, student in enumerate(("ann", "bob")):
        nb = json.loads(json.dumps(source))
        for i in range(cells):
            if i % 2 == 0:  # every other cell: the same two lines, in both notebooks
                text = "value = tf.abs(x) * 3 + tf.ones_like(x)\ntotal = tf.reduce_sum(value - 1)\n"
            else:  # a cell of this student's own
                n = 10_000 * (s + 1) + i
                text = f"value_{n} = tf.abs(x) * {n} + tf.ones_like(x)\ntotal_{n} = tf.reduce_sum(value_{n} - {n})\n"
            nb["cells"].append(_cell(text))
        target = dest / "submitted" / student / "adv" / "adv.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(nb), encoding="utf-8")


def time_once(dest: Path, code: Path) -> float:
    """Seconds for one report, in a fresh interpreter importing ``ste_course`` from ``code``."""
    script = ("import sys, time\nfrom pathlib import Path\n"
              "from ste_course.grading.similarity import similarity_report\n"
              "d = Path(sys.argv[1])\nt = time.perf_counter()\n"
              f"similarity_report(d / 'submitted', Path({str(SOURCE)!r}), d / 'none', d / 'report', "
              f"library=Path({str(ROOT / 'ste_utils')!r}))\n"
              "print(time.perf_counter() - t)\n")
    env = dict(os.environ, PYTHONPATH=str(code))
    out = subprocess.run([sys.executable, "-c", script, str(dest)], env=env, check=True, cwd=dest,
                         capture_output=True, text=True).stdout  # cwd: not this tree, which -c would put first
    return float(out.split()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="200,2000", help="added cells per student, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout's root (holds ste_course/)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.cells.split(",")]
    trees = [("this tree", ROOT)] + ([("baseline", args.baseline)] if args.baseline else [])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            make_class(Path(tmp) / str(n), n)
            for name, code in trees:
                results[name, n] = min(time_once(Path(tmp) / str(n), code) for _ in range(args.repeat))
    print(f"similarity report, 2 students, best of {args.repeat} (s; x: relative to {sizes[0]} cells)")
    print(f"{'cells/student':>14} " + " ".join(f"{name:>20}" for name, _ in trees))
    for n in sizes:
        print(f"{n:>14} " + " ".join(f"{results[name, n]:>10.2f} ({results[name, n] / results[name, sizes[0]]:5.1f}x)"
                                     for name, _ in trees))
    return 0


if __name__ == "__main__":
    sys.exit(main())
