"""What every part of the grid benchmark shares: paths, the grid's settings, ``log`` and ``sh``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent  # bench/
ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent
OPENHEAP = VENV_BIN / "openheap" if (VENV_BIN / "openheap").exists() else ROOT / ".venv" / "bin" / "openheap"
TAHOE_VENV = BENCH / ".tahoe-venv"
TAHOE = TAHOE_VENV / "bin" / "tahoe"
NS_ENV = "OPENHEAP_BENCH_NETNS_FILE"
MIB = 1 << 20
K, N, HAPPY, NODES = 3, 10, 7, 10


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(cmd: list[str], check=True, timeout=60, **kw) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, cmd)), r.returncode, (r.stderr or r.stdout).strip()[:500]))
    return r.stdout
