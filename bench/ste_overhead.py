"""What does a straight-through estimator cost per training step?

Times one training step (forward + backward + Adam update on one batch of the 8x8 digits) of
the same multilayer perceptron, 64-256-256-10, in these variants:

==================  ==========  ==========================================================
variant             env         model
==================  ==========  ==========================================================
float               keras3      Dense -> BatchNorm -> tanh (x2), Dense -> BatchNorm
ste_sign            keras3      ste_utils.BinaryDense + ste_utils.SteSign (tf.custom_gradient)
ste_factory_cg      keras3      ste_utils.ste(binarize, "hardtanh", idiom="custom_gradient")
ste_stop_gradient   keras3      ste_utils.ste(binarize, "hardtanh", idiom="stop_gradient")
float               larq        the float model in tf-keras (Keras 2), Larq's reference
larq_ste_sign       larq        larq.layers.QuantDense(input_quantizer="ste_sign",
                                kernel_quantizer="ste_sign", kernel_constraint="weight_clip")
==================  ==========  ==========================================================

All binary variants binarize every weight matrix and the two hidden activations with a sign
whose gradient is 1{|x| <= 1}, keep BatchNorm before each sign, leave the first layer's input
real-valued and clip the latent weights to [-1, 1] after each update (``LatentClip`` /
``weight_clip``). Only the quantizers differ from the float model; the float model uses tanh.

Fairness. Every variant runs the same hand-written train step, compiled once with
``tf.function``: ``GradientTape`` -> ``model(x, training=True)`` -> sparse softmax
cross-entropy -> ``tape.gradient`` -> ``optimizer.apply_gradients`` (Adam, 1e-3). This is what
``model.fit`` runs per batch in both Keras 3 and tf-keras, without their callback, metric and
data-adapter layers, which differ between the two Keras versions and would dominate a step
this small. Batches are tensors prepared beforehand; a step's time is the wall time of K calls
divided by K, ending with a read of the last loss.

Interleaving. The main process runs no TensorFlow. It starts one long-lived worker per
environment (``--worker keras3`` with this interpreter, ``--worker larq`` with the Larq
virtual environment's), each a copy of this script, and talks to them over stdin/stdout in
JSON lines: ``setup`` (build, trace and warm up every variant), then many ``run`` requests
("run K steps of variant V", answered with the seconds measured inside the worker, so the pipe
is not timed). Each round sends one ``run`` for every (worker, variant) pair, in an order
shuffled per round; only one worker computes at any time, the other waits on its pipe.
Reported: per variant the median over rounds of ms/step, the interquartile range, and the
median over rounds of the ratio to the float step of the same round (paired ratios cancel
slow drifts in machine load).

Larq needs legacy tf-keras and numpy < 2, which the course environment cannot hold. The script
creates ``bench/.larq-venv`` on demand (``pip install`` of LARQ_REQUIREMENTS below; a stamp
file keyed on them makes later runs skip it) and runs its worker with TF_USE_LEGACY_KERAS=1.
Without it (offline, ``--no-larq``) the Larq rows are left out and a line says why.

Usage:
    python bench/ste_overhead.py [--rounds 100] [--steps 25] [--batch-size 64] [--quick]
                                 [--threads 1] [--jit] [--no-larq] [--setup-larq]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LARQ_VENV = HERE / ".larq-venv"
_TF_PIN = "2.21.0"
LARQ_REQUIREMENTS = (
    f'tensorflow-cpu=={_TF_PIN}; sys_platform == "linux" and platform_machine == "x86_64"',
    f'tensorflow=={_TF_PIN}; sys_platform != "linux" or platform_machine != "x86_64"',
    "tf-keras==2.21.0",
    "numpy<2",
    "larq==0.14.0",
)
TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}
HIDDEN = (256, 256)
N_CLASSES = 10
LEARNING_RATE = 1e-3
GOAL_RATIO = 1.05


# ====================================================================== workers (TensorFlow)
def _configure_tensorflow(threads: int):
    """Import TensorFlow with ``threads`` intra-op and inter-op threads (0: TF's default)."""
    os.environ.update(TF_ENV)
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def _course_models(keras):
    """Builders of the Keras 3 variants, by name; each returns an uncompiled model."""
    import ste_utils
    from ste_utils.layers import BinaryDense, LatentClip, SteSign

    class FunctionDense(keras.layers.Dense):
        """BinaryDense with any quantizer function (bench-only: the stop_gradient idiom)."""

        def __init__(self, units, quantizer, **kwargs):
            super().__init__(units, kernel_constraint=LatentClip(1.0), **kwargs)
            self.quantizer = quantizer

        def call(self, inputs):
            return keras.ops.matmul(inputs, self.quantizer(self.kernel))

    def stack(dense, activation):
        layers = [keras.Input((64,))]
        for units in HIDDEN:
            layers += [dense(units), keras.layers.BatchNormalization(), activation()]
        layers += [dense(N_CLASSES), keras.layers.BatchNormalization()]
        return keras.Sequential(layers)

    def with_function(quantizer):
        return lambda: stack(lambda units: FunctionDense(units, quantizer, use_bias=False),
                             lambda: keras.layers.Activation(quantizer))

    return {
        "float": lambda: stack(lambda units: keras.layers.Dense(units, use_bias=False),
                               lambda: keras.layers.Activation("tanh")),
        "ste_sign": lambda: stack(lambda units: BinaryDense(units, use_bias=False), SteSign),
        "ste_factory_cg": with_function(
            ste_utils.ste(ste_utils.binarize, proxy="hardtanh", idiom="custom_gradient")),
        "ste_stop_gradient": with_function(
            ste_utils.ste(ste_utils.binarize, proxy="hardtanh", idiom="stop_gradient")),
    }


def _larq_models(keras):
    """Builders of the tf-keras variants: the float twin and Larq's QuantDense with ste_sign."""
    import larq

    def float_model():
        layers = [keras.Input((64,))]
        for units in HIDDEN:
            layers += [keras.layers.Dense(units, use_bias=False),
                       keras.layers.BatchNormalization(), keras.layers.Activation("tanh")]
        layers += [keras.layers.Dense(N_CLASSES, use_bias=False),
                   keras.layers.BatchNormalization()]
        return keras.Sequential(layers)

    def larq_model():
        # The sign of each hidden activation is the next layer's input_quantizer (Larq's idiom).
        layers = [keras.Input((64,))]
        for index, units in enumerate(HIDDEN + (N_CLASSES,)):
            layers += [larq.layers.QuantDense(
                units, input_quantizer=None if index == 0 else "ste_sign",
                kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False),
                keras.layers.BatchNormalization()]
        return keras.Sequential(layers)

    return {"float": float_model, "larq_ste_sign": larq_model}


def _make_step(tf, keras, model, jit: bool):
    """The compiled train step shared by every variant (see the module docstring)."""
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=jit)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


