"""put and get draw a progress line on stderr when it is a terminal (a
pseudo-terminal here), and print none when stderr is piped."""

from __future__ import annotations

import os
import pty
import re
import subprocess

from ohtest import openheap_command


def _with_tty_stderr(*args, timeout=120) -> tuple[int, bytes, str]:
    """Run the CLI with stderr on a pseudo-terminal; (status, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(openheap_command() + [str(a) for a in args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = None
        shown = bytearray()
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out, shown.decode("utf-8", "replace")
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)


def test_progress_on_a_terminal_and_none_when_piped(run_cli, grid, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)
    src = tmp_path / "f.bin"
    src.write_bytes(data)

    code, out, shown = _with_tty_stderr("put", src)
    assert code == 0, shown
    cap = out.decode().strip().splitlines()[-1]
    steps = re.findall(r"\rput +([\d.]+)% \((\d+)/(\d+) bytes\)", shown)
    assert len(steps) >= 3, shown  # it moves: several updates of one line
    assert steps[-1] == ("100.0", str(len(data)), str(len(data)))
    assert [int(b) for _, b, _ in steps] == sorted(int(b) for _, b, _ in steps)
    assert "sent; the coordinator is storing the shares..." in shown
    assert "Traceback" not in shown

    back = tmp_path / "back.bin"
    code, out, shown = _with_tty_stderr("get", cap, "-o", back)
    assert code == 0, shown
    assert back.read_bytes() == data
    steps = re.findall(r"\rget +([\d.]+)% \((\d+)/(\d+) bytes\)", shown)
    assert steps and steps[-1] == ("100.0", str(len(data)), str(len(data))), shown

    # piped (run_cli captures stderr): the same commands draw nothing
    piped = run_cli("put", src, timeout=120)
    assert "%" not in piped.stderr and "\r" not in piped.stderr
    assert piped.stdout.strip().splitlines()[-1] == cap
    got = run_cli("get", cap, "-o", back, timeout=120)
    assert got.stderr == "" and back.read_bytes() == data
