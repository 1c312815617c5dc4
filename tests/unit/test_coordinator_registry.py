"""The coordinator's SQLite registry: node states and lifetimes, catalog, share locations."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from openheap.coordinator.registry import (REGISTERED, SCHEMA_VERSION, UNREACHABLE, NodeInfo, Registry, iso)
from openheap.errors import ConfigError, UsageError


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def info(name="node01", **kw) -> NodeInfo:
    base = dict(name=name, board="virtual", firmware="0.1.0", fs_total=4 << 20, fs_free=3 << 20,
                max_share=1 << 20, shares_held=2, heap_total=65536)
    base.update(kw)
    return NodeInfo(**base)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def reg(tmp_path, clock):
    r = Registry(tmp_path / "coordinator" / "grid.db", grace=10, clock=clock)
    yield r
    r.close()


def test_schema_versioned_and_wal(tmp_path, reg):
    assert reg.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "coordinator" / "grid.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "grid.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=%d" % (SCHEMA_VERSION + 1))
    db.close()
    with pytest.raises(ConfigError, match="upgrade openheap"):
        Registry(path)


def test_damaged_database_is_one_sentence(tmp_path):
    path = tmp_path / "grid.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="damaged"):
        Registry(path)


def test_register_then_refresh(reg, clock):
    rec, previous = reg.register(info(), "127.0.0.1", 40001, 60)
    assert previous is None
    assert rec.state == REGISTERED and rec.address == "127.0.0.1:40001"
    assert rec.first_seen == rec.last_seen == clock.t
    assert len(rec.reg_id) == 8
    clock.t += 30
    rec2, previous = reg.refresh(rec.reg_id, info(fs_free=1 << 20, shares_held=5), "127.0.0.1", 40002)
    assert previous == REGISTERED
    assert rec2.reg_id == rec.reg_id
    assert (rec2.fs_free, rec2.shares_held, rec2.port, rec2.lifetime) == (1 << 20, 5, 40002, 60)
    assert rec2.first_seen == rec.first_seen and rec2.last_seen == clock.t


def test_refresh_unknown_id(reg):
    assert reg.refresh("nope", info(), "127.0.0.1", 1) is None


def test_refresh_other_name_refused(reg):
    rec, _ = reg.register(info("a"), "127.0.0.1", 1, 60)
    with pytest.raises(UsageError, match="belongs to node a"):
        reg.refresh(rec.reg_id, info("b"), "127.0.0.1", 1)


def test_reregistration_issues_new_id(reg):
    first, _ = reg.register(info(), "127.0.0.1", 1, 60)
    second, previous = reg.register(info(), "127.0.0.1", 2, 60)
    assert previous == REGISTERED
    assert second.reg_id != first.reg_id
    assert reg.refresh(first.reg_id, info(), "127.0.0.1", 1) is None  # the old id is gone
    assert second.first_seen == first.first_seen
    assert len(reg.nodes()) == 1


def test_lifetime_and_grace(reg, clock):
    reg.register(info(), "127.0.0.1", 1, 60)
    clock.t += 60 + 10  # lifetime + grace: still registered
    assert reg.node("node01").state == REGISTERED
    assert reg.sweep() == []
    clock.t += 1
    assert reg.node("node01").state == UNREACHABLE  # computed at read time
    changed = reg.sweep()
    assert [r.name for r in changed] == ["node01"]
    assert reg.sweep() == []  # recorded once
    rec = reg.node("node01")
    assert rec.state == UNREACHABLE and rec.state_since == clock.t - 1
    assert reg.counts() == {"registered": 0, "unreachable": 1, "total": 1}
    clock.t += 10 * 86400  # silent for days: still there, never deleted
    assert reg.node("node01").state == UNREACHABLE


def test_unreachable_node_comes_back(reg, clock):
    rec, _ = reg.register(info(), "127.0.0.1", 1, 60)
    clock.t += 1000
    reg.sweep()
    back, previous = reg.refresh(rec.reg_id, info(), "127.0.0.1", 1)
    assert previous == UNREACHABLE
    assert back.state == REGISTERED and back.state_since == clock.t


@pytest.mark.parametrize("how", ["refresh", "register"])
def test_comeback_before_a_sweep_still_reports_the_silence(reg, clock, how):
    """A node back before any sweep recorded it unreachable: the silence is
    reported (once) all the same, with the node as it was last seen."""
    missed = []
    reg.on_missed_sweep = missed.append
    rec, _ = reg.register(info(), "127.0.0.1", 1, 60)
    last_seen = clock.t
    clock.t += 30
    reg.refresh(rec.reg_id, info(), "127.0.0.1", 1)  # in time: nothing to report
    assert missed == []
    clock.t += 60 + 10 + 5  # past lifetime + grace, no sweep ran
    if how == "refresh":
        back, previous = reg.refresh(rec.reg_id, info(), "127.0.0.1", 1)
    else:
        back, previous = reg.register(info(), "127.0.0.1", 1, 60)
    assert previous == UNREACHABLE and back.state == REGISTERED
    assert [(r.name, r.state, r.last_seen) for r in missed] == [("node01", UNREACHABLE, last_seen + 30)]
    assert reg.sweep() == [] and len(missed) == 1
    # swept first: the sweep reported it, the registration does not again
    clock.t += 1000
    assert [r.name for r in reg.sweep()] == ["node01"]
    reg.register(info(), "127.0.0.1", 1, 60)
    assert len(missed) == 1


def test_nodes_filter_and_order(reg, clock):
    reg.register(info("node10"), "127.0.0.1", 1, 60)
    reg.register(info("node02"), "127.0.0.1", 2, 5)
    clock.t += 20
    assert [n.name for n in reg.nodes()] == ["node02", "node10"]
    assert [n.name for n in reg.nodes(REGISTERED)] == ["node10"]
    assert [n.name for n in reg.nodes(UNREACHABLE)] == ["node02"]
    with pytest.raises(UsageError):
        reg.nodes("gone")


def test_remove_node_is_explicit(reg):
    reg.register(info(), "127.0.0.1", 1, 60)
    reg.add_share(b"s" * 16, 0, "node01", 100)
    assert reg.remove_node("node01")
    assert reg.node("node01") is None
    assert reg.shares() == []
    assert not reg.remove_node("node01")


@pytest.mark.parametrize("bad, match", [
    (dict(name="bad name"), "node name"),
    (dict(name=""), "node name"),
    (dict(board=""), "board"),
    (dict(firmware=7), "firmware"),
    (dict(fs_total=-1), "fs_total"),
    (dict(fs_free=True), "fs_free"),
    (dict(fs_free=5 << 20), "larger than fs_total"),
    (dict(zone=""), "zone"),
    (dict(heap_total="x"), "heap_total"),
])
def test_bad_node_info(reg, bad, match):
    with pytest.raises(UsageError, match=match):
        reg.register(info(**bad), "127.0.0.1", 1, 60)
    assert reg.nodes() == []


def test_node_json(reg, clock):
    reg.register(info(zone="shelf-1"), "::1", 5683, 60)
    clock.t += 2.5
    j = reg.node("node01").to_json(clock.t)
    assert j["address"] == "[::1]:5683"
    assert j["state"] == "registered" and j["zone"] == "shelf-1"
    assert j["shares"] == 2 and j["free"] == 3 << 20
    assert j["last_seen"] == iso(clock.t - 2.5) and j["last_seen"].endswith("Z")
    assert j["last_seen_ago"] == 2.5


def test_catalog_crud(reg, clock):
    cap = "oh:r1:aaaa:bbbb:3:10:1000:abcdef"
    f = reg.add_file(cap, name="notes.txt", size=1000, k=3, n=10, happy=7, si=b"\x01" * 16)
    assert (f.name, f.cap, f.size, f.k, f.n, f.happy, f.random_key, f.created) == (
        "notes.txt", cap, 1000, 3, 10, 7, False, clock.t)
    assert reg.file("notes.txt") == f
    unnamed1 = reg.add_file(cap, size=1000, k=3, n=10, happy=7, random_key=True)
    unnamed2 = reg.add_file("oh:l1:x:y", size=1, k=1, n=1, happy=1)
    assert unnamed1.name is None and unnamed1.random_key
    assert [x.id for x in reg.files()] == [f.id, unnamed1.id, unnamed2.id]
    assert [x.id for x in reg.files(cap=cap)] == [f.id, unnamed1.id]
    assert [x.id for x in reg.files(si=b"\x01" * 16)] == [f.id]
    # a name points at one capability: adding it again replaces the entry
    cap2 = "oh:r1:cccc:dddd:3:10:2000:abcdef"
    f2 = reg.add_file(cap2, name="notes.txt", size=2000, k=3, n=10, happy=7)
    assert reg.file("notes.txt") == f2
    assert len(reg.files()) == 3
    assert f.to_json()["si"] == "01" * 16
    assert reg.remove_cap(cap) == 1
    assert reg.remove_file("notes.txt") and not reg.remove_file("notes.txt")
    assert [x.cap for x in reg.files()] == ["oh:l1:x:y"]
    with pytest.raises(UsageError):
        reg.add_file(cap, name="", size=1, k=1, n=1, happy=1)


def test_share_locations(reg):
    si, other = b"\x02" * 16, b"\x03" * 16
    reg.add_share(si, 0, "node01", 500, lease_expiry=100.0)
    reg.add_share(si, 1, "node02", 500, lease_expiry=200.0)
    reg.add_share(si, 1, "node02", 501, lease_expiry=300.0)  # upsert
    reg.add_share(other, 0, "node01", 10)
    assert [(s.shnum, s.node, s.size) for s in reg.shares(si)] == [(0, "node01", 500), (1, "node02", 501)]
    assert [s.si for s in reg.shares(node="node01")] == [si, other]
    assert [s.shnum for s in reg.expiring_shares(before=250)] == [0]
    assert reg.renew_leases(si, 1000.0) == 2
    assert reg.expiring_shares(before=250) == []
    assert reg.renew_leases(si, 50.0, node="node01") == 1
    assert reg.remove_share(si, 0, "node01")
    assert reg.remove_shares(si) == 1
    assert reg.remove_shares(other, node="node01") == 1
    assert reg.shares() == []


def test_persistent_across_reopen(tmp_path, clock):
    path = tmp_path / "grid.db"
    with Registry(path, clock=clock) as r:
        rec, _ = r.register(info(), "127.0.0.1", 1, 60)
        r.add_file("oh:l1:x:y", name="a", size=1, k=1, n=1, happy=1)
    with Registry(path, clock=clock) as r:
        assert r.node("node01").reg_id == rec.reg_id
        assert r.file("a").cap == "oh:l1:x:y"


def test_thread_safe(reg):
    errors = []

    def worker(i):
        try:
            for j in range(30):
                reg.register(info("n%d-%d" % (i, j)), "127.0.0.1", j + 1, 60)
                reg.nodes()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(reg.nodes()) == 180
