# ohnode.tasks: requests refused before anything runs (4.04 code not cached,
# 4.00 naming the bad key, 4.13 heap), DELETE, the last four results kept, a
# request sent again not run twice, the watchdog armed around a task, a task
# lost to a reset (TS_LOST, ST_TASK_LOST), and the machinery unloaded when
# idle (the count of tasks run stays).
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_task_admin
import sys
import mpfake as F
import mptask as T
from mptest import check, eq
from ohproto import const as P
from ohproto import compute as C

nd, CODE = T.node()


def test_refused():
    r = T.post(nd, T.task(bytes(32), "add", (1, 2), tid=41))
    eq((r.code, r.pl), (P.NOT_FOUND, b"code not cached"), "unknown code")
    eq(T.post(nd, b"\xff").code, P.BAD_REQUEST, "not CBOR")
    bad = b"task request key %d missing or bad"
    for k, pl in ((C.TK_ID, T.task(CODE, "add", tid=None)), (C.TK_TIME, T.task(CODE, "add", time=0)),
                  (C.TK_ID, T.task(CODE, "add", tid=2 ** 32)), (C.TK_FUNC, T.task(CODE, "")),
                  (C.TK_RANGE, T.task(CODE, "add", range=[1])), (C.TK_CODE, T.task(b"x", "add"))):
        r = T.post(nd, pl)
        eq((r.code, r.pl), (P.BAD_REQUEST, bad % k), "bad key %d" % k)
    r = T.post(nd, T.task(CODE, "add", (1, 2), tid=43, heap=10 ** 6))
    eq(r.code, P.REQUEST_ENTITY_TOO_LARGE, "4.13 when the heap cannot hold it")
    eq(nd.ask(P.GET, "t/43").code, P.NOT_FOUND, "nothing kept of refused tasks")
    eq(nd.ask(P.GET, "t").code, P.METHOD_NOT_ALLOWED, "GET /t")
    eq(nd.ask(P.GET, "t/x1").code, P.NOT_FOUND, "not an id")


def test_delete_and_results_kept():
    eq(T.post(nd, T.task(CODE, "add", (1, 1), tid=51, wait=False)).code, P.CREATED, "queued")
    done = T.status(nd)[P.ST_TASKS_DONE]
    eq(nd.ask(P.DELETE, "t/51").code, P.DELETED, "cancel")
    eq(T.res(nd.ask(P.GET, "t/51"))[C.TR_STATE], C.TS_CANCELLED, "cancelled")
    T.drain()
    eq(T.status(nd)[P.ST_TASKS_DONE], done, "a cancelled task does not run")
    eq(nd.ask(P.DELETE, "t/51").code, P.DELETED, "forget")
    eq(nd.ask(P.GET, "t/51").code, P.NOT_FOUND, "forgotten")
    for i in range(6):
        T.run(nd, CODE, "add", (i, 0), tid=60 + i)
    eq(nd.ask(P.GET, "t/61").code, P.NOT_FOUND, "older results dropped")
    for i in range(2, 6):
        eq(T.res(nd.ask(P.GET, "t/%d" % (60 + i)))[C.TR_VALUE], i, "the last four kept")


def test_same_request_not_run_twice():
    pl = T.task(CODE, "add", (7, 8), tid=71)
    eq(T.res(T.post(nd, pl))[C.TR_VALUE], 15, "first")
    done = T.status(nd)[P.ST_TASKS_DONE]
    eq(T.res(T.post(nd, pl))[C.TR_VALUE], 15, "again: the stored result")
    eq(T.status(nd)[P.ST_TASKS_DONE], done, "not run again")
    eq(T.run(nd, CODE, "add", (1, 8), tid=71)[C.TR_VALUE], 9, "same id, new request: runs")


def test_watchdog_and_unload():
    done = T.status(nd)[P.ST_TASKS_DONE]
    nd.plat.arms = []
    T.run(nd, CODE, "add", (1, 2), tid=81, time=700)
    eq(nd.plat.arms, [(2700, 81), (10000, None)], "armed for TK_TIME + 2 s with the id, then for idle")
    T.run(nd, CODE, "add", (1, 2), tid=82)
    eq(nd.plat.arms[-2], (12000, 82), "default time limit 10 s")
    eq(T.retire(nd, 0), 0, "not unloaded while in use")
    eq(T.retire(nd), 1, "unloaded when idle")
    check("ohnode.tasks" not in sys.modules and P.PATH_TASKS not in nd.srv.res, "gone")
    eq(T.status(nd)[P.ST_TASKS_DONE], done + 2, "the count outlasts the unload")
    eq(nd.ask(P.GET, "t/82").code, P.NOT_FOUND, "the results kept go with it")


def test_zz_lost_at_boot():
    nd.boot("/oht")
    T.wire(nd, lost=77)  # the watchdog cut task 77
    st = T.status(nd)
    eq((st[P.ST_TASK_LOST], st[P.ST_TASKS_DONE]), (77, 0), "ST_TASK_LOST")
    m = T.res(nd.ask(P.GET, "t/77"))
    eq((m[C.TR_ID], m[C.TR_STATE], m[C.TR_ERROR][0]), (77, C.TS_LOST, "Watchdog"), "TS_LOST")
    eq(T.run(nd, CODE, "add", (1, 2), tid=78)[C.TR_VALUE], 3, "the module survived the reset")


def test_deleted_code_is_not_run_from_ram():
    # The module stays loaded between tasks; DELETE /c/<hex> (revoking the
    # code) must take that copy away too.
    eq(T.run(nd, CODE, "add", (2, 2), tid=81)[C.TR_VALUE], 4, "runs, and stays loaded")
    hexname = "".join("%02x" % b for b in CODE)
    eq(nd.ask(P.DELETE, "c/" + hexname).code, P.DELETED, "revoked")
    r = T.post(nd, T.task(CODE, "add", (2, 3), tid=82))
    eq((r.code, r.pl), (P.NOT_FOUND, b"code not cached"), "not run from RAM")
    eq(T.module(nd, "tk_basic"), CODE, "put back for the other tests")
    eq(T.run(nd, CODE, "add", (2, 3), tid=83)[C.TR_VALUE], 5, "runs again")


F.run(globals())
