"""The catalog from the CLI (issue 3, "Keeping files alive"), on ``openheap up
--nodes 5``: ``rm`` by catalog name or capability, ``ls CAP`` describing a
capability with or without a catalog entry, ``check --all``, ``status``, and
losing the catalog, which loses names but never data."""

from __future__ import annotations

import json
import os

import pytest


def _put(run_cli, tmp_path, name, size):
    src = tmp_path / name
    src.write_bytes(os.urandom(size))
    return src, run_cli("put", src, timeout=120).stdout.strip().splitlines()[-1]


def _one_sentence(proc, words):
    assert proc.returncode != 0, proc
    assert words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_rm_by_name_ls_cap_check_all_and_status(run_cli, grid, tmp_path):
    a_src, a = _put(run_cli, tmp_path, "a.bin", 120_000)
    b_src, b = _put(run_cli, tmp_path, "b.bin", 80_000)
    run_cli("put", "--name", "b-again", b_src, timeout=120)  # a second name for the same file

    described = run_cli("ls", a).stdout
    assert "found          5 of 5 shares on 5 nodes (3 needed): healthy" in described, described
    assert "catalog        a.bin" in described and "storage_index" in described and "verify_cap" in described
    info = json.loads(run_cli("ls", "--json", a).stdout)
    assert info["size"] == 120_000 and (info["k"], info["n"]) == (3, 5) and info["found"]["shares"] == 5

    checked = run_cli("check", "--all", timeout=120).stdout.splitlines()
    assert len(checked) == 3 and all(ln.startswith("healthy: 5 of 5 shares on 5 nodes") for ln in checked)

    status = run_cli("status").stdout
    assert "leases: 2678400 s, renewed every 3600 s" in status, status
    assert "repair: every 300 s after 3600 s unreachable, at most 4 files per run" in status
    st = json.loads(run_cli("status", "--json").stdout)
    assert st["upkeep"]["config"]["repair_grace"] == 3600 and st["status"]["files"] == 3

    kept = run_cli("rm", "b.bin")  # another name still points at the file: only the name goes
    assert "the file stays" in kept.stdout
    assert "found          5 of 5" in run_cli("ls", b).stdout
    gone = run_cli("rm", "b-again")
    assert gone.stdout.strip() == "deleted the shares on 5 nodes"
    out = run_cli("ls", b).stdout
    assert "found          0 of 5 shares on 0 nodes (3 needed): NOT RECOVERABLE" in out, out
    assert "catalog        not in the catalog" in out

    run_cli("rm", a)  # by capability
    assert "a.bin" not in run_cli("ls").stdout and run_cli("ls").stdout.strip() == ""

    _one_sentence(run_cli("rm", "no-such-name", check=False), "there is no file named 'no-such-name' in the catalog")
    _one_sentence(run_cli("rm", "oh:r1:nonsense", check=False), "capability")
    _one_sentence(run_cli("ls", "oh:r1:nonsense", check=False), "capability")
    _one_sentence(run_cli("add", "oh:v1:x", check=False), "capability")


def test_losing_the_catalog_loses_names_not_data(run_cli, grid, tmp_path):
    src, cap = _put(run_cli, tmp_path, "precious.bin", 300_000)
    run_cli("down", timeout=60)
    db = grid / "coordinator" / "grid.db"
    for path in (db, db.with_name("grid.db-wal"), db.with_name("grid.db-shm")):
        if path.exists():
            path.unlink()
    run_cli("up", "--nodes", "5", timeout=120)
    assert run_cli("ls").stdout.strip() == "", "the names are gone"

    out = tmp_path / "back"
    run_cli("get", cap, "-o", out, timeout=120)
    assert out.read_bytes() == src.read_bytes(), "the capability alone gets the file back"
    described = run_cli("ls", cap).stdout
    assert "catalog        not in the catalog" in described
    assert "found          5 of 5 shares on 5 nodes (3 needed): healthy" in described

    added = run_cli("add", cap, "--name", "precious.bin")  # back in the catalog: renewed and repaired again
    assert "added to the catalog as precious.bin: 5 of 5 shares" in added.stdout
    listing = run_cli("ls").stdout
    assert "precious.bin" in listing and cap in listing


def test_coordinator_not_running_ls_cap_still_describes(run_cli, tmp_path, monkeypatch):
    from openheap.storage.caps import LiteralCap

    monkeypatch.setenv("OPENHEAP_HOME", str(tmp_path / "empty"))
    cap = LiteralCap(b"hello").to_string()
    proc = run_cli("ls", cap)
    assert "size           5" in proc.stdout and "unknown (the coordinator is not running)" in proc.stdout
    assert "not running" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, words", [
    (("serve", "--lease", "0"), "must be a whole number of seconds"),
    (("serve", "--repair-files", "0"), "must be a whole number from 1"),
    (("serve", "--repair-grace", "-5"), "must be from 0"),
    (("serve", "--lease", "10", "--renew-every", "6"), "cannot keep 10-second leases alive"),
])
def test_bad_upkeep_options_one_sentence(run_cli, oh_home, args, words):
    _one_sentence(run_cli(*args, "--coap-port", "0", check=False, timeout=30), words)
