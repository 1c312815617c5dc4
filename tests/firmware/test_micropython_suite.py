"""Run every MicroPython test script ``tests/firmware/mp_test_*.py`` under pytest.

Each script runs in the MicroPython unix port the way a virtual board runs
the firmware, but with a larger heap (96 KiB): the test code, its fakes and
its data share the heap with the node, and a 64 KiB heap left the suite one
fragmentation away from a MemoryError (seen in CI). The firmware's own 64 KiB
budget is checked where the firmware runs alone, on virtual boards
(``tests/e2e/test_node_e2e.py``, ``tests/faults``). The compiled firmware
bundle (``ohnode`` and ``ohproto`` as ``.mpy``) in a ROMFS partition mounted
at ``/rom`` and executed in place (see :mod:`openheap.sim.vboard`), and
``MICROPYPATH`` giving the port's frozen ``asyncio``, ``tests/firmware`` (the
helper ``mptest``) and ``protocols`` (for ``vectors.json``). A script reports
with ``mptest.run`` (last line ``N passed, M failed``) and exits non-zero on
failure; this module turns each script into one pytest test that fails with
the script's output.
"""

import atexit
import os
import shutil
import tempfile
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HEAP = 96 * 1024  # board budget 64 KiB + room for the test code (see above)
TIMEOUT_S = 120
SCRIPTS = sorted(HERE.glob("mp_test_*.py"))


def _romfs():
    """ROMFS image: the firmware bundle plus the compiled test scripts.

    Test scripts are precompiled too: compiling a few hundred lines of test
    source inside a 64 KiB heap would fail for want of compiler RAM. The
    task modules of ``taskmods/`` go to ``/rom/taskmods/<name>.mpy``, where
    the task tests read the bytes they PUT into a node's code cache.
    """
    from openheap.firmware import _mpy_cross, build_bundle
    from openheap.sim.vboard import build_romfs

    bundle = build_bundle(None)
    out = Path(tempfile.mkdtemp(prefix="openheap-mptest-"))  # one per run: no races
    atexit.register(shutil.rmtree, out, True)
    tree = out / "tree"
    shutil.copytree(bundle, tree)
    (tree / "taskmods").mkdir()
    sources = [(src, tree / (src.stem + ".mpy")) for src in sorted(HERE.glob("mp*.py"))]
    sources += [(src, tree / "taskmods" / (src.stem + ".mpy")) for src in sorted((HERE / "taskmods").glob("*.py"))]
    for src, dst in sources:
        proc = subprocess.run([_mpy_cross(), "-o", str(dst), str(src)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode:
            pytest.fail("mpy-cross %s:\n%s" % (src.name, proc.stdout), pytrace=False)
    return build_romfs(tree, out / "romfs.img")


_IMAGE = []


def run_script(script, heap=HEAP):
    """Run one MicroPython script from the repo root; return the CompletedProcess."""
    if not _IMAGE:
        _IMAGE.append(_romfs())
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([".frozen", str(HERE), str(REPO / "protocols")])
    return subprocess.run(
        [sys.executable, "-m", "openheap.sim.vboard", "-X", "heapsize=%d" % heap,
         "--romfs", str(_IMAGE[0]), "--script", str(script)],
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
