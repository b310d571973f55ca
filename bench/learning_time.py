"""Seconds to train the learning test's models: the binarized MLP and its float twin.

The learning test (tests/test_learning.py) asserts accuracy only; its training time is measured
here, side by side in one run: ``make_mlp("binary")`` (binary weights and activations through
``ste_sign``) and ``make_mlp("float")``, on the digits data, same epochs and seed.

    python bench/learning_time.py [--epochs 15] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from ste_utils.data import load_digits
    from ste_utils.training import accuracy, make_mlp, train

    data = load_digits()
    times, accs = {"float": [], "binary": []}, {"float": [], "binary": []}
    for _ in range(args.repeats):
        for kind in ("float", "binary"):  # interleaved, so load changes hit both
            start = time.perf_counter()
            model = make_mlp(kind, seed=0)
            train(model, data, epochs=args.epochs, seed=0)
            times[kind].append(time.perf_counter() - start)
            accs[kind].append(accuracy(model, data.x_test, data.y_test))
    print(f"\ndigits, {args.epochs} epochs, median of {args.repeats} interleaved runs, {os.cpu_count()} cores\n")
    print("| model | training s (build + fit) | test accuracy |")
    print("|---|---:|---:|")
    for kind in ("float", "binary"):
        print(f"| {kind} MLP | {statistics.median(times[kind]):.1f} | {100 * statistics.median(accs[kind]):.1f} % |")
    ratio = statistics.median(times["binary"]) / statistics.median(times["float"])
    print(f"\nbinary / float training time: {ratio:.2f}x; goal: binary under 30 s")


if __name__ == "__main__":
    main()
