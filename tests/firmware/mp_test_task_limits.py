# A task that allocates until MemoryError (TS_FAILED, and the node keeps
# serving), results larger than TASK_RESULT_MAX (TS_FAILED ResultTooLarge),
# and the test-only setting "lie" (wrong answers, for --replicas).
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_task_limits
import mpfake as F
import mptask as T
from mptest import check, eq
from ohproto import const as P
from ohproto import compute as C

nd, CODE = T.node(stem="tk_limits")


def failed(m, what):
    eq(m[C.TR_STATE], C.TS_FAILED, what + ": failed")
    check(C.TR_VALUE not in m and C.TR_MS in m, what + ": no value")
    return m[C.TR_ERROR]


def test_memory_error_and_still_serving():
    m = T.run(nd, CODE, "hog", tid=150)
    err = failed(m, "hog")
    eq(err[0], "MemoryError", "MemoryError reported: %r" % (err,))
    eq(nd.ask(P.GET, "i").code, P.CONTENT, "GET /i after")
    eq(T.run(nd, CODE, "add", (2, 2), tid=151)[C.TR_VALUE], 4, "tasks run after")


def test_result_too_large():
    m = T.run(nd, CODE, "big", (600,), tid=160)
    eq(failed(m, "big"), ["ResultTooLarge", "result is 603 bytes, at most 512"], "603 bytes of CBOR")
    eq(T.run(nd, CODE, "big", (509,), tid=161)[C.TR_VALUE], bytes(509), "512 bytes of CBOR pass")
    m = T.run(nd, CODE, "many", (110,), tid=162)
    eq(failed(m, "list"), ["ResultTooLarge", "result is 552 bytes, at most 512"], "a list of 110 ints")


def test_zz_lie():
    nd.cfg["lie"] = True
    T.retire(nd)  # the task machinery reads its settings when made again
    eq(T.run(nd, CODE, "add", (2, 2), tid=170)[C.TR_VALUE], 5, "an int gets +1")
    eq(T.run(nd, CODE, "add", ("a", "b"), tid=171)[C.TR_VALUE], "lie", "anything else becomes 'lie'")
    eq(failed(T.run(nd, CODE, "boom", tid=172), "boom")[0], "ZeroDivisionError", "failures stay")


F.run(globals())
