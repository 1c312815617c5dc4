"""Helpers shared by test modules (import as ``from ohtest import ...``;
``conftest`` is not importable by name when several folders have one)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path


def _processes_under(home: Path) -> list[int]:
    """Pids whose command line mentions ``home`` (supervisors and boards of a test home)."""
    pids = []
    needle = str(home).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def reap(home: Path) -> list[int]:
    """SIGKILL every process left running from ``home``; return their pids."""
    pids = _processes_under(home)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


def wait_for(predicate, timeout=10.0, interval=0.05):
    """Poll ``predicate`` until it returns a true value; return it (or fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %g s" % timeout)
        time.sleep(interval)


def flip_byte_in_image(image, file_path: str, offset: int, block_size: int = 4096) -> None:
    """Flip one byte of ``file_path`` inside a (stopped) board's littlefs image,
    as a bit of flash going bad would; the file keeps its size."""
    from littlefs import LittleFS

    image = Path(image)
    data = bytearray(image.read_bytes())
    fs = LittleFS(block_size=block_size, block_count=len(data) // block_size, mount=False)
    fs.context.buffer = data
    fs.mount()
    with fs.open(file_path, "rb") as f:
        content = bytearray(f.read())
    content[offset] ^= 0xFF
    with fs.open(file_path, "wb") as f:
        f.write(bytes(content))
    fs.unmount()
    image.write_bytes(bytes(fs.context.buffer))


def openheap_command() -> list[str]:
    """The installed ``openheap`` script next to this Python, else ``python -m``."""
    script = Path(sys.executable).parent / "openheap"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "openheap.cli.main"]
