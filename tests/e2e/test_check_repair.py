"""Check, verify and repair (openheap.storage.upkeep.check/repair, re-exported by engine, and
``openheap check``) against real virtual boards: corrupt shares are found and
named, missing and corrupt shares are rebuilt onto live boards, and a
verify-cap can do all of it without being able to read the file."""

from __future__ import annotations

import asyncio
import io
import os

import pytest

from openheap.storage import engine
from openheap.storage.caps import VerifyCap
from openheap.storage.placement import happiness

SECRET = b"c" * 32


def _peers(boards):
    return [engine.Peer(b.name, b.host, b.port) for b in boards]


def _run(boards, fn, timeout=3):
    async def go():
        async with engine.Grid(_peers(boards), timeout=timeout) as g:
            return await fn(g)

    return asyncio.run(go())


def _put(boards, data, **kw):
    return _run(boards, lambda g: engine.put(g, io.BytesIO(data), len(data), secret=SECRET, **kw), timeout=5)


def _get(boards, cap):
    out = io.BytesIO()
    _run(boards, lambda g: engine.get(g, cap, out))
    return out.getvalue()


def _check(boards, cap, verify=False):
    return _run(boards, lambda g: engine.check(g, cap, verify=verify))


def _check_and_repair(boards, cap):
    async def go(g):
        c = await engine.check(g, cap, verify=True)
        r = await engine.repair(g, cap, c)
        return c, r

    return _run(boards, go)


def _flip(fleet, board, cap, shnum, offset):
    from ohtest import flip_byte_in_image

    from openheap.node import si_text

    fleet.down([board.name])
    flip_byte_in_image(board.image, "/s/%s/%d" % (si_text(cap.storage_index), shnum), offset)


