"""How long does each course notebook take to run?

Executes every notebook matching ``--pattern`` (default ``course/*.ipynb``, relative to the
repository root) one after another, each in a fresh ``python3`` kernel started by nbclient
(the kernel of this interpreter), with the notebook's folder as working directory, and prints
a markdown table of wall-clock seconds per notebook (kernel start included) and the total.
Notebooks are read and executed in memory: nothing is written back, so committed notebooks
stay without outputs. A notebook that raises is reported as FAILED with the error's first
line, and the script then exits with status 1.

Usage:
    python bench/chapter_times.py [--pattern 'course/0*.ipynb'] [--timeout 600]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}
BUDGET_S = 60  # the course's limit per notebook on 2 cores
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def notebooks(pattern: str) -> list[Path]:
    """Notebooks matching ``pattern`` (a glob, relative to the repository root or absolute)."""
    matches = glob.glob(os.path.join(str(ROOT), pattern), recursive=True)
    return sorted(Path(m).resolve() for m in matches if m.endswith(".ipynb")
                  and ".ipynb_checkpoints" not in Path(m).parts)


def _shown(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def run_notebook(path: Path, timeout: int, kernel_name: str = "python3"):
    """Execute ``path`` in a fresh kernel; return (seconds, error line or None)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
        error = None
    except CellExecutionError as err:
        lines = [line for line in ANSI.sub("", str(err)).splitlines() if line.strip()]
        error = lines[-1] if lines else type(err).__name__
    except (CellTimeoutError, DeadKernelError) as err:
        error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return time.perf_counter() - start, error


def table(results) -> str:
    """Markdown table of (path, seconds, error) rows and their total."""
    rows = ["| notebook | seconds | status |", "|---|---:|---|"]
    for path, seconds, error in results:
        status = "ok" if error is None else f"FAILED: {error[:100]}"
        if error is None and seconds > BUDGET_S:
            status = f"ok, over the {BUDGET_S} s budget"
        rows.append(f"| {_shown(path)} | {seconds:.1f} | {status} |")
    total = sum(seconds for _, seconds, _ in results)
    rows.append(f"| **total ({len(results)} notebooks)** | **{total:.1f}** | |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pattern", default="course/*.ipynb",
                        help="glob, relative to the repository root or absolute "
                             "(default course/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (600)")
    args = parser.parse_args(argv)
    os.environ.update(TF_ENV)  # inherited by every kernel
    paths = notebooks(args.pattern)
    if not paths:
        print(f"no notebook matches {args.pattern!r} under {ROOT}", file=sys.stderr)
        return 1
    results = []
    for path in paths:
        print(f"running {_shown(path)} ...", file=sys.stderr, flush=True)
        seconds, error = run_notebook(path, args.timeout)
        results.append((path, seconds, error))
    print(f"## Seconds per notebook (one sequential run, fresh kernel each, "
          f"{os.cpu_count()} CPUs)\n")
    print(table(results))
    return 0 if all(error is None for _, _, error in results) else 1


if __name__ == "__main__":
    sys.exit(main())
