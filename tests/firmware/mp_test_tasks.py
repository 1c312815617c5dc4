# ohnode.tasks, resource /t: a task run inline (2.05 piggybacked) or after
# the answer (2.01, Location-Path t/<id>), GET /t/<id> and its Observe
# notifications, and 5.03 busy. More in mp_test_task_admin.py (refusals,
# DELETE, results kept, watchdog, lost tasks), mp_test_task_safety.py
# (imports, errors, results) and mp_test_task_range.py (TK_RANGE).
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_task
import mpfake as F
import mptask as T
from mptest import check, eq
from ohproto import const as P
from ohproto import compute as C
from ohproto import cbor

# One node for the whole script (two would not fit the heap side by side).
nd, CODE = T.node()


def test_inline():
    done = T.status(nd)[P.ST_TASKS_DONE]
    r = T.post(nd, T.task(CODE, "add", (2, 3), tid=11))
    m = T.res(r)
    eq((m[C.TR_ID], m[C.TR_STATE], m[C.TR_VALUE]), (11, C.TS_DONE, 5), "id, state, value")
    check(C.TR_MS in m and C.TR_ERROR not in m, "run time, no error: %r" % m)
    eq(r.opt_uint(P.OPT_CONTENT_FORMAT), P.CF_CBOR, "CBOR")
    eq(T.res(nd.ask(P.GET, "t/11")), m, "GET /t/11 gives the same result")
    eq(T.run(nd, CODE, "twice", (21,), tid=12)[C.TR_VALUE], 42, "const() and math in the module")
    eq(T.status(nd)[P.ST_TASKS_DONE], done + 2, "ST_TASKS_DONE")


def test_async_get_and_observe():
    r = T.post(nd, T.task(CODE, "add", ("a", "b"), tid=21, wait=False))
    eq(r.code, P.CREATED, "2.01 for a task that runs later")
    eq([bytes(v) for n, v in r.opts if n == P.OPT_LOCATION_PATH], [b"t", b"21"], "Location-Path t/21")
    eq(r.pl, b"", "no payload")
    g = nd.ask(P.GET, "t/21", tok=b"ob", opts=((P.OPT_OBSERVE, 0),))
    eq(T.res(g), {C.TR_ID: 21, C.TR_STATE: C.TS_QUEUED}, "queued until the loop turns")
    check(g.opt(P.OPT_OBSERVE) is not None, "observed")
    eq(T.status(nd)[P.ST_TASK_RUNNING], 21, "ST_TASK_RUNNING: accepted, not finished")
    nd.sock.out = []
    T.drain()
    notes = [F.parse(d) for d, p in nd.sock.out]
    nd.sock.out = []
    eq([n.tok for n in notes], [b"ob", b"ob"], "two notifications (running, then done)")
    eq(cbor.loads(notes[0].pl)[C.TR_STATE], C.TS_RUNNING, "first: running")
    last = cbor.loads(notes[1].pl)
    eq((last[C.TR_STATE], last[C.TR_VALUE]), (C.TS_DONE, "ab"), "then the result")
    check(not nd.srv.obs, "a final state ends the observation")
    eq(T.res(nd.ask(P.GET, "t/21"))[C.TR_VALUE], "ab", "GET after")
    check(P.ST_TASK_RUNNING not in T.status(nd), "nothing running")
    g = nd.ask(P.GET, "t/21", opts=((P.OPT_OBSERVE, 0),))
    check(g.opt(P.OPT_OBSERVE) is None and not nd.srv.obs, "a final result is not observable")


def test_busy_then_free():
    eq(T.post(nd, T.task(CODE, "add", (1, 1), tid=31, wait=False)).code, P.CREATED, "accepted")
    r = T.post(nd, T.task(CODE, "add", (1, 2), tid=32))
    eq((r.code, r.pl), (P.SERVICE_UNAVAILABLE, b"busy"), "5.03 while the board has its one task")
    eq(r.opt_uint(P.OPT_MAX_AGE), 1, "Max-Age")
    T.drain()
    eq(T.run(nd, CODE, "add", (1, 2), tid=32)[C.TR_VALUE], 3, "free again")


def test_result_bytes_are_the_vectors():
    # The firmware writes result maps by hand (no re-encoding of the value):
    # byte for byte the task-result vectors of protocols/vectors.json.
    n = 0
    for name, value, hexed in T.vectors("task-result"):
        eq(T.result_body(value).hex(), hexed, name)
        n += 1
    check(n >= 5, "task-result vectors: %d" % n)



def test_no_heap_for_the_result_fails_the_task_and_frees_the_board():
    # The result map cannot be made (MemoryError once, as on a fragmented
    # heap): the task fails with MemoryError instead of staying "running",
    # which left the board answering every later task 5.03 busy for good.
    tk = nd.srv.res["t"]
    real = tk._result
    calls = []

    def once(*a):
        calls.append(a)
        if len(calls) == 1:
            raise MemoryError("memory allocation failed")
        return real(*a)

    tk._result = once
    try:
        m = T.run(nd, CODE, "add", (4, 5), tid=41)
    finally:
        del tk._result
    eq((m[C.TR_STATE], m[C.TR_ERROR][0]), (C.TS_FAILED, "MemoryError"), "failed, MemoryError: %r" % m)
    check(P.ST_TASK_RUNNING not in T.status(nd), "nothing left running")
    eq(T.run(nd, CODE, "add", (4, 5), tid=42)[C.TR_VALUE], 9, "the next task runs")


F.run(globals())
