"""Task payloads (openheap.compute.wire) against the agreed wire contract."""

import cbor2

from openheap.bulk import CON, encode, uint_opt
from openheap.compute import wire as W

H = bytes(32)


def test_numbers_match_the_contract():
    assert (W.TK_CODE, W.TK_FUNC, W.TK_ARGS, W.TK_ID, W.TK_TIME, W.TK_HEAP, W.TK_WAIT, W.TK_RANGE) == tuple(range(8))
    assert (W.TR_ID, W.TR_STATE, W.TR_VALUE, W.TR_ERROR, W.TR_MS) == tuple(range(5))
    assert (W.TS_QUEUED, W.TS_RUNNING, W.TS_DONE, W.TS_FAILED, W.TS_LOST, W.TS_CANCELLED) == tuple(range(6))
    assert (W.ST_TASKS_DONE, W.ST_TASK_LOST, W.ST_TASK_RUNNING) == (19, 20, 21)
    assert (W.PATH_CODE, W.PATH_TASKS) == ("c", "t")


def test_task_map_leaves_out_defaults():
    m = cbor2.loads(W.encode_task(H, "f", [1], 7))
    assert m == {0: H, 1: "f", 2: [1], 3: 7, 6: True}
    m = cbor2.loads(W.encode_task(H, "f", [], 7, time_ms=5000, heap=4096, wait=False,
                                  rng=[bytes(16), 1, 64, 100, bytes(16), bytes(16)]))
    assert m[4] == 5000 and m[5] == 4096 and 6 not in m and m[7][1:4] == [1, 64, 100]


def test_a_trivial_task_is_well_under_100_bytes_of_coap():
    payload = W.encode_task(H, "f", [12345], 20000, time_ms=30000)
    req = encode(CON, 0x02, 1, b"\x00\x01", [(11, b"t"), (12, uint_opt(60))], payload)
    rsp = encode(2, 0x45, 1, b"\x00\x01", [(12, uint_opt(60))],
                 cbor2.dumps({0: 20000, 1: W.TS_DONE, 2: 12346, 4: 0}))
    assert len(req) + len(rsp) < 100, (len(req), len(rsp))


def test_decode_result():
    r = W.decode_result(cbor2.dumps({0: 5, 1: W.TS_FAILED, 3: ["ImportError", "module 'os' is not allowed"], 4: 1}))
    assert r.final and r.error == ("ImportError", "module 'os' is not allowed") and r.id == 5
    r = W.decode_result(cbor2.dumps({0: 5, 1: W.TS_RUNNING}))
    assert not r.final
    for bad in (b"\xff", cbor2.dumps([1, 2]), cbor2.dumps({0: 1})):
        try:
            W.decode_result(bad)
        except ValueError as e:
            assert "\n" not in str(e)
        else:
            raise AssertionError("accepted %r" % bad)


def test_to_json():
    assert W.to_json({1: b"\x00\xff", "a": (1, 2.5), "n": float("nan")}) == \
        {"1": {"base64": "AP8="}, "a": [1, 2.5], "n": None}