class _Worker:
    """One environment's variants, each a model with its compiled train step and batches."""

    def __init__(self, kind, data_path, batch_size, threads, jit, warmup, seed=0):
        tf = _configure_tensorflow(threads)
        if kind == "keras3":
            import keras
            builders = _course_models(keras)
        else:
            keras = tf.keras  # tf-keras under TF_USE_LEGACY_KERAS=1
            builders = _larq_models(keras)
        self.tf = tf
        with open(data_path, "rb") as handle:
            import numpy as np
            arrays = np.load(handle)
            x, y = arrays["x"], arrays["y"]
        n = len(x) // batch_size
        self.batches = [(tf.constant(x[i * batch_size:(i + 1) * batch_size]),
                         tf.constant(y[i * batch_size:(i + 1) * batch_size])) for i in range(n)]
        self.steps, self.cursor = {}, {}
        for name, build in builders.items():
            keras.utils.set_random_seed(seed)
            model = build()
            self.steps[name] = _make_step(tf, keras, model, jit)
            self.cursor[name] = 0
            self.run(name, warmup)  # traces, then warms up
        self.info = {"variants": list(builders), "versions": self._versions(kind, keras),
                     "batches": n}

    @staticmethod
    def _versions(kind, keras):
        from importlib import metadata

        names = ["tensorflow-cpu", "tensorflow", "numpy"]
        names += ["keras"] if kind == "keras3" else ["tf-keras", "larq"]
        found = {}
        for name in names:
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
        found["keras module"] = keras.layers.Dense.__module__.split(".")[0]
        return found

    def run(self, name, steps):
        """Seconds for ``steps`` train steps of variant ``name``, ending with a host read."""
        step, batches = self.steps[name], self.batches
        i = self.cursor[name]
        start = time.perf_counter()
        loss = None
        for _ in range(steps):
            x, y = batches[i % len(batches)]
            loss = step(x, y)
            i += 1
        if loss is not None:
            float(loss.numpy())
        elapsed = time.perf_counter() - start
        self.cursor[name] = i
        return elapsed


