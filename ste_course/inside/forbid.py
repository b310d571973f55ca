"""The rule "this part must be your own implementation": forbidden ``ste_utils`` functions are
tripwires. Runs in the student's kernel (inside the sandbox when grading).

A test cell's metadata may name reference functions (``"forbid": ["ste_utils.ste_sign"]``); the
key marks a part that asks for the student's own implementation, and the grader adds every
``ste_utils`` function (private helpers too) whose forward or backward gives the part's answer,
derived by probing (:mod:`ste_course.authoring.derive`; ``ste-course check`` proves the list complete).
When grading, the harness arms one :class:`Tripwire` for every function any part of the notebook
forbids before the first cell runs and keeps it until the process ends
(:meth:`ste_course.inside.kernel.GradingSession.arm`):

* the code of every function object running a forbidden function's code (the module
  attribute, aliases, re-exports, ``functools.partial`` and bound methods holding it, copies
  made with ``types.FunctionType``, closures, layer methods), found through the garbage
  collector's referrers of the genuine code objects, is swapped for a stub with the same
  signature that records the call (with the cell running) and raises. The swap is
  process-wide, so a call from any thread, in any cell, is recorded: ``threading``,
  ``concurrent.futures`` pools, ``tf.py_function`` (TensorFlow's own threads), ``tf.data``
  maps, Keras callbacks; tracing the reference into a graph fails as well;
* while a part runs (:meth:`Tripwire.part`), functions made since from a genuine code object
  are swapped too, ``tf.function`` runs eagerly (a graph the student traced earlier runs its
  Python again), and the checking thread is watched with ``sys.setprofile`` by code equality,
  so a function re-made from a saved code object (or an equal ``code.replace`` copy) is seen
  there;
* after every cell and part every stub must still be in place (restoring the genuine code from
  student code counts as a call).

A call while a part runs is that part's evidence; any other call is reported with the cell's
``end`` event and costs every part that forbids the function (:func:`ste_course.grading.judge.judge`).

What it does not see: the reference re-created from its source text or bytecode
(``importlib.reload``, ``exec`` of the file, ``marshal`` of the ``.pyc``, the code copied into
the notebook, a ``code.replace`` copy called outside a part or from another thread than the
checking one), and student code that finds the rule's own bookkeeping (the genuine code
objects, the list of calls) and undoes it. The rule stops reusing the reference, not copying
it; the similarity report compares every answer with the ``ste_utils`` source.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import sys
import threading
import types

_TEMPLATE = '''
def _outer():
{cells}
    def {name}({params}):
        _forbidden_hook_ = ("record", "label")
        if _forbidden_hook_ is None:
            return ({names})
        return _forbidden_hook_[0](_forbidden_hook_[1])
    return {name}
'''


def _parameters(code: types.CodeType) -> str:
    """``code``'s parameter list as source, without defaults (a function object keeps its own
    ``__defaults__``): the stub has the genuine signature, so ``inspect.signature`` (Keras reads
    a layer's ``call`` this way) sees the same parameters."""
    names = code.co_varnames
    positional, posonly, kwonly = code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount
    params = list(names[:positional])
    if posonly:
        params.insert(posonly, "/")
    at = positional + kwonly
    if code.co_flags & inspect.CO_VARARGS:
        params.append("*" + names[at])
        at += 1
    elif kwonly:
        params.append("*")
    params += names[positional:positional + kwonly]
    if code.co_flags & inspect.CO_VARKEYWORDS:
        params.append("**" + names[at])
    if not all(p.lstrip("*").isidentifier() for p in params if p != "/" and p != "*"):
        return "*args, **kwargs"  # e.g. a comprehension's code (its argument is ".0")
    return ", ".join(params)


class ForbiddenCall(Exception):
    """Raised by a forbidden reference function while a part that forbids it runs."""


def reference_codes() -> dict:
    """``{code object: "ste_utils.<name>"}`` for every function of ``ste_utils`` and the code
    nested in it (closures such as the function ``ste()`` returns). Built once, before any
    student code runs, from the genuine modules, so re-binding a name does not hide a call."""
    codes = {}

    def walk(code, label):
        if code in codes:
            return
        codes[code] = label
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                walk(const, label)

    def visit(value, label, depth=0):
        if inspect.isfunction(value):
            walk(value.__code__, label)
        elif inspect.isclass(value) and getattr(value, "__module__", "").startswith("ste_utils"):
            for attr in vars(value).values():
                visit(attr, label, depth + 1)
        elif isinstance(value, (staticmethod, classmethod)):
            visit(value.__func__, label, depth)
        elif isinstance(value, property):
            for f in (value.fget, value.fset, value.fdel):
                visit(f, label, depth)
        elif isinstance(value, (dict, list, tuple)) and depth < 3:  # e.g. PROXIES: name -> Proxy(fn, fn')
            for item in (value.values() if isinstance(value, dict) else value):
                visit(item, label, depth + 1)

    modules = [m for n, m in sorted(sys.modules.items()) if n == "ste_utils" or n.startswith("ste_utils.")]
    for module in modules:
        for name, value in vars(module).items():
            if inspect.ismodule(value):
                continue
            if inspect.isfunction(value) and not value.__module__.startswith("ste_utils"):
                continue  # imported from elsewhere (numpy, keras, ...)
            visit(value, f"ste_utils.{name}")
    return codes


class Tripwire:
    """Forbidden reference functions made tripwires: ``wire.arm()`` for a whole run, ``with
    wire.part():`` around a test part; ``wire.hits`` lists the forbidden calls' labels,
    ``wire.calls`` each as ``{"function", "cell", "what", "part"}`` (``where()`` at the time of
    the call; ``part``: while a test part ran, whose evidence then says so).

    Args:
        codes: from :func:`reference_codes`, taken before any student code ran.
        forbid: labels such as ``"ste_utils.ste_sign"``.
        where: the cell running now (the grading session's), recorded with each call.
    """

    def __init__(self, codes: dict, forbid, where=lambda: None):
        forbid = set(forbid)
        self.watched = {code: label for code, label in codes.items() if label in forbid}
        self.where = where
        self.hits: list = []
        self.calls: list = []
        self._swapped: list = []  # (function, genuine code, stub code)
        self._stubs: dict = {}
        self._parts = 0  # > 0 while a test part runs (see part())
        self._lock = threading.Lock()

    def _record(self, label: str, what: str = "called"):
        with self._lock:
            self.hits.append(label)
            self.calls.append({"function": label, "cell": self.where(), "what": what, "part": self._parts > 0})
        if what == "called":
            raise ForbiddenCall(f"{label} may not be used in this notebook's graded parts")

    def _stub(self, code: types.CodeType) -> types.CodeType:
        """A code object with ``code``'s parameters and number of free variables whose body
        calls _record."""
        names = [f"_v{i}" for i in range(len(code.co_freevars))]
        source = _TEMPLATE.format(cells="".join(f"    {n} = None\n" for n in names) or "    pass\n",
                                  names=", ".join(names) + ("," if names else ""),
                                  name=code.co_name if code.co_name.isidentifier() else "_forbidden",
                                  params=_parameters(code))
        namespace: dict = {}
        exec(compile(source, f"<forbidden {self.watched[code]}>", "exec"), namespace)  # noqa: S102
        stub = namespace["_outer"]().__code__
        consts = tuple((self._record, self.watched[code]) if c == ("record", "label") else c
                       for c in stub.co_consts)
        return stub.replace(co_consts=consts, co_name=code.co_name, co_qualname=code.co_qualname)

    def arm(self) -> "Tripwire":
        """Swap every function object running a watched code for its stub (process-wide, so
        every thread meets it). Again later: also the functions made since from a genuine code."""
        if self.watched and not self._stubs:
            self._stubs = {code: self._stub(code) for code in self.watched}
        if self._stubs:
            for obj in gc.get_referrers(*self._stubs):
                if isinstance(obj, types.FunctionType) and obj.__code__ in self._stubs:
                    genuine = obj.__code__
                    obj.__code__ = self._stubs[genuine]
                    self._swapped.append((obj, genuine, self._stubs[genuine]))
        return self

    def verify(self) -> None:
        """Every stub still in place; one that student code replaced (the genuine code put back)
        counts as a call, and the stub goes back."""
        for obj, genuine, stub in self._swapped:
            if obj.__code__ is not stub:
                self._record(self.watched[genuine], "restored")
                obj.__code__ = stub

    def disarm(self) -> None:
        self.verify()
        for obj, genuine, _ in self._swapped:
            obj.__code__ = genuine
        self._swapped.clear()

    @contextlib.contextmanager
    def part(self):
        """Around a test part: armed (again), ``tf.function`` eager (a graph traced earlier runs
        its Python again and meets the stubs), the checking thread watched by code equality
        (a function re-made from a saved code object is seen there too), stubs verified after."""
        self.arm()
        eager = _set_functions_eagerly(True)
        previous, hook = sys.getprofile(), self._profile  # one bound method
        sys.setprofile(hook)
        self._parts += 1
        try:
            yield self
        finally:
            self._parts -= 1
            if sys.getprofile() is not hook:
                with self._lock:
                    self.hits.append("sys.setprofile (the check that watches for reference calls was switched off)")
            sys.setprofile(previous)
            _set_functions_eagerly(eager)
            self.verify()

    def _profile(self, frame, event, arg):
        if event == "call" and frame.f_code in self.watched:
            label = self.watched[frame.f_code]
            with self._lock:
                self.hits.append(label)
                self.calls.append({"function": label, "cell": self.where(), "what": "called", "part": True})

    def __enter__(self) -> "Tripwire":
        """For one part only (the student's own kernel and tests): armed, then disarmed."""
        self._part = self.part()
        self._part.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._part.__exit__(*exc)
        self.disarm()


def _set_functions_eagerly(value):
    """``tf.config.run_functions_eagerly(value)`` if TensorFlow is imported; the previous value."""
    tf = sys.modules.get("tensorflow")
    if tf is None or value is None:
        return None
    previous = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(value)
    return previous
