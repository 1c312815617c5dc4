"""End to end: the real ``openheap sim`` command and virtual boards.

``test_real_firmware_*`` run the actual firmware and talk CoAP to it; the
other tests use the stand-in node from ``conftest.stub_firmware`` so that they
test the supervisor, the fleet and the CLI on their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time

import pytest

from ohtest import reap, wait_for
from openheap.boards import get_board
from openheap.sim.fleet import Fleet
from openheap.sim.image import read_image


def _ls(run_cli, home) -> dict:
    return {b["name"]: b for b in json.loads(run_cli("sim", "ls", "--json", "--home", home).stdout)}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def _echo(addr, data: bytes = b"ping", timeout: float = 2.0) -> bytes:
    """Send to a board (a BoardInfo, or an ls --json dict) and read the echo."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, _addr(addr))
        return s.recv(1500)


def _addr(b):
    return (b["host"], b["port"]) if isinstance(b, dict) else (b.host, b.port)


def _send(addr, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, _addr(addr))


def _boots(image: str) -> int:
    return int(read_image(image)["/boots"])


async def _coap_get(uri: str):
    import aiocoap

    ctx = await aiocoap.Context.create_client_context()
    try:
        request = aiocoap.Message(code=aiocoap.GET, uri=uri)
        return await asyncio.wait_for(ctx.request(request).response, 20)
    finally:
        await ctx.shutdown()


# -- the real firmware


def test_real_firmware_grid_lifecycle(run_cli, tmp_path):
    """up 3 / ls / CoAP GET /i / down / up again at the same addresses."""
    home = tmp_path / "home"
    try:
        up = run_cli("sim", "up", "--nodes", "3", "--home", home)
        lines = up.stdout.splitlines()
        assert len(lines) == 3
        boards = _ls(run_cli, home)
        assert sorted(boards) == ["node01", "node02", "node03"]
        for line, (name, b) in zip(lines, sorted(boards.items())):
            assert line.split() == [name, "%s:%d" % (b["host"], b["port"]), "virtual", str(b["pid"])]
            for key in ("name", "host", "port", "board", "pid", "state", "image", "restarts", "supervisor_pid"):
                assert key in b
            assert b["state"] == "running" and b["board"] == "virtual" and b["restarts"] == 0
            assert _pid_alive(b["pid"]) and "openheap.sim.vboard" in _cmdline(b["pid"])
            assert "heapsize=65536" in _cmdline(b["pid"])
            assert _pid_alive(b["supervisor_pid"])
            assert os.path.getsize(b["image"]) == get_board("virtual").fs_size

        import aiocoap
        import cbor2

        for name, b in boards.items():
            response = asyncio.run(_coap_get("coap://%s:%d/i" % (b["host"], b["port"])))
            assert response.code == aiocoap.CONTENT, response
            status = cbor2.loads(response.payload)
            assert status[0] == name  # ST_NAME

        down = run_cli("sim", "down", "--home", home)
        assert sorted(down.stdout.split()) == sorted(["node01", "node02", "node03"] + ["stopped"] * 3)
        after = _ls(run_cli, home)
        for name, b in boards.items():
            assert after[name]["state"] == "stopped" and after[name]["pid"] is None
            assert not _pid_alive(b["pid"]) and not _pid_alive(b["supervisor_pid"])
            assert os.path.isfile(b["image"])

        run_cli("sim", "up", "--nodes", "3", "--home", home)
        again = _ls(run_cli, home)
        assert {n: b["port"] for n, b in again.items()} == {n: b["port"] for n, b in boards.items()}
        response = asyncio.run(_coap_get("coap://%s:%d/i" % (again["node02"]["host"], again["node02"]["port"])))
        assert response.code == aiocoap.CONTENT
    finally:
        run_cli("sim", "down", "--home", home, check=False)
        assert not reap(home), "processes left running"


# -- the virtual-board machinery, on the stand-in node


