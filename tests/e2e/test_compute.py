"""The compute grid end to end (issue 4): `openheap up --nodes 8`, then jobs
through `openheap run` and `openheap.Executor` on the real firmware.

One grid serves the whole module (boards that a test kills, resets or makes
lie are put back as they were before the next test)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import subprocess
import time
from concurrent.futures import as_completed, wait

import pytest

from ohtest import openheap_command, reap, wait_for

JOB = '''\
import binascii
import hashlib


def sq(x):
    return x * x


def add(a, b):
    return a + b


def cube(x):
    return x * x * x


def work(x):
    h = hashlib.sha256(str(x).encode())
    for _ in range(20):
        h = hashlib.sha256(h.digest())
    return [x, h.digest()[0]]


def slow_work(x):
    import time
    time.sleep_ms(3)  # a job that lasts long enough to lose a board in the middle
    return work(x)


def behave(what):
    if what == "raise":
        raise ValueError("bad input " + what)
    if what == "machine":
        import machine
        return "imported machine"
    if what == "os":
        import os
        return os.listdir("/")
    if what == "socket":
        import socket
        return "imported socket"
    if what == "memory":
        hog = []
        while True:
            hog.append(bytearray(4096))
    if what == "big":
        return "x" * 600
    if what == "loop":
        while True:
            pass
    return what


def pad(n):
    return "y" * n


def nap(ms):
    import time
    time.sleep_ms(ms)
    return ms


def digest(data):
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()[:16]
'''

N_BOARDS = 8


def _cli(home, *args, check=True, timeout=120):
    proc = subprocess.run(openheap_command() + ["--home", str(home)] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError("openheap %s exited %d\nstdout: %s\nstderr: %s"
                             % (" ".join(map(str, args)), proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:]))
    return proc


STORED = {}  # the file for --over, stored when the grid starts


@pytest.fixture(scope="module")
def cgrid(tmp_path_factory):
    """``openheap up --nodes 8`` in a module home, and a 300 kB file stored
    on it; yields (home, fleet, job.py)."""
    from openheap.sim.fleet import Fleet

    home = tmp_path_factory.mktemp("compute-home")
    job = home.parent / ("job_%d.py" % os.getpid())
    job.write_text(JOB)
    _cli(home, "up", "--nodes", N_BOARDS, timeout=180)
    try:
        data = os.urandom(300_000)
        src = home.parent / ("data_%d.bin" % os.getpid())
        src.write_bytes(data)
        STORED.update(data=data, cap=_cli(home, "put", src).stdout.strip().splitlines()[-1])
        yield home, Fleet(home), job
    finally:
        _cli(home, "down", check=False, timeout=60)
        reap(home)


def _inputs(tmp_path, values, name="in.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(v) + "\n" for v in values))
    return p


def _lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _status(board):
    from openheap.compute.client import BoardClient

    async def ask():
        c = BoardClient(board.name, board.host, board.port)
        try:
            return await c.status(timeout=2.0)
        finally:
            c.close()

    return asyncio.run(ask())


def _tasks_done(fleet):
    from openheap.compute.wire import ST_TASKS_DONE

    return sum(_status(b).get(ST_TASKS_DONE, 0) for b in fleet.ls() if b.state == "running")


def _restore(fleet):
    """Every board running again (after a kill or a watchdog reset)."""
    fleet.up(N_BOARDS)
    for b in fleet.ls():  # (a board the watchdog reset may still be restarting: refused meanwhile)
        wait_for(lambda b=b: _try_status(b), timeout=30)


def test_1000_inputs_via_cli_in_order_and_second_run_computes_nothing(cgrid, tmp_path):
    home, fleet, job = cgrid
    inp = _inputs(tmp_path, list(range(1000)))
    out = tmp_path / "out.jsonl"
    t = time.monotonic()
    proc = _cli(home, "run", "%s:sq" % job, "--inputs", inp, "--out", out, "--json-summary", tmp_path / "s.json")
    took = time.monotonic() - t
    lines = _lines(out.read_text())
    assert [r["input"] for r in lines] == list(range(1000))
    assert all(r["status"] == "ok" and r["value"] == i * i for i, r in enumerate(lines))
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["ok"] == 1000 and s["cached"] == 0
    ran = {b: d["done"] for b, d in s["boards"].items()}
    assert len(ran) == N_BOARDS and sum(ran.values()) == 1000 and all(v > 0 for v in ran.values()), ran
    assert s["wire"]["code_uploads"] <= N_BOARDS  # code travels once per board
    assert s["batches"] > 0 and s["wire"]["datagrams"] < 1000  # quick tasks travel together
    assert "1000 tasks" in proc.stderr and "per board:" in proc.stderr and "bytes" in proc.stderr
    assert took < 30
    # the same job again: nothing is computed, no board runs a task
    before = _tasks_done(fleet)
    again = _cli(home, "run", "%s:sq" % job, "--inputs", inp, "--out", tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_text() == out.read_text()
    assert "1000 from the results cache, 0 run on boards" in again.stderr
    assert _tasks_done(fleet) == before


def test_spread_arguments_and_bad_input(cgrid, tmp_path):
    home, fleet, job = cgrid
    inp = _inputs(tmp_path, [[1, 2], [3, 4], ["a", "b"]])
    proc = _cli(home, "run", "%s:add" % job, "--inputs", inp, "--spread", "--no-cache")
    assert [r["value"] for r in _lines(proc.stdout)] == [3, 7, "ab"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('1\n2\n{"x": \n')
    for args, words in [
        (("run", "%s:sq" % job, "--inputs", bad), "line 3 of"),
        (("run", "%s:nope" % job, "--inputs", inp), "has no function nope"),
        (("run", tmp_path / "missing.py:sq", "--inputs", inp), "there is no file"),
        (("run", "%s:sq" % job, "--inputs", tmp_path / "none.jsonl"), "there is no inputs file"),
        (("run", "%s:sq" % job, "--inputs", inp, "--replicas", "9"), "needs at least 9 boards"),
    ]:
        p = _cli(home, *args, check=False)
        assert p.returncode != 0 and words in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = _cli(tmp_path / "nohome", "run", "%s:sq" % job, "--inputs", inp, check=False)
    assert p.returncode != 0 and "not running" in p.stderr and "Traceback" not in p.stderr


def _load(job):
    spec = importlib.util.spec_from_file_location(job.stem, job)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_executor_map_submit_as_completed_wait(cgrid):
    import openheap
    from openheap.compute.errors import TaskError

    home, fleet, job = cgrid
    mod = _load(job)
    with openheap.Executor(home=home, cache=False) as ex:
        assert len(ex.boards) == N_BOARDS
        assert list(ex.map(mod.cube, range(1000))) == [i ** 3 for i in range(1000)]
        futs = {ex.submit(mod.add, i, 1): i for i in range(20)}
        assert sorted(f.result() for f in as_completed(futs)) == list(range(1, 21))
        f1, f2 = ex.submit("%s:sq" % job, 12), ex.submit(mod.behave, "raise")
        done, not_done = wait([f1, f2], timeout=30)
        assert not not_done and f1.result() == 144
        with pytest.raises(TaskError) as e:
            f2.result()
        assert e.value.type == "ValueError" and "bad input" in e.value.text
        assert ex.summary.ok >= 1021 and ex.summary.failed == 0
    with pytest.raises(RuntimeError):
        ex.submit(mod.sq, 1)


def test_long_tasks_are_followed_with_observe(cgrid):
    import openheap

    home, fleet, job = cgrid
    with openheap.Executor(home=home, cache=False, timeout=5) as ex:
        first = [ex.submit(ex_nap(job), 1100 + i) for i in range(N_BOARDS)]  # learn how long they take
        assert [f.result(timeout=30) for f in first] == [1100 + i for i in range(N_BOARDS)]
        later = [ex.submit(ex_nap(job), 1200 + i) for i in range(N_BOARDS // 2)]  # submitted, then followed
        assert [f.result(timeout=30) for f in later] == [1200 + i for i in range(N_BOARDS // 2)]
        s = ex.summary.to_json()
    assert s["followed"] == N_BOARDS // 2 and not s["retries"], s


def ex_nap(job):
    return "%s:nap" % job


def test_batches_cut_short_by_large_results_and_batch_1(cgrid, tmp_path):
    # Results of ~460 bytes: a board's answer has room for one or two, so it
    # runs that many of each batch and the host sends the rest again.
    home, fleet, job = cgrid
    sizes = [400 + i % 60 for i in range(120)]
    inp = _inputs(tmp_path, sizes)
    proc = _cli(home, "run", "%s:pad" % job, "--inputs", inp, "--no-cache", "--json-summary", tmp_path / "s.json")
    assert [r["value"] for r in _lines(proc.stdout)] == ["y" * n for n in sizes]
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["ok"] == 120 and s["failed"] == 0  # (a MemoryError of a board's moment is tried again)
    one = _cli(home, "run", "%s:sq" % job, "--inputs", _inputs(tmp_path, list(range(100)), "b1.jsonl"), "--no-cache",
               "--batch", "1", "--json-summary", tmp_path / "b1.json")
    assert [r["value"] for r in _lines(one.stdout)] == [i * i for i in range(100)]
    s1 = json.loads((tmp_path / "b1.json").read_text())
    assert s1["batches"] == 0 and s1["wire"]["datagrams"] >= 200  # a request and an answer per task
    bad = _cli(home, "run", "%s:sq" % job, "--inputs", inp, "--batch", "0", check=False)
    assert bad.returncode == 2 and "--batch" in bad.stderr and "Traceback" not in bad.stderr


def test_bad_tasks_reported_and_boards_keep_serving(cgrid, tmp_path):
    home, fleet, job = cgrid
    kinds = ["raise", "machine", "os", "socket", "memory", "big"]
    values = []
    for i in range(60):
        values.append(kinds[i] if i < len(kinds) else "fine%d" % i)
    inp = _inputs(tmp_path, values)
    proc = _cli(home, "run", "%s:behave" % job, "--inputs", inp, "--no-cache", "--retries", "0", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    res = _lines(proc.stdout)
    assert [r["input"] for r in res] == list(range(60))
    err = {values[r["input"]]: r["error"] for r in res if r["status"] != "ok"}
    assert set(err) == set(kinds), err
    assert err["raise"][0] == "ValueError" and "bad input" in err["raise"][1]
    for mod in ("machine", "os", "socket"):
        assert err[mod][0] == "ImportError" and mod in err[mod][1], err[mod]
    assert err["memory"][0] == "MemoryError"
    assert err["big"][0] == "ResultTooLarge"
    assert all(r["value"] == values[r["input"]] for r in res if r["input"] >= len(kinds))
    assert "6 raised, 0 failed" in proc.stderr
    for b in fleet.ls():  # every board still answers, and runs tasks
        assert b.state == "running" and _status(b)
    ok = _cli(home, "run", "%s:sq" % job, "--inputs", _inputs(tmp_path, list(range(64)), "n.jsonl"), "--no-cache")
    assert [r["value"] for r in _lines(ok.stdout)] == [i * i for i in range(64)]


def test_board_killed_mid_job(cgrid):
    import openheap

    home, fleet, job = cgrid
    mod = _load(job)
    victim = fleet.ls()[3]
    try:
        with openheap.Executor(home=home, cache=False) as ex:
            futs = [ex.submit(mod.slow_work, i) for i in range(1500)]
            wait_for(lambda: sum(f.done() for f in futs) >= 200, timeout=30, interval=0.01)
            fleet.kill(victim.name)
            results = [f.result(timeout=60) for f in futs]
            text = ex.summary.text()
            retried = ex.summary.retries
        assert [r[0] for r in results] == list(range(1500))
        assert any(r[1] == victim.name for r in retried), retried
        assert "on %s: the board became unreachable" % victim.name in text, text
        assert "%s stopped answering" % victim.name in text
    finally:
        _restore(fleet)


def test_endless_loop_times_out_board_resets_and_rejoins(cgrid, tmp_path):
    from openheap.compute.wire import ST_TASK_LOST

    home, fleet, job = cgrid
    values = ["fine%d" % i for i in range(200)]
    values[5] = "loop"
    inp = _inputs(tmp_path, values)
    before = {b.name: b.restarts for b in fleet.ls()}
    t = time.monotonic()
    proc = _cli(home, "run", "%s:behave" % job, "--inputs", inp, "--no-cache", "--timeout", "1", "--retries", "0",
                "--json-summary", tmp_path / "s.json", check=False)
    assert time.monotonic() - t < 30
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    res = _lines(proc.stdout)
    # the host gives up at the task's limit plus a margin, as the board's watchdog
    # resets it: silence, or the closed port of the board restarting
    assert res[5]["status"] == "failed" and res[5].get("grid")
    assert "no answer" in res[5]["error"][1] or "became unreachable" in res[5]["error"][1], res[5]
    assert all(r["status"] == "ok" for i, r in enumerate(res) if i != 5)
    s = json.loads((tmp_path / "s.json").read_text())
    # Only task 5 is charged; a batch that was on the stuck board too (when
    # the boards are slow enough for one to be in flight) is sent again
    # alone, free ("its batch failed"), as any batch lost with its board.
    # (Task 5 itself may have been in such a batch: then it stopped that
    # board first, and is charged on the next one.)
    charged = [r for r in s["retries"] if "its batch failed" not in r["why"]]
    assert [r["task"] for r in charged] == [5], s["retries"]
    stuck = charged[0]["board"]
    looped_on = {r["board"] for r in s["retries"] if r["task"] == 5}
    assert all(r["board"] in looped_on for r in s["retries"]), s["retries"]
    # the board's watchdog reset it; it comes back and says which task it lost
    wait_for(lambda: fleet.info(stuck).restarts > before[stuck], timeout=30)
    board = fleet.info(stuck)
    st = wait_for(lambda: _try_status(board), timeout=30)
    assert st.get(ST_TASK_LOST) is not None
    ok = _cli(home, "run", "%s:sq" % job, "--inputs", _inputs(tmp_path, list(range(100)), "n.jsonl"), "--no-cache",
              "--json-summary", tmp_path / "s2.json")
    assert [r["value"] for r in _lines(ok.stdout)] == [i * i for i in range(100)]
    assert json.loads((tmp_path / "s2.json").read_text())["boards"][stuck]["done"] > 0  # it rejoined


def test_a_loop_inside_a_batch_costs_its_neighbours_nothing(cgrid, tmp_path):
    # Once "behave" is known to be quick, tasks travel in batches; one that
    # never returns gets its board reset, and the batch fails as a whole. Its
    # other tasks go again alone, free of charge (--retries 0 here): only the
    # looping one fails.
    home, fleet, job = cgrid
    values = ["fine%d" % i for i in range(400)]
    values[300] = "loop"
    try:
        proc = _cli(home, "run", "%s:behave" % job, "--inputs", _inputs(tmp_path, values), "--no-cache",
                    "--timeout", "1", "--retries", "0", "--json-summary", tmp_path / "s.json", check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        res = _lines(proc.stdout)
        assert [r["status"] for r in res] == ["failed" if i == 300 else "ok" for i in range(400)], proc.stderr
        s = json.loads((tmp_path / "s.json").read_text())
        assert s["batches"] > 0
        # The looping task is the one lost; any other task sent again was a
        # batch-mate, sent again free. (Whether task 300 itself went in a
        # batch depends on the queue at that moment: on a busy machine it
        # sometimes goes alone, and then nothing else is touched.)
        assert 300 in [r["task"] for r in s["retries"]], s["retries"]
        assert all("its batch failed" in r["why"] for r in s["retries"] if r["task"] != 300), s["retries"]
    finally:
        _restore(fleet)


def _try_status(board):
    try:
        return _status(board)
    except Exception:
        return None


def test_replicas_outvote_a_lying_board(cgrid, tmp_path):
    from openheap.cli.grid import _set_config

    home, fleet, job = cgrid
    liar = fleet.ls()[1].name
    _set_config(fleet, liar, {"lie": True})
    fleet.down([liar])
    _restore(fleet)
    try:
        inp = _inputs(tmp_path, list(range(200)))
        proc = _cli(home, "run", "%s:sq" % job, "--inputs", inp, "--replicas", "2", "--no-cache",
                    "--json-summary", tmp_path / "s.json")
        assert [r["value"] for r in _lines(proc.stdout)] == [i * i for i in range(200)]
        s = json.loads((tmp_path / "s.json").read_text())
        assert s["disagreements"] and all(d["dissent"] == [liar] for d in s["disagreements"])
        assert 0 < len(s["disagreements"]) <= s["boards"][liar]["done"]
        assert "replicas disagreed on %d task" % len(s["disagreements"]) in proc.stderr
        assert "outvoted: %s" % liar in proc.stderr
    finally:
        _set_config(fleet, liar, {"lie": False})
        fleet.down([liar])
        _restore(fleet)


def test_over_cap_same_results_as_shipping_with_fewer_bytes(cgrid, tmp_path):
    home, fleet, job = cgrid
    data, cap = STORED["data"], STORED["cap"]
    runs = {}
    for mode in ("over", "ship"):
        args = ["run", "%s:digest" % job, "--over", cap, "--no-cache", "--chunk", "256",
                "--json-summary", tmp_path / (mode + ".json")]
        proc = _cli(home, *(args + (["--ship"] if mode == "ship" else [])))
        runs[mode] = (_lines(proc.stdout), json.loads((tmp_path / (mode + ".json")).read_text()))
    over, ship = runs["over"][0], runs["ship"][0]
    assert over == ship
    pos = 0
    for r in over:
        assert r["status"] == "ok" and r["offset"] == pos
        assert r["value"] == hashlib.sha256(data[pos:pos + r["length"]]).hexdigest()[:16]
        pos += r["length"]
    assert pos == len(data)
    b_over, b_ship = runs["over"][1]["wire"]["ip_bytes"], runs["ship"][1]["wire"]["ip_bytes"]
    info = (b_over, b_ship, runs["over"][1].get("over"), runs["ship"][1].get("over"))
    assert b_ship > 2 * len(data) and b_over * 2 < b_ship, info