def worker_main(kind: str) -> int:
    """Serve JSON-line requests on stdin; answers go to the original stdout only."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed, by Python or C, goes to stderr
    sys.stdout = sys.stderr
    worker = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["cmd"] == "setup":
                start = time.perf_counter()
                worker = _Worker(kind, request["data"], request["batch_size"],
                                 request["threads"], request["jit"], request["warmup"])
                answer = {**worker.info, "setup_s": time.perf_counter() - start}
            elif request["cmd"] == "run":
                answer = {"seconds": worker.run(request["variant"], request["steps"])}
            elif request["cmd"] == "quit":
                return 0
            else:
                answer = {"error": f"unknown cmd {request['cmd']!r}"}
        except Exception as err:  # reported to the driver, which stops
            import traceback
            answer = {"error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc()}
        protocol.write(json.dumps(answer) + "\n")
    return 0


# ====================================================================== driver (no TensorFlow)
class WorkerProcess:
    """A long-lived ``--worker`` subprocess driven over JSON lines."""

    def __init__(self, kind, python, extra_env=None):
        self.kind = kind
        self.log = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, **TF_ENV, **(extra_env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [str(python), str(Path(__file__).resolve()), "--worker", kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            bufsize=1, env=env, cwd=str(ROOT))

    def ask(self, **request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.kind} worker exited; its stderr ends with:\n{self.stderr_tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.kind} worker: {answer['error']}\n{answer.get('traceback', '')}")
        return answer

    def stderr_tail(self, lines=25):
        self.log.seek(0)
        return "".join(self.log.readlines()[-lines:])

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.close()


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_larq_venv(venv: Path = LARQ_VENV, timeout: float = 1800.0):
    """Create ``venv`` with LARQ_REQUIREMENTS unless its stamp shows it is complete.

    Returns:
        (python path or None, seconds spent creating it (0.0 if it existed), message).
    """
    key = hashlib.sha256("\n".join(LARQ_REQUIREMENTS).encode()).hexdigest()[:16]
    stamp = venv / f".installed-{key}"
    python = _venv_python(venv)
    if stamp.exists() and python.exists():
        return python, 0.0, f"using existing {venv.relative_to(ROOT)}"
    print(f"creating {venv.relative_to(ROOT)} (Larq, tf-keras, numpy<2; takes minutes once) ...",
          file=sys.stderr, flush=True)
    start = time.perf_counter()
    commands = [[sys.executable, "-m", "venv", "--clear", str(venv)],
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                 *LARQ_REQUIREMENTS]]
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as err:
            return None, time.perf_counter() - start, f"{type(err).__name__}: {err}"
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            return None, time.perf_counter() - start, f"`{' '.join(command[:4])} ...` failed: {tail}"
    stamp.touch()
    seconds = time.perf_counter() - start
    return python, seconds, f"created {venv.relative_to(ROOT)} in {seconds:.0f} s"


def _write_data(path: Path):
    """Save the digits training split (ste_utils.data) for the workers to read."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from ste_utils.data import load_digits  # ste_utils/__init__ imports TF, but runs nothing

    split = load_digits()
    with open(path, "wb") as handle:
        np.savez(handle, x=split.x_train, y=split.y_train)


