"""The file commands end to end: `openheap up`, then put/get/ls/check/rm
through the coordinator's HTTP API onto registered virtual boards."""

from __future__ import annotations

import os

import pytest


def _file(tmp_path, name, size):
    p = tmp_path / name
    p.write_bytes(os.urandom(size))
    return p


def test_put_get_sizes_and_dedup(run_cli, grid, tmp_path):
    for size in (0, 1, 56, 131073 * 2, 131073 * 2 + 1, 700 * 1000):
        src = _file(tmp_path, "f%d" % size, size)
        put = run_cli("put", src, timeout=120)
        cap = put.stdout.strip().splitlines()[-1]
        assert cap.startswith("oh:"), put.stdout
        out = tmp_path / ("back%d" % size)
        run_cli("get", cap, "-o", out, timeout=120)
        assert out.read_bytes() == src.read_bytes(), size
    # the same bytes again: convergent encryption, nothing sent
    again = run_cli("put", src, timeout=120)
    assert again.stdout.strip().splitlines()[-1] == cap
    assert "0 shares sent (0 bytes)" in again.stderr
    other = run_cli("put", "--random-key", src, timeout=120)
    assert other.stdout.strip().splitlines()[-1] != cap
    assert "5 shares sent" in other.stderr and "only 5 nodes" in other.stderr
    listing = run_cli("ls").stdout
    assert "f700000" in listing
    checked = run_cli("check", cap).stdout
    assert checked.startswith("healthy: 5 of 5 shares on 5 nodes (3 needed)")
    run_cli("rm", cap)
    gone = run_cli("get", cap, "-o", tmp_path / "gone", check=False)
    assert gone.returncode != 0 and "found 0 good shares" in gone.stderr
    assert "Traceback" not in gone.stderr


@pytest.mark.parametrize("args, words", [
    (("get", "oh:r1:nonsense"), "capability"),
    (("get", "hello"), "should start with 'oh:'"),
    (("put", "/no/such/file"), "there is no file"),
    (("check",), "give one capability"),
])
def test_bad_input_one_sentence(run_cli, grid, args, words):
    proc = run_cli(*args, check=False)
    assert proc.returncode != 0
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_coordinator_not_running(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENHEAP_HOME", str(tmp_path / "empty"))
    src = _file(tmp_path, "x", 1000)
    proc = run_cli("put", src, check=False)
    assert proc.returncode != 0 and "not running" in proc.stderr and "Traceback" not in proc.stderr
