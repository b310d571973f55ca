""""This part must be your own implementation": the forbidden reference is caught however it is
reached (another thread, TensorFlow's own threads, a tf.data map, a pool, a graph traced
earlier), an own implementation is not, and everything is put back afterwards."""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import types

import numpy as np
import pytest
import tensorflow as tf

import ste_utils
from ste_course.inside.forbid import Tripwire, reference_codes
from ste_course.inside.kernel import collect
from ste_course.specs.base import draw_cases, get_spec

tf.get_logger().setLevel("ERROR")
FORBID = ["ste_utils.ste_sign"]
CODES = reference_codes()
SPEC = get_spec("ste_sign/value")
CASE = draw_cases(SPEC, hidden=False, seed=0)[0]
GENUINE = ste_utils.ste_sign.__code__


def _own(x, clip_value=1.0):
    return tf.where(x >= 0, tf.ones_like(x), -tf.ones_like(x))


def in_a_thread(x, clip_value=1.0):
    out = {}

    def work():
        try:
            out["y"] = ste_utils.ste_sign(x, clip_value)
        except Exception:  # the thread's failure is swallowed: the call still counts
            pass

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return out.get("y", _own(x))


def in_a_pool(x, clip_value=1.0):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return pool.submit(ste_utils.ste_sign, x, clip_value).result()


def in_py_function(x, clip_value=1.0):
    """In a graph, tf.py_function runs its Python on one of TensorFlow's own threads."""
    graph = tf.function(lambda t: tf.py_function(lambda u: ste_utils.ste_sign(u, clip_value), [t], Tout=t.dtype))
    return graph(x)


def in_a_data_map(x, clip_value=1.0):
    data = tf.data.Dataset.from_tensors(x).map(lambda t: ste_utils.ste_sign(t, clip_value))
    return next(iter(data))


_traced = tf.function(lambda x: ste_utils.ste_sign(x, 1.0))
_traced(tf.constant(CASE["x"]))  # traced before the part: the graph holds the reference's ops


def traced_earlier(x, clip_value=1.0):
    return _traced(x)


_alias = functools.partial(ste_utils.quantizers.ste_sign, clip_value=1.0)
_copy = types.FunctionType(ste_utils.ste_sign.__code__, ste_utils.quantizers.__dict__)


def through_a_copy(x, clip_value=1.0):
    return _copy(x, clip_value)


def through_a_partial(x, clip_value=1.0):
    return _alias(x)


def restores_the_code(x, clip_value=1.0):
    ste_utils.ste_sign.__code__ = GENUINE  # undo the tripwire, then call the reference
    return ste_utils.ste_sign(x, clip_value)


@pytest.mark.parametrize("student", [in_a_thread, in_a_pool, in_py_function, in_a_data_map, traced_earlier,
                                     through_a_copy, through_a_partial, restores_the_code])
def test_the_reference_is_caught_however_it_is_reached(student):
    evidence = collect(SPEC, student, CASE, FORBID, CODES)
    assert "ste_utils.ste_sign" in evidence.get("forbidden", ""), evidence
    assert ste_utils.ste_sign.__code__ is GENUINE and _copy.__code__ is GENUINE, "put back afterwards"
    np.testing.assert_array_equal(ste_utils.ste_sign(tf.constant([-1.0, 0.0])).numpy(), [-1.0, 1.0])


def test_an_own_implementation_passes_and_tf_function_is_left_as_it_was():
    before = tf.config.functions_run_eagerly()
    evidence = collect(SPEC, tf.function(_own), CASE, FORBID, CODES)
    assert set(evidence) == {"outputs"}, evidence
    assert tf.config.functions_run_eagerly() == before


def test_other_reference_functions_stay_usable():
    def uses_quantize(x, clip_value=1.0):
        return 2.0 * ste_utils.ste_quantize((x + 1.0) / 2.0, 1) - 1.0 + 0.0 * _own(x)

    assert set(collect(SPEC, uses_quantize, CASE, FORBID, CODES)) == {"outputs"}


def test_a_call_after_the_part_is_not_counted():
    with Tripwire(CODES, FORBID) as wire:
        pass
    ste_utils.ste_sign(tf.constant([1.0]))
    assert wire.hits == []


def test_grading_mode_shares_one_tripwire_between_the_cases_of_a_call():
    from ste_course.inside.kernel import GradingSession, _install_session, check
    from ste_course.specs.base import encode_case

    planned = {"spec": "ste_sign/value", "cases": [encode_case(CASE)] * 3, "forbid": FORBID}
    session = GradingSession(calls={"7": [planned, planned]}, cell=7, reference_codes=CODES)
    _install_session(session)
    try:
        check(_own, "ste_sign/value")
        check(in_a_pool, "ste_sign/value")
    finally:
        _install_session(None)
    own, pool = session.evidence["7"]
    assert [set(r) for r in own["results"]] == [{"outputs"}] * 3
    assert [r.get("forbidden") for r in pool["results"]] == ["ste_utils.ste_sign"] * 3
    assert ste_utils.ste_sign.__code__ is GENUINE


def test_a_grading_session_arms_the_reference_for_the_whole_run():
    """Armed before the first cell: a call in an answer cell's top level or from a thread is
    reported with its cell (costing every part that forbids it); one during a part is that
    part's evidence only; putting the genuine code back is reported too."""
    from ste_course.inside.kernel import GradingSession, check

    import ste_course.inside.kernel as kernel

    from ste_course.specs.base import encode_case, student_case

    planned = {"spec": "ste_sign/value", "cases": [encode_case(student_case(SPEC, CASE))], "forbid": FORBID}
    session = GradingSession(calls={"4": [planned]}, reference_codes=CODES)
    session.arm()
    kernel._install_session(session)
    try:
        session.cell = 3  # an answer cell: the reference is gone, in every thread
        with pytest.raises(Exception, match="may not be used"):
            ste_utils.ste_sign(tf.constant([1.0]))
        worker = threading.Thread(target=lambda: in_a_thread(tf.constant([1.0])))
        worker.start()
        worker.join()
        assert session.report() == [{"function": "ste_utils.ste_sign", "cell": 3, "what": "called"}] * 2
        session.cell = 4  # a test part calling a student function that reaches the reference
        check(ste_utils.ste_sign, "ste_sign/value")
        assert session.evidence["4"][0]["results"] == [{"forbidden": "ste_utils.ste_sign"}]
        assert session.report() == []
        session.cell = 5
        ste_utils.quantizers.ste_sign.__code__ = GENUINE  # undoing the swap from student code
        assert session.report() == [{"function": "ste_utils.ste_sign", "cell": 5, "what": "restored"}]
        assert ste_utils.ste_sign.__code__ is not GENUINE  # and the stub is back
    finally:
        kernel._install_session(None)
        session.wire.disarm()
    assert ste_utils.ste_sign.__code__ is GENUINE