def _quantile(values, q):
    values = sorted(values)
    position = q * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def measure(workers, rounds, steps, seed=0, progress=True):
    """Round-robin over every (worker, variant): per-round ms/step lists keyed (env, variant)."""
    pairs = [(w, v) for w in workers for v in w.variants]
    times = {(w.kind, v): [] for w, v in pairs}
    rng = random.Random(seed)
    for r in range(rounds):
        order = pairs[:]
        rng.shuffle(order)
        for worker, variant in order:
            seconds = worker.ask(cmd="run", variant=variant, steps=steps)["seconds"]
            times[(worker.kind, variant)].append(1e3 * seconds / steps)
        if progress:
            print(f"\rround {r + 1}/{rounds}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return times


def paired_ratios(times, key, reference):
    """Per-round ratios times[key][r] / times[reference][r] (same round, so same load)."""
    return [a / b for a, b in zip(times[key], times[reference])]


def paired_ratio(times, key, reference):
    """Median over rounds of times[key][r] / times[reference][r]."""
    return statistics.median(paired_ratios(times, key, reference))


def _spread(values):
    return f"{_quantile(values, .25):.3f}-{_quantile(values, .75):.3f}"


DESCRIPTIONS = {
    ("keras3", "float"): "(a) float MLP, Keras 3",
    ("keras3", "ste_sign"): "(b) ste_utils BinaryDense + SteSign (custom_gradient)",
    ("keras3", "ste_factory_cg"): "(b') ste_utils.ste(binarize, hardtanh, custom_gradient)",
    ("keras3", "ste_stop_gradient"): "(c) ste_utils.ste(binarize, hardtanh, stop_gradient)",
    ("larq", "float"): "float MLP, tf-keras (Larq's env)",
    ("larq", "larq_ste_sign"): "(d) Larq QuantDense, ste_sign",
}


def table(times):
    """Markdown table: medians over rounds, IQRs, and paired ratios to the float steps."""
    rows = ["| variant | env | ms/step (median) | IQR ms | x float Keras 3 (IQR) "
            "| x float same env |",
            "|---|---|---:|---:|---:|---:|"]
    for key, values in times.items():
        env, _ = key
        ratios = paired_ratios(times, key, ("keras3", "float"))
        rows.append(
            f"| {DESCRIPTIONS.get(key, key[1])} | {env} | {statistics.median(values):.3f} | "
            f"{_spread(values)} | {statistics.median(ratios):.3f} ({_spread(ratios)}) | "
            f"{paired_ratio(times, key, (env, 'float')):.3f} |")
    return "\n".join(rows)


def _judge(ratios, goal):
    """'met' / 'NOT met' by the median, 'within noise' when the IQR straddles the goal."""
    low, high = _quantile(ratios, .25), _quantile(ratios, .75)
    median = statistics.median(ratios)
    if low <= goal <= high:
        return f"within noise, median {'<=' if median <= goal else '>'} goal"
    return "met" if median <= goal else "NOT met"


def verdict(times):
    """Lines on the issue's goal: the STE step <= 1.05x the float step and <= Larq's step."""
    float_key, larq_key = ("keras3", "float"), ("larq", "larq_ste_sign")
    lines = []
    for variant in ("ste_sign", "ste_stop_gradient"):
        key = ("keras3", variant)
        ratios = paired_ratios(times, key, float_key)
        ratio = statistics.median(ratios)
        lines.append(f"- {variant} / float = {ratio:.3f} (IQR {_spread(ratios)}; goal <= "
                     f"{GOAL_RATIO}: {_judge(ratios, GOAL_RATIO)})")
        if larq_key in times:
            direct = paired_ratios(times, key, larq_key)
            # Each quantized step over its own environment's float step, then compared:
            # removes the Keras 3 vs tf-keras difference of the shared parts (optimizer, BN).
            own = [q / f for q, f in zip(times[key], times[float_key])]
            larq_own = [q / f for q, f in zip(times[larq_key], times[("larq", "float")])]
            normalised = statistics.median(a / b for a, b in zip(own, larq_own))
            lines.append(f"- {variant} / Larq ste_sign = {statistics.median(direct):.3f} "
                         f"(IQR {_spread(direct)}; goal <= 1: "
                         f"{_judge(direct, 1.0)}); "
                         f"overheads over each env's float: {ratio:.3f} vs "
                         f"{statistics.median(larq_own):.3f}, ratio {normalised:.3f}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="interleaved rounds (100)")
    parser.add_argument("--steps", type=int, default=25, help="steps per variant per round (25)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps after tracing (30)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="TF intra- and inter-op threads per worker (default 1: steadier on "
                             "a shared machine; 0 = TensorFlow's default)")
    parser.add_argument("--jit", action="store_true", help="compile the steps with XLA")
    parser.add_argument("--quick", action="store_true", help="5 rounds of 10 steps, 10 warm-up")
    parser.add_argument("--no-larq", action="store_true", help="skip the Larq environment")
    parser.add_argument("--setup-larq", action="store_true",
                        help="only create the Larq venv (if missing) and exit")
    parser.add_argument("--worker", choices=("keras3", "larq"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup = 5, 10, 10
    for name in ("rounds", "steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. Received: {getattr(args, name)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    if args.setup_larq:
        python, _, message = ensure_larq_venv()
        print(message)
        return 0 if python else 1

    larq_note, larq_python = "Larq: skipped (--no-larq)", None
    if not args.no_larq:
        larq_python, _, message = ensure_larq_venv()
        larq_note = (f"Larq: {message}" if larq_python else
                     f"Larq: NOT MEASURED, the Larq venv could not be created ({message})")
    workers = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "digits.npz"
        _write_data(data)
        setup = dict(cmd="setup", data=str(data), batch_size=args.batch_size,
                     threads=args.threads, jit=args.jit, warmup=args.warmup)
        try:
            workers.append(WorkerProcess("keras3", sys.executable))
            if larq_python:
                workers.append(WorkerProcess("larq", larq_python, {"TF_USE_LEGACY_KERAS": "1"}))
            infos = {}
            for worker in workers:  # sequential: one environment computes at a time
                try:
                    infos[worker.kind] = worker.ask(**setup)
                except RuntimeError as err:
                    if worker.kind != "larq":
                        raise
                    larq_note = f"Larq: NOT MEASURED, its worker failed: {err}"
                    worker.close()
                worker.variants = infos.get(worker.kind, {}).get("variants", [])
            workers = [w for w in workers if w.variants]
            start = time.perf_counter()
            times = measure(workers, args.rounds, args.steps)
            seconds = time.perf_counter() - start
        finally:
            for worker in workers:
                worker.close()

    print(f"## STE overhead per training step (batch {args.batch_size}, 64-256-256-10 MLP, Adam)\n")
    print(f"command: {' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}")
    print(f"{args.rounds} interleaved rounds x {args.steps} steps per variant, "
          f"{args.warmup} warm-up steps, {args.threads or 'default'} TF thread(s) per worker, "
          f"jit_compile={args.jit}; measuring took {seconds:.0f} s")
    for kind, info in infos.items():
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        print(f"env {kind}: {versions}; setup + tracing {info['setup_s']:.1f} s")
    print(larq_note)
    print()
    print(table(times))
    print()
    print(verdict(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