@pytest.mark.nodes(4)
def test_verify_finds_corrupt_share_and_repair_replaces_it(fleet, boards):
    from openheap.storage.layout import HEADER_SIZE

    data = os.urandom(300 * 1000)
    res = _put(boards, data, k=2, n=4, happy=3)
    first = _check(boards, res.cap, verify=True)
    assert first.healthy and first.shares == 4 and not first.corrupt
    victim = next(b for b in boards if b.name == res.placed[1])
    _flip(fleet, victim, res.cap, 1, HEADER_SIZE + 150 * 1000 // 2)  # a block in the middle
    boards = fleet.up(4)
    quick = _check(boards, res.cap)  # without verify: the share looks fine
    assert quick.shares == 4
    checked = _check(boards, res.cap, verify=True)
    assert [(nd, s) for nd, s, _ in checked.corrupt] == [(victim.name, 1)]
    assert "block" in checked.corrupt[0][2]
    assert checked.recoverable and not checked.healthy and 1 not in checked.good
    c, rep = _check_and_repair(boards, res.cap)
    assert rep.error is None and list(rep.rebuilt) == [1] and not rep.failed
    again = _check(boards, res.cap, verify=True)
    assert again.healthy and not again.corrupt, again
    assert _get(boards, res.cap) == data


@pytest.mark.nodes(3)
def test_corrupt_trailer_is_named(fleet, boards):
    from openheap.storage.layout import Params, trailer_range

    data = os.urandom(100 * 1000)
    res = _put(boards, data, k=2, n=3, happy=2)
    victim = next(b for b in boards if b.name == res.placed[2])
    off, _ = trailer_range(Params(2, 3, len(data)))
    _flip(fleet, victim, res.cap, 2, off + 5)
    boards = fleet.up(3)
    checked = _check(boards, res.cap, verify=True)
    assert [(nd, s) for nd, s, _ in checked.corrupt] == [(victim.name, 2)]
    c, rep = _check_and_repair(boards, res.cap)
    assert rep.rebuilt == {2: victim.name} or list(rep.rebuilt) == [2]
    assert _check(boards, res.cap, verify=True).healthy


@pytest.mark.nodes(5)
def test_repair_after_boards_die_and_new_ones_join(fleet, boards):
    data = os.urandom(400 * 1000)
    res = _put(boards, data, k=3, n=5, happy=4)
    assert len(set(res.placed.values())) == 5
    boards = fleet.up(7)  # two new, empty boards
    dead = [res.placed[0], res.placed[4]]
    for name in dead:
        fleet.kill(name)
    checked = _check(boards, res.cap)
    assert checked.shares == 3 and sorted(checked.unreachable) == sorted(dead)
    assert checked.recoverable and not checked.healthy
    c, rep = _check_and_repair(boards, res.cap)
    assert rep.error is None and sorted(rep.rebuilt) == [0, 4]
    new = {b.name for b in boards} - set(res.placed.values())
    assert set(rep.rebuilt.values()) == new, "rebuilt shares go to the boards holding nothing"
    after = _check(boards, res.cap, verify=True)
    assert after.healthy and after.shares == 5 and happiness(after.good) == 5
    assert not set(dead) & {nd for lst in after.good.values() for nd in lst}
    assert _get(boards, res.cap) == data


@pytest.mark.nodes(4)
def test_verify_cap_checks_and_repairs(fleet, boards):
    data = os.urandom(200 * 1000)
    res = _put(boards, data, k=2, n=4, happy=3)
    vcap = res.cap.verify_cap()
    assert isinstance(vcap, VerifyCap)
    boards = fleet.up(5)  # a fifth, empty board joins
    fleet.kill(res.placed[3])
    checked = _check(boards, vcap, verify=True)
    assert checked.shares == 3 and checked.recoverable
    c, rep = _check_and_repair(boards, vcap)
    assert rep.error is None and list(rep.rebuilt) == [3]
    assert _check(boards, vcap, verify=True).healthy
    assert _get(boards, res.cap) == data


@pytest.mark.nodes(3)
def test_not_recoverable(fleet, boards):
    data = os.urandom(60 * 1000)
    res = _put(boards, data, k=2, n=3, happy=2)
    fleet.kill(res.placed[0])
    fleet.kill(res.placed[1])
    c, rep = _check_and_repair(boards, res.cap)
    assert not c.recoverable and c.shares == 1
    assert rep.error and "1 good shares" in rep.error and not rep.rebuilt


# -- through the coordinator and its CLI


def test_cli_check_verify_repair(run_cli, grid, tmp_path):
    import json

    from ohtest import flip_byte_in_image

    from openheap.node import si_text
    from openheap.sim.fleet import Fleet
    from openheap.storage.caps import parse_cap
    from openheap.storage.layout import HEADER_SIZE

    src = tmp_path / "f"
    src.write_bytes(os.urandom(350 * 1000))
    cap = run_cli("put", src, timeout=120).stdout.strip().splitlines()[-1]
    first = json.loads(run_cli("check", cap, "--json").stdout)["files"][0]
    assert first["healthy"] and first["shares"] == 5
    victim = first["where"]["1"][0]
    fleet = Fleet(grid)
    info = next(b for b in fleet.ls() if b.name == victim)
    fleet.down([victim])
    flip_byte_in_image(info.image, "/s/%s/1" % si_text(parse_cap(cap).storage_index), HEADER_SIZE + 100)
    fleet.up(5)

    # get reads k of the 5 shares, the fastest boards first: it meets the
    # corrupt one unless the victim answered later than three others (then
    # it reads no share 1 at all; try again)
    back = tmp_path / "back0"
    for _ in range(4):
        got = run_cli("get", cap, "-o", back, timeout=120)
        assert back.read_bytes() == src.read_bytes()
        if "corrupt" in got.stderr:
            break
    assert ("warning: share 1 on node %s is corrupt (block 0 does not match its hash); "
            "the file was read from other shares" % victim) in got.stderr, got.stderr
    assert "openheap check --repair %s" % cap in got.stderr
    from openheap.coordinator.client import CoordinatorClient

    last = CoordinatorClient(grid).last_read(cap)  # GET /v1/files/<cap>/last-read
    assert last["corrupt"] == [{"node": victim, "share": 1, "why": "block 0 does not match its hash"}]
    assert len(last["served"]) == 3 and last["served"].get("1") is None and last["at"] > 0

    verify = run_cli("check", "--verify", cap, timeout=120)
    assert "share 1 on %s is corrupt: block 0 does not match its hash" % victim in verify.stdout
    assert "recoverable: 4 of 5 shares on 4 nodes (3 needed)" in verify.stdout

    vcap = [ln.split()[-1] for ln in run_cli("ls", cap).stdout.splitlines() if ln.startswith("verify_cap")][0]
    refused = run_cli("get", vcap, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    repaired = run_cli("check", "--repair", vcap, timeout=120)  # a verify-cap can repair
    assert "share 1 on %s is corrupt" % victim in repaired.stdout
    assert "repaired 1 share (share 1 to " in repaired.stdout and "now healthy: 5 of 5" in repaired.stdout
    rebuilt_on = repaired.stdout.split("(share 1 to ")[1].split(")")[0]
    import sqlite3

    db = sqlite3.connect("file:%s?mode=ro" % (grid / "coordinator" / "grid.db"), uri=True)
    try:
        rows = db.execute("SELECT shnum, node FROM shares WHERE si=?",
                          (parse_cap(cap).storage_index,)).fetchall()
    finally:
        db.close()
    assert (1, rebuilt_on) in rows and ((1, victim) not in rows or victim == rebuilt_on), rows
    assert sorted({s for s, _ in rows}) == [0, 1, 2, 3, 4]
    again = run_cli("check", "--verify", cap, timeout=120)
    assert again.stdout.startswith("healthy: 5 of 5 shares on 5 nodes (3 needed)"), again.stdout
    out = tmp_path / "back"
    run_cli("get", cap, "-o", out, timeout=120)
    assert out.read_bytes() == src.read_bytes()

    # three boards gone: 2 of 3 needed shares left
    for name in [b.name for b in fleet.ls()][:3]:
        fleet.kill(name)
    lost = run_cli("check", "--repair", cap, check=False, timeout=120)
    assert lost.returncode != 0
    assert "NOT RECOVERABLE: 2 of 5 shares on 2 nodes (3 needed)" in lost.stdout, lost.stdout
    assert "Traceback" not in lost.stderr


@pytest.mark.nodes(2)
def test_repair_spreads_doubled_shares_onto_new_boards(fleet, boards):
    data = os.urandom(90 * 1000)
    res = _put(boards, data, k=2, n=4, happy=2)
    checked = _check(boards, res.cap)
    assert checked.shares == 4 and checked.nodes == 2 and not checked.healthy
    c, rep = _check_and_repair(boards, res.cap)  # no room elsewhere: nothing to do
    assert not rep.rebuilt and rep.error is None
    boards = fleet.up(4)
    c, rep = _check_and_repair(boards, res.cap)
    assert len(rep.rebuilt) == 2 and set(rep.rebuilt.values()) == {b.name for b in boards[2:]}
    after = _check(boards, res.cap, verify=True)
    assert after.healthy and happiness(after.good) == 4
    assert _get(boards, res.cap) == data
