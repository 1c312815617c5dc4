"""The grid under faults, with the storage engine driving real virtual boards
(issue 3, "How it must be shown"): boards killed, boards restarted, a lossy
network, what a board's flash shows, and a large file.

Every test uses 3-of-10 (happy 7) on 10 boards, one share per board.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time

import pytest

from lossy_relay import LossyRelay
from openheap import coaptcp
from openheap.sim.image import read_image
from openheap.storage import engine
from openheap.storage.caps import ReadCap
from openheap.storage.errors import NotEnoughShares
from openheap.storage.layout import Params, share_length

SECRET = b"g" * 32
K, N, HAPPY = 3, 10, 7


def _peers(boards):
    return [engine.Peer(b.name, b.host, b.port) for b in boards]


def _put(peers, src, size, timeout=5, **kw):
    async def go():
        async with engine.Grid(peers, timeout=timeout) as g:
            return await engine.put(g, src, size, k=K, n=N, happy=HAPPY, secret=SECRET, **kw)

    return asyncio.run(go())


def _get(peers, cap, out=None, timeout=3):
    async def go():
        sink = io.BytesIO() if out is None else out
        async with engine.Grid(peers, timeout=timeout) as g:
            res = await engine.get(g, cap, sink)
        return (sink.getvalue() if out is None else None), res

    return asyncio.run(go())


def _locate(peers, si, timeout=3):
    async def go():
        async with engine.Grid(peers, timeout=timeout) as g:
            return await engine.locate(g, si)

    return asyncio.run(go())


def _put_bytes(boards, data):
    res = _put(_peers(boards), io.BytesIO(data), len(data))
    assert isinstance(res.cap, ReadCap)
    assert sorted(res.placed) == list(range(N)), res.failed
    assert len(set(res.placed.values())) == N, "one share per board"
    return res


@pytest.mark.nodes(10)
def test_any_3_of_10_boards_suffice(fleet, boards):
    data = os.urandom(300 * 1000)
    res = _put_bytes(boards, data)
    # keep the boards of shares 1, 5 and 8 (one systematic share, two that
    # need decoding); SIGKILL the other 7
    keep = {res.placed[s] for s in (1, 5, 8)}
    for b in boards:
        if b.name not in keep:
            fleet.kill(b.name)
    back, got = _get(_peers(boards), res.cap)
    assert back == data
    assert set(got.served) == {1, 5, 8} and set(got.served.values()) == keep
    assert not got.corrupt
    # an 8th board down: 2 shares left, 3 needed
    fleet.kill(res.placed[5])
    with pytest.raises(NotEnoughShares) as e:
        _get(_peers(boards), res.cap)
    assert (e.value.found, e.value.needed) == (2, 3)
    assert "found 2 good shares" in str(e.value) and "3 are needed" in str(e.value)


@pytest.mark.nodes(10)
def test_shares_survive_restart(fleet, boards):
    data = os.urandom(250 * 1000)
    res = _put_bytes(boards, data)
    fleet.down()
    again = fleet.up(10)
    assert [(b.name, b.host, b.port) for b in again] == [(b.name, b.host, b.port) for b in boards]
    where = _locate(_peers(again), res.cap.storage_index)
    assert sorted(where) == list(range(N))
    assert {s: lst[0][0] for s, lst in where.items()} == res.placed
    assert all(len(lst) == 1 for lst in where.values())
    back, got = _get(_peers(again), res.cap)
    assert back == data and not got.corrupt and not got.failed


@pytest.mark.nodes(10)
def test_lossy_network_20_percent_both_ways(boards, monkeypatch):
    # The product's own settings: the bulk channel (openheap.bulk) times its
    # retransmissions from measured round trips and keeps sending a block
    # until the node's timeout, so loss slows a transfer and fails nothing.
    # (aiocoap's default tuning, ACK_TIMEOUT 2 s and MAX_RETRANSMIT 4, loses
    # 0.36**5 = 0.6% of requests at this loss: shares failed, put unhappy.)
    #
    # The relay carries UDP only, so the share data must take the UDP bulk
    # channel: $OPENHEAP_TCP=0 makes every NodeClient the Grid creates
    # UDP-only (engine.Grid has no switch of its own), and a TCP connection
    # attempt fails the test instead of falling back to UDP unnoticed.
    monkeypatch.setenv("OPENHEAP_TCP", "0")

    async def no_tcp(host, port, **kw):
        raise AssertionError("CoAP over TCP tried to %s:%d in a UDP-only test" % (host, port))

    monkeypatch.setattr(coaptcp, "acquire", no_tcp)
    data = os.urandom(100 * 1000)
    slen = share_length(Params(K, N, len(data)))
    with LossyRelay([(b.host, b.port) for b in boards], loss=0.2, seed=20) as relay:
        peers = [engine.Peer(b.name, host, port) for b, (host, port) in zip(boards, relay.front)]
        t0 = time.monotonic()
        res = _put(peers, io.BytesIO(data), len(data), timeout=engine.DEFAULT_TIMEOUT)
        t_put = time.monotonic() - t0
        put_stats = dict(relay.stats)
        t0 = time.monotonic()
        back, got = _get(peers, res.cap, timeout=engine.DEFAULT_TIMEOUT)
        t_get = time.monotonic() - t0
        stats = dict(relay.stats)
    get_stats = {k: stats[k] - put_stats[k] for k in stats}
    print("\nlossy relay (share length %d), put: %s in %.1f s; get: %s in %.1f s"
          % (slen, put_stats, t_put, get_stats, t_get))
    assert back == data
    assert len(res.placed) == N and not res.failed, res.failed
    assert len(got.served) == K and not got.failed and not got.corrupt, got
    # The share bytes really crossed the relay (the "_bytes" counters count
    # only the datagrams it passed on): all n shares to the boards during
    # the put, k of them back from the boards during the get.
    assert put_stats["up_bytes"] >= N * slen, (put_stats, N * slen)
    assert get_stats["down_bytes"] >= K * slen, (get_stats, K * slen)
    # ... and the other way round only requests and answers went (blocks
    # carry the data one way; a few hundred bytes of options and answers per
    # share and run, nothing like a share).
    assert put_stats["down_bytes"] < slen, put_stats
    assert get_stats["up_bytes"] < slen, get_stats
    # The relay really dropped about 20% each way, and more than 10% of the
    # datagrams of both directions of the put (about 650 up, 300 down) and
    # of the share data of the get (about 170 down; its 80 requests up are
    # too few for a tight bound: some dropped is all that is asked).
    for d in ("up", "down"):
        assert stats[d] > 100 and 0.12 < stats[d + "_dropped"] / stats[d] < 0.28, stats
    for phase, d in ((put_stats, "up"), (put_stats, "down"), (get_stats, "down")):
        assert phase[d] > 100 and phase[d + "_dropped"] / phase[d] > 0.10, (d, put_stats, get_stats)
    assert get_stats["up_dropped"] > 0, get_stats


@pytest.mark.nodes(10)
def test_board_images_hold_only_ciphertext(fleet, boards):
    lines = ["Line %05d: the quick brown fox tells openheap a secret it must never write in clear.\n" % i
             for i in range(600)]
    text = "".join(lines).encode()
    assert len(text) > 50 * 1000
    res = _put_bytes(boards, text)
    fleet.down()
    # Any 32-byte window of the plaintext found in an image would contain an
    # image chunk of 16 bytes at an offset that is a multiple of 16; so look
    # up every aligned 16-byte chunk of each image among the plaintext's
    # 16-byte windows (a stronger check than 32).
    windows = {text[i:i + 16] for i in range(len(text) - 15)}
    share_files = 0
    for b in boards:
        raw = open(b.image, "rb").read()
        hits = [off for off in range(0, len(raw) - 15, 16) if raw[off:off + 16] in windows]
        assert not hits, "%s: plaintext at image offsets %s" % (b.name, hits[:5])
        for path, content in read_image(b.image).items():
            assert text[:32] not in content and lines[300].encode() not in content, (b.name, path)
            share_files += path.startswith("/s/")
    assert share_files == N, "every board holds its share file"
    back, _ = _get(_peers(fleet.up(10)), res.cap)
    assert back == text


BIG = int(os.environ.get("OH_BIG_MB", "20")) * 1000 * 1000  # the issue asks for at least 20 MB


def _status_kb(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError("no %s in /proc/self/status" % key)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # 5: reset VmHWM to the current RSS
        f.write("5")


def test_large_file(fleet, tmp_path):
    share = BIG // K + (1 << 20)
    fs = ((share * 3 // 2) // 4096 + 1) * 4096
    boards = fleet.up(10, fs_size=fs, extra_config={"max_share": share})
    src = tmp_path / "big"
    h = hashlib.sha256()
    with open(src, "wb") as f:
        for _ in range(BIG // (1 << 20) + 1):
            chunk = os.urandom(min(1 << 20, BIG - f.tell()))
            f.write(chunk)
            h.update(chunk)
    rss0 = _status_kb("VmRSS")
    _reset_peak()
    t0 = time.monotonic()
    with open(src, "rb") as f:
        res = _put(_peers(boards), f, BIG, timeout=30)
    t_put = time.monotonic() - t0
    assert sorted(res.placed) == list(range(N)), res.failed
    peak_put = _status_kb("VmHWM")
    out = tmp_path / "back"
    _reset_peak()
    t0 = time.monotonic()
    with open(out, "wb") as f:
        _get(_peers(boards), res.cap, out=f, timeout=30)
    t_get = time.monotonic() - t0
    peak_get = _status_kb("VmHWM")
    print("\n%d MB, 3-of-10 on 10 boards: put %.1f s (%.2f MB/s), get %.1f s (%.2f MB/s); "
          "the test process (the engine's host): %.0f MiB resident before, peak %.0f MiB during put, "
          "%.0f MiB during get" % (BIG / 1e6, t_put, BIG / 1e6 / t_put, t_get, BIG / 1e6 / t_get,
                                   rss0 / 1024, peak_put / 1024, peak_get / 1024))
    got = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(1 << 20):
            got.update(chunk)
    assert out.stat().st_size == BIG and got.digest() == h.digest()
    # memory stays bounded: the peaks (VmHWM, reset before each) grow by far
    # less than the file (a put or get holding it whole would add >= 20 MB)
    for what, peak in (("put", peak_put), ("get", peak_get)):
        assert peak - rss0 < 12 * 1024, "%s: peak resident memory grew by %d KiB" % (what, peak - rss0)

