"""The rule "this part must be your own implementation": forbidden ``ste_utils`` functions are
tripwires while the part runs. Runs in the student's kernel (inside the sandbox when grading).

A test cell's metadata may name reference functions (``"forbid": ["ste_utils.ste_sign"]``).
While the student's code runs for that part, :class:`Tripwire`:

* swaps the code of every function object running a forbidden function's code (the module
  attribute, aliases, re-exports, ``functools.partial`` and bound methods holding it, copies
  made with ``types.FunctionType``, closures it returned earlier), found through the garbage
  collector's referrers of the genuine code objects, for a stub that records the call and
  raises. The swap is process-wide, so a call from any thread is recorded: ``threading``,
  ``concurrent.futures`` pools, ``tf.py_function`` (TensorFlow's own threads), ``tf.data`` maps
  traced while the part runs, Keras callbacks;
* makes ``tf.function`` run eagerly, so a graph the student traced earlier runs its Python again
  (and meets the stub) instead of replaying operations recorded from the reference;
* watches the checking thread with ``sys.setprofile`` by code object, so a function re-created
  from a saved code object is seen there too;
* checks afterwards that every stub is still in place (restoring the genuine code from student
  code counts as a call).

What it does not see: the reference re-created from its source text (``importlib.reload``,
``exec`` of the file, the code copied into the notebook), a ``ConcreteFunction`` or saved
graph traced before the part, and student code that finds the stubs' own bookkeeping and undoes
it in the middle of the part. The rule stops reusing the reference, not copying it; the
similarity report compares every answer with the ``ste_utils`` source.
"""

from __future__ import annotations

import gc
import inspect
import sys
import threading
import types

_TEMPLATE = '''
def _outer():
{cells}
    def _tripwire(*args, **kwargs):
        hook = ("record", "label")
        if kwargs is hook:
            return ({names})
        return hook[0](hook[1])
    return _tripwire
'''


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
    """``with Tripwire(codes, forbid) as wire:`` ... ``wire.hits`` lists the forbidden calls.

    Args:
        codes: from :func:`reference_codes`, taken before any student code ran.
        forbid: labels such as ``"ste_utils.ste_sign"``.
    """

    def __init__(self, codes: dict, forbid):
        forbid = set(forbid)
        self.watched = {code: label for code, label in codes.items() if label in forbid}
        self.hits: list = []
        self._swapped: list = []  # (function, genuine code, stub code)
        self._lock = threading.Lock()

    def _record(self, label: str):
        with self._lock:
            self.hits.append(label)
        raise ForbiddenCall(f"{label} may not be used in this part")

    def _stub(self, code: types.CodeType) -> types.CodeType:
        """A code object with ``code``'s number of free variables whose body calls _record."""
        names = [f"_v{i}" for i in range(len(code.co_freevars))]
        source = _TEMPLATE.format(cells="".join(f"    {n} = None\n" for n in names) or "    pass\n",
                                  names=", ".join(names) + ("," if names else ""))
        namespace: dict = {}
        exec(compile(source, f"<forbidden {self.watched[code]}>", "exec"), namespace)  # noqa: S102
        stub = namespace["_outer"]().__code__
        consts = tuple((self._record, self.watched[code]) if c == ("record", "label") else c
                       for c in stub.co_consts)
        return stub.replace(co_consts=consts, co_name=code.co_name, co_qualname=code.co_qualname)

    def __enter__(self) -> "Tripwire":
        stubs = {code: self._stub(code) for code in self.watched}
        if stubs:
            for obj in gc.get_referrers(*stubs):
                if isinstance(obj, types.FunctionType) and obj.__code__ in stubs:
                    genuine = obj.__code__
                    obj.__code__ = stubs[genuine]
                    self._swapped.append((obj, genuine, stubs[genuine]))
        self._eager = _set_functions_eagerly(True)
        self._previous_profile, self._hook = sys.getprofile(), self._profile  # one bound method
        sys.setprofile(self._hook)
        return self

    def _profile(self, frame, event, arg):
        if event == "call" and frame.f_code in self.watched:
            with self._lock:
                self.hits.append(self.watched[frame.f_code])

    def __exit__(self, *exc) -> None:
        if sys.getprofile() is not self._hook:
            self.hits.append("sys.setprofile (the check that watches for reference calls was switched off)")
        sys.setprofile(self._previous_profile)
        _set_functions_eagerly(self._eager)
        for obj, genuine, stub in self._swapped:
            if obj.__code__ is not stub:
                self.hits.append(f"{self.watched[genuine]} (its code was put back while the part ran)")
            obj.__code__ = genuine
        self._swapped.clear()


def _set_functions_eagerly(value):
    """``tf.config.run_functions_eagerly(value)`` if TensorFlow is imported; the previous value."""
    tf = sys.modules.get("tensorflow")
    if tf is None or value is None:
        return None
    previous = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(value)
    return previous