def test_sigkill_leaves_board_down(run_cli, oh_home, stub_firmware):
    run_cli("sim", "up", "--nodes", "3")
    before = _ls(run_cli, oh_home)
    victim = before["node02"]
    os.kill(victim["pid"], signal.SIGKILL)
    after = wait_for(lambda: (lambda d: d if d["node02"]["state"] == "crashed" else None)(_ls(run_cli, oh_home)))
    assert after["node02"]["pid"] is None and after["node02"]["supervisor_pid"] is None
    assert "SIGKILL" in after["node02"]["reason"]
    time.sleep(0.3)  # it must stay down
    assert _ls(run_cli, oh_home)["node02"]["state"] == "crashed"
    assert not _pid_alive(victim["pid"]) and not _pid_alive(victim["supervisor_pid"])
    for name in ("node01", "node03"):
        assert after[name]["state"] == "running" and after[name]["pid"] == before[name]["pid"]
        assert _echo(after[name]) == b"echo:ping"
    table = run_cli("sim", "ls").stdout
    assert "crashed" in table and "killed by SIGKILL" in table

    run_cli("sim", "up", "--nodes", "3")  # brings it back, same port, same image
    back = _ls(run_cli, oh_home)["node02"]
    assert back["state"] == "running" and back["port"] == victim["port"]
    assert _echo(back) == b"echo:ping"
    run_cli("sim", "down")
    assert _boots(back["image"]) == 2


def test_sim_kill_command(run_cli, oh_home, stub_firmware):
    run_cli("sim", "up", "--nodes", "1")
    pid = _ls(run_cli, oh_home)["node01"]["pid"]
    assert run_cli("sim", "kill", "node01").stdout.strip() == "node01 killed"
    info = _ls(run_cli, oh_home)["node01"]
    assert info["state"] == "crashed" and info["pid"] is None and not _pid_alive(pid)
    again = run_cli("sim", "kill", "node01", check=False)
    assert again.returncode != 0 and "not running" in again.stderr


def test_watchdog_reset_restarts_board(fleet, stub_firmware):
    (board,) = fleet.up(1)
    _send(board, b"reset")
    info = wait_for(lambda: (lambda i: i if i.restarts == 1 and i.state == "running" else None)(fleet.info("node01")))
    assert info.pid != board.pid and info.port == board.port
    assert _echo(info) == b"echo:ping"


def test_other_exit_status_leaves_board_down(fleet, stub_firmware):
    a, b = fleet.up(2)
    _send(a, b"crash")
    info = wait_for(lambda: (lambda i: i if i.state == "crashed" else None)(fleet.info("node01")))
    assert info.reason == "exited with status 1" and info.pid is None
    assert fleet.info("node02").state == "running"


def test_down_keeps_images_and_up_restores_them(fleet, stub_firmware):
    first = fleet.up(2)
    stopped = fleet.down()
    assert stopped == ["node01", "node02"]
    assert [b.state for b in fleet.ls()] == ["stopped", "stopped"]
    assert [_boots(b.image) for b in first] == [1, 1]
    second = fleet.up(2)
    assert [(b.name, b.port) for b in second] == [(b.name, b.port) for b in first]
    fleet.down()
    assert [_boots(b.image) for b in second] == [2, 2]
    assert fleet.down() == []


def test_up_fewer_than_existing_starts_the_first(fleet, stub_firmware):
    fleet.up(3)
    fleet.down()
    (only,) = fleet.up(1)
    assert only.name == "node01"
    assert [b.state for b in fleet.ls()] == ["running", "stopped", "stopped"]


def test_up_is_idempotent_and_grows(fleet, stub_firmware):
    first = fleet.up(2)
    grown = fleet.up(4)
    assert [b.name for b in grown] == ["node01", "node02", "node03", "node04"]
    assert [b.pid for b in grown[:2]] == [b.pid for b in first]  # running boards are left alone
    assert len({b.port for b in grown}) == 4


def test_fs_size_and_board_options(run_cli, oh_home, stub_firmware):
    out = run_cli("sim", "up", "--nodes", "2", "--board", "esp8266", "--fs-size", "256KiB").stdout
    assert [line.split()[2] for line in out.splitlines()] == ["esp8266", "esp8266"]
    boards = _ls(run_cli, oh_home)
    assert os.path.getsize(boards["node01"]["image"]) == 256 * 1024
    assert "heapsize=65536" in _cmdline(boards["node01"]["pid"])  # 32 KiB budget, x2 on the 64-bit port


