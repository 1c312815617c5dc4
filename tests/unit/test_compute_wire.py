"""Task payloads (openheap.compute.wire) against the agreed wire contract."""

import cbor2
import pytest

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


def test_batch_encoding_is_the_canonical_map_and_the_vector():
    import json
    from pathlib import Path

    import cbor2
    from openheap.compute import wire as W

    h = bytes.fromhex("ba1a531f581d2e6094e978ed6f7aca7a8d92eeb62c6e7ad73ee692f7f18bc772")
    enc = W.TaskEncoder(h, "add", wait=True)
    got = enc.encode_batch([W.dumps([1, 2]), W.dumps([3, 4]), W.dumps([5, "x"])], 40)
    assert got == W.dumps({0: h, 1: "add", 2: [1, 2], 3: 40, 6: True, 8: [[3, 4], [5, "x"]]})
    vec = next(json.loads(line.rstrip(",\n")) for line in (Path(__file__).parents[2] / "protocols" / "vectors.json")
               .read_text().splitlines() if '"name": "task-request batch"' in line)
    assert got.hex() == vec["cbor"]
    limits = W.TaskEncoder(h, "f", time_ms=2000, heap=512, wait=True)
    many = [W.dumps([i]) for i in range(W.BATCH_MAX + 1)]
    m = cbor2.loads(limits.encode_batch(many, 7))
    assert m[W.TK_MORE] == [[i] for i in range(1, W.BATCH_MAX + 1)] and m[4] == 2000 and m[5] == 512
    assert limits.encode_batch(many, 7) == W.dumps(m)
    for bad in ([W.dumps([1])], many + [W.dumps([0])]):
        with pytest.raises(ValueError):
            limits.encode_batch(bad, 1)
    with pytest.raises(ValueError):
        limits.encode_batch(many[:2], W.TASK_ID_MAX)


def test_decode_results():
    from openheap.compute import wire as W

    rs = W.decode_results(bytes.fromhex(
        "83a4001828010202030400a4001829010202070400a400182a0103038269547970654572726f72782b756e737570706f7274656420"
        "747970657320666f72205f5f6164645f5f3a2027696e74272c2027737472270401"))
    assert [(r.id, r.state, r.value) for r in rs] == [(40, W.TS_DONE, 3), (41, W.TS_DONE, 7), (42, W.TS_FAILED, None)]
    assert rs[2].error[0] == "TypeError"
    for bad in (b"\xa0", b"\x80", b"\x81\x01", b"\xff"):
        with pytest.raises(ValueError):
            W.decode_results(bad)
