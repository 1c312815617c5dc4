# ohnode.tasks, batches (TK_MORE): tasks TK_ID, TK_ID + 1, ... of one
# function run one after another, their results in one task-results array;
# a failing task does not stop the others; the answer stays within one
# datagram (the host sends the tasks not run again); a batch asked again
# is answered from the results kept; bad batches get 4.00 naming key 8.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_task_batch
import mptask as T
from mptest import check, eq
from ohproto import const as P
from ohproto import compute as C
from ohproto import cbor

nd, CODE = T.node()


def batch(func, first, rest, tid, **kw):
    pl = T.task(CODE, func, first, tid=tid, more=[list(a) for a in rest], **kw)
    return T.post(nd, pl)


def test_batch_runs_every_task_in_order():
    done = T.status(nd)[P.ST_TASKS_DONE]
    r = batch("add", (1, 1), [(i, 1) for i in range(2, 9)], 100)
    eq(r.code, P.CONTENT, "2.05")
    eq(r.opt_uint(P.OPT_CONTENT_FORMAT), P.CF_CBOR, "CBOR")
    out = cbor.loads(r.pl)
    eq([m[C.TR_ID] for m in out], list(range(100, 108)), "ids TK_ID, TK_ID + 1, ...")
    eq([m[C.TR_VALUE] for m in out], [i + 1 for i in range(1, 9)], "values in order")
    check(all(m[C.TR_STATE] == C.TS_DONE and C.TR_MS in m for m in out), "done, timed")
    eq(T.status(nd)[P.ST_TASKS_DONE], done + 8, "eight tasks run")
    eq(T.res(nd.ask(P.GET, "t/107"))[C.TR_VALUE], 9, "the last results are kept: GET /t/107")


def test_a_failing_task_does_not_stop_the_batch():
    out = cbor.loads(batch("add", (1, 2), [(1, "x"), (3, 4)], 200).pl)
    eq([m[C.TR_STATE] for m in out], [C.TS_DONE, C.TS_FAILED, C.TS_DONE], "states")
    eq(out[1][C.TR_ERROR][0], "TypeError", "the error of the second")
    eq(out[2][C.TR_VALUE], 7, "the third ran")


def test_answer_fits_one_datagram():
    # results of ~490 bytes: after one, another might not fit
    r = batch("pad", (480,), [(480,)] * 5, 300)
    eq(r.code, P.CONTENT, "2.05")
    out = cbor.loads(r.pl)
    check(1 <= len(out) < 6, "cut short: %d results" % len(out))
    check(len(r.pl) <= 1024, "within a block: %d" % len(r.pl))
    eq([m[C.TR_ID] for m in out], list(range(300, 300 + len(out))), "the first ones")
    small = cbor.loads(batch("add", (0, 0), [(i, 0) for i in range(1, C.BATCH_MAX + 1)], 400).pl)
    eq(len(small), C.BATCH_MAX + 1, "small results: the whole batch of 1 + BATCH_MAX")


def test_batch_asked_again_is_not_run_again():
    pl = T.task(CODE, "add", (5, 5), tid=500, more=[[6, 6], [7, 7]])
    first = cbor.loads(T.post(nd, pl).pl)
    done = T.status(nd)[P.ST_TASKS_DONE]
    again = cbor.loads(T.post(nd, pl).pl)  # (a new message id: past the de-duplication)
    eq(again, first, "the kept results")
    eq(T.status(nd)[P.ST_TASKS_DONE], done, "nothing run again")


def test_bad_batches():
    for kw, why in ((dict(more=[[1, 2]], wait=False), "without TK_WAIT"),
                    (dict(more=[]), "empty"),
                    (dict(more=[[1, 2]] * (C.BATCH_MAX + 1)), "too long"),
                    (dict(more=[5]), "an entry not an array"),
                    (dict(more=[[1, 2]], tid=0xFFFFFFFF), "ids beyond 2**32")):
        tid = kw.pop("tid", 600)
        r = T.post(nd, T.task(CODE, "add", (1, 2), tid=tid, **kw))
        eq((r.code, bytes(r.pl)), (P.BAD_REQUEST, b"task request key 8 missing or bad"), why)
    r = nd.ask(P.GET, "i")
    eq(r.code, P.CONTENT, "the board keeps serving")


def test_results_array_is_the_vector():
    # The answer of a batch is written by hand around the result maps: byte
    # for byte the task-results vector of protocols/vectors.json.
    from ohnode.server import Rsp
    from ohnode.tasks import Tasks

    n = 0
    for name, value, hexed in T.vectors("task-results"):
        rsp = Rsp(0)
        Tasks._batch_answer(rsp, [T.result_body(m) for m in value])
        eq(bytes(rsp.pl).hex(), hexed, name)
        n += 1
    check(n >= 1, "task-results vectors: %d" % n)


import mpfake as F

F.run(globals())
