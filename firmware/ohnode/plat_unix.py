# Platform layer of the virtual board (MicroPython unix port): the board's
# configuration is a JSON file named on the command line, its flash is a
# littlefs2 image file mounted at /flash, there is no radio to bring up, and
# a watchdog reset is process exit status 3 (the supervisor restarts us).
#
# The watchdog is the board's host process (openheap.sim.vboard): it shares
# a 16-byte page with us, whose address is in $OPENHEAP_WDT, and ends the
# process with status 3 once the armed timeout passes without a feed:
# bytes 0-3 the timeout in ms (uint32 little-endian; 0: not armed), byte 4
# a feed counter, byte 8 whether a task runs, bytes 12-15 its id. The page
# lives in a file of the board, so bytes 8-15 outlast a reset, like a real
# board's RTC memory: the next boot learns which task the watchdog cut
# (wdt_lost). Feeding is a store to memory: no system call, no rate limit.
# Without $OPENHEAP_WDT (the firmware tests) there is no watchdog.
#
# The flash image is mapped into memory the same way ($OPENHEAP_FLASH =
# "address:length", a shared mapping of the image file made by the host
# process), as flash is on a board: a block program is a memory copy (a
# slice store, which allocates nothing), not a seek and a write system call,
# and a block read is a slice load: it allocates one small view, but costs
# 0.37 us where a seek and a readinto cost 1.24 us, and littlefs reads back
# every program to check it (2.25 reads per KiB written). Without the
# mapping the image file is read and written.
import sys
import time
from micropython import const

_RESET_EXIT = const(3)
_ROOT = "/flash"
_wdt = None  # the shared page (bytearray), False when there is none
_IO = const(128)
_LOOKAHEAD = const(128)  # bytes, 8 free blocks each found per scan (a 1 KiB write on a 33 MB fs: 107 -> 87 us)


class _ImageDev:
    # Block device over an image file (extended interface with offsets).
    def __init__(self, path, bs, mem):
        self._f = open(path, "r+b")
        self._bs = bs
        self._n = self._f.seek(0, 2) // bs
        self._m = mem  # the mapping (a memoryview), or None

    def readblocks(self, n, buf, off=0):
        a = n * self._bs + off
        if self._m is not None:
            buf[:] = self._m[a : a + len(buf)]
            return
        self._f.seek(a)
        self._f.readinto(buf)

    def writeblocks(self, n, buf, off=None):
        a = n * self._bs + (off or 0)
        if self._m is not None:
            self._m[a : a + len(buf)] = buf
            return
        self._f.seek(a)
        self._f.write(buf)

    def ioctl(self, op, arg):
        if op == 3:  # sync
            # A program into the mapping is in the page cache at once and
            # outlives the process, as flash outlives a reset: nothing to
            # wait for. (The file's flush is an fsync, a wait for the host's
            # disk after every littlefs commit: a 1 MiB put on 10 boards
            # took 0.14 s with it, 0.08 s without.)
            if self._m is None:
                self._f.flush()
            return 0
        if op == 4:
            return self._n
        if op == 5:
            return self._bs
        if op == 6:  # erase: nothing to do on a file
            return 0
        return None


def config():
    import json

    with open(sys.argv[-1]) as f:
        return json.load(f)


def mount(cfg):
    import os
    import vfs

    m = os.getenv("OPENHEAP_FLASH")
    if m:
        import uctypes

        m = m.split(":")
        m = memoryview(uctypes.bytearray_at(int(m[0]), int(m[1])))
    dev = _ImageDev(cfg["image"], cfg.get("block_size", 4096), m)
    # Reads and programs of _IO bytes: littlefs then calls this Python block
    # device about 4 times less often than with its 32-byte default (a 1 KiB
    # write measured 50 us -> 17 us), for 3 x 384 B more cache on the heap.
    vfs.mount(vfs.VfsLfs2(dev, readsize=_IO, progsize=_IO, lookahead=_LOOKAHEAD), _ROOT)
    return _ROOT


async def net_up(cfg):
    return cfg.get("host", "127.0.0.1")


def uid():
    import hashlib

    return hashlib.sha256(sys.argv[-1]).digest()[:8]


def _page():
    global _wdt
    if _wdt is None:
        import os

        a = os.getenv("OPENHEAP_WDT")
        _wdt = False
        if a:
            import uctypes

            _wdt = uctypes.bytearray_at(int(a), 16)
    return _wdt


def wdt_start(ms, task=None):
    # Arm (or re-arm) for ms; task: the id of the task about to run, which a
    # reset before the next wdt_start leaves for wdt_lost().
    w = _page()
    if w:
        import struct

        struct.pack_into("<I", w, 12, task or 0)
        w[8] = task is not None
        struct.pack_into("<I", w, 0, ms)
        w[4] = (w[4] + 1) & 0xFF


def wdt_feed():
    w = _wdt
    if w:
        w[4] = (w[4] + 1) & 0xFF


def wdt_lost():
    # Id of the task that ran when the board last reset, or None (call it
    # at boot, before wdt_start).
    w = _page()
    if w and w[8]:
        import struct

        w[8] = 0
        return struct.unpack_from("<I", w, 12)[0]
    return None


def reset():
    sys.exit(_RESET_EXIT)


ticks = (time.ticks_ms, time.ticks_diff)
