"""A notebook's thread count does not grow with the machine's cores.

Threads count against the notebook's RLIMIT_NPROC, so TensorFlow's pools (sized by the cores by
default) and NumPy's BLAS threads are fixed inside the sandbox: two TensorFlow threads of each
kind, one BLAS thread. Checked in a real sandboxed worker after an op ran (the pools exist).
"""

from __future__ import annotations

import json

import pytest

from ste_course.inside.server import TF_THREADS
from ste_course.sandbox import Limits, Worker, bwrap_path

PROBE = """
import json, os
import tensorflow as tf
tf.reduce_sum(tf.random.stateless_normal([256, 256], seed=[1, 2]) @ tf.ones([256, 256])).numpy()
print(json.dumps({"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                  "inter": tf.config.threading.get_inter_op_parallelism_threads(),
                  "blas": os.environ.get("OPENBLAS_NUM_THREADS"),
                  "threads": len(os.listdir("/proc/self/task"))}))
"""


def test_thread_pools_are_fixed_in_the_sandbox():
    if bwrap_path() is None:
        pytest.fail("bubblewrap (bwrap) is needed: run scripts/system-deps.sh")
    worker = Worker(0, sandbox=True, limits=Limits(cell_seconds=60, notebook_seconds=120))
    try:
        result = worker.run({"id": "threads", "cells": [{"index": 0, "source": PROBE, "locked": False}],
                             "calls": {}, "seed": 0})
    finally:
        worker.stop()
    ends = [e for e in result["events"] if e.get("event") == "end"]
    assert ends and not ends[0].get("error"), result
    seen = json.loads(ends[0]["stdout"].strip().splitlines()[-1])
    assert (seen["intra"], seen["inter"], seen["blas"]) == (TF_THREADS, TF_THREADS, "1"), seen
    # main thread + 2 intra-op + 2 inter-op + a few of TensorFlow's own; far from the limit of 64
    assert seen["threads"] <= 16, seen
