"""``openheap demo``: the newcomer's main job on virtual boards.

Starts a few virtual boards, stores a random blob on each of them as a share
(block-wise CoAP PUT, checked by SHA-256 on the board), reads every copy back,
compares, and prints what happened: timings, bytes, and each board's status
(heap, flash, counters) as the board itself reports it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time

from ohproto import const as P
from ..errors import UsageError
from ..node import NodeClient


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "demo", parents=[common],
        help="start virtual boards, store a blob on them and read it back",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    p.add_argument("--nodes", type=int, default=3, metavar="N", help="virtual boards to start (default 3)")
    p.add_argument("--size", type=int, default=256 * 1024, metavar="BYTES", help="blob size (default 262144)")
    p.add_argument("--keep", action="store_true", help="leave the boards running afterwards")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..sim.fleet import Fleet

    if args.nodes < 1 or args.nodes > 64:
        raise UsageError("--nodes must be between 1 and 64")
    if args.size < 0 or args.size > 64 << 20:
        raise UsageError("--size must be between 0 and 64 MiB")
    home = args.home
    if home is None:
        home = tempfile.mkdtemp(prefix="openheap-demo-")
    fleet = Fleet(home)
    print("openheap demo: starting %d virtual boards (home %s)" % (args.nodes, home))
    t0 = time.monotonic()
    boards = fleet.up(args.nodes)
    print("  %d boards up in %.1f s" % (len(boards), time.monotonic() - t0))
    try:
        ok = asyncio.run(_exercise(boards, args.size))
    finally:
        if not args.keep:
            fleet.down()
            print("  boards stopped; their flash images stay in %s" % home)
    print("openheap demo: %s" % ("every copy came back identical" if ok else "FAILED: a copy differed"))
    return 0 if ok else 1


async def _exercise(boards, size: int) -> bool:
    blob = os.urandom(size)
    digest = hashlib.sha256(blob).digest()
    si = hashlib.sha256(b"openheap demo" + digest).digest()[: P.SI_LEN]
    print("  blob: %d bytes, sha256 %s, storage index %s" % (size, digest.hex()[:16], si.hex()))
    ok = True
    for i, b in enumerate(boards):
        async with NodeClient(b.host, b.port, name=b.name) as node:
            t = time.monotonic()
            code = await node.put_share(si, i, blob)
            t_put = time.monotonic() - t
            t = time.monotonic()
            back = await node.get_share(si, i)
            t_get = time.monotonic() - t
            same = back == blob
            ok &= same
            st = await node.status()
            print(
                "  %-8s %s:%d  put %s %.2f MB/s  get %.2f MB/s  %s  heap %d/%d B free, peak %d B, flash %d KiB free, %d shares"
                % (b.name, b.host, b.port, "2.01" if code == P.CREATED else "2.04",
                   size / 1e6 / max(t_put, 1e-9), size / 1e6 / max(t_get, 1e-9),
                   "identical" if same else "DIFFERENT",
                   st[P.ST_HEAP_FREE], st[P.ST_HEAP_TOTAL], st.get(P.ST_HEAP_PEAK, -1),
                   st[P.ST_FS_FREE] // 1024, st[P.ST_SHARES])
            )
    return ok