def test_rm(run_cli, oh_home, stub_firmware):
    run_cli("sim", "up", "--nodes", "3")
    assert run_cli("sim", "rm", "node02").stdout.strip() == "node02 removed"
    assert sorted(_ls(run_cli, oh_home)) == ["node01", "node03"]
    assert not (oh_home / "sim" / "node02").exists()
    run_cli("sim", "rm", "--all")
    assert _ls(run_cli, oh_home) == {}
    assert "no virtual boards" in run_cli("sim", "ls").stdout


def test_home_option_anywhere(run_cli, tmp_path, stub_firmware):
    home = tmp_path / "elsewhere"
    try:
        run_cli("--home", home, "sim", "up", "--nodes", "1")
        assert list(_ls(run_cli, home)) == ["node01"]
        assert (home / "sim" / "node01" / "fs.img").is_file()
    finally:
        run_cli("sim", "down", "--home", home, check=False)
        reap(home)


def test_firmware_that_crashes_fails_clearly(run_cli, oh_home, tmp_path, monkeypatch):
    fw = tmp_path / "badfw"
    fw.mkdir()
    (fw / "main.py").write_text("raise ValueError('no such luck')\n")
    monkeypatch.setenv("OPENHEAP_FIRMWARE_DIR", str(fw))
    monkeypatch.setenv("OPENHEAP_BUILD_DIR", str(tmp_path / "build"))
    proc = run_cli("sim", "up", "--nodes", "2", check=False)
    assert proc.returncode == 5
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "no such luck" in proc.stderr and "board.log" in proc.stderr
    assert not reap(oh_home)


def test_boot_loop_is_given_up(fleet, tmp_path, monkeypatch):
    from openheap.errors import SimError

    fw = tmp_path / "loopfw"
    fw.mkdir()
    (fw / "main.py").write_text("import sys\nprint('booting')\nsys.exit(3)\n")
    monkeypatch.setenv("OPENHEAP_FIRMWARE_DIR", str(fw))
    monkeypatch.setenv("OPENHEAP_BUILD_DIR", str(tmp_path / "build"))
    started = time.monotonic()
    with pytest.raises(SimError) as err:
        fleet.up(1)
    assert time.monotonic() - started < 10
    assert "reset 3 times" in str(err.value)
    assert fleet.info("node01").state == "crashed"


@pytest.mark.parametrize(
    "args",
    [
        ["sim", "up", "--nodes", "0"],
        ["sim", "up", "--nodes", "many"],
        ["sim", "up"],
        ["sim", "up", "--nodes", "2", "--board", "no-such-board"],
        ["sim", "up", "--nodes", "1", "--fs-size", "12345"],
        ["sim", "up", "--nodes", "1", "--fs-size", "huge"],
        ["sim", "rm", "ghost"],
        ["sim", "rm"],
        ["sim", "kill", "ghost"],
        ["sim", "kill", "../etc"],
        ["sim", "frobnicate"],
        ["frobnicate"],
    ],
)
def test_bad_input_gets_one_sentence(run_cli, oh_home, stub_firmware, args):
    proc = run_cli(*args, check=False)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error" in proc.stderr
    assert not (oh_home / "sim" / "node01").exists()


def test_fleet_api(fleet, stub_firmware):
    boards = fleet.up(2)
    assert [b.name for b in boards] == ["node01", "node02"]
    assert all(b.state == "running" and b.pid and b.supervisor_pid for b in boards)
    assert boards[0].uri == "coap://127.0.1.1:%d" % boards[0].port
    assert boards[1].host == "127.0.1.2", "every board has a loopback address of its own"
    fleet.kill("node01")
    assert fleet.info("node01").state == "crashed"
    fleet.remove("node01")
    assert [b.name for b in fleet.ls()] == ["node02"]
    assert not _pid_alive(boards[0].pid)
    (again,) = fleet.up(1)
    assert again.name == "node02"  # the first existing board
    assert [b.name for b in fleet.up(3)] == ["node01", "node02", "node03"]  # the gap is filled


def test_supervisor_killed_takes_board_down(fleet, stub_firmware):
    (board,) = fleet.up(1)
    os.kill(board.supervisor_pid, signal.SIGKILL)
    wait_for(lambda: not _pid_alive(board.pid))  # PR_SET_PDEATHSIG
    info = fleet.info("node01")
    assert info.state == "crashed" and info.pid is None
