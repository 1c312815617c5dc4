"""``openheap sim``: run virtual boards (the firmware on the MicroPython unix port).

::

    openheap sim up --nodes N [--board NAME] [--fs-size BYTES]
    openheap sim ls [--json]
    openheap sim down
    openheap sim kill NAME
    openheap sim rm NAME... | --all
"""

from __future__ import annotations

import argparse
import json
import re

from ..errors import UsageError

__all__ = ["register"]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}  # binary: K, KiB, KB all mean 1024


def _nodes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number, not %r" % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1, not %d" % value)
    if value > 256:
        raise argparse.ArgumentTypeError("must be at most 256, not %d" % value)
    return value


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*(?:([kmg])i?)?b?", text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError("must be a size in bytes such as 2097152 or 2MiB, not %r" % text)
    return int(m.group(1)) * _UNITS[m.group(2) or ""]


def _fleet(args):
    from ..sim.fleet import Fleet

    return Fleet(args.home)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_up(args) -> int:
    """Create/start boards and print ``name  host:port  board  pid`` per board."""
    boards = _fleet(args).up(args.nodes, board=args.board, fs_size=args.fs_size)
    print(_table([[b.name, b.address, b.board, str(b.pid)] for b in boards]))
    return 0


def cmd_ls(args) -> int:
    """List the boards as a table or as JSON."""
    boards = _fleet(args).ls()
    if args.json:
        print(json.dumps([b.to_json() for b in boards], indent=2))
        return 0
    if not boards:
        print("no virtual boards; create some with 'openheap sim up --nodes N'")
        return 0
    rows = [["NAME", "ADDRESS", "BOARD", "STATE", "PID", "RESTARTS", "NOTE"]]
    for b in boards:
        rows.append([b.name, b.address, b.board, b.state, str(b.pid or "-"), str(b.restarts), b.reason or ""])
    print(_table(rows))
    return 0


def cmd_down(args) -> int:
    """Stop every board; keep their images."""
    stopped = _fleet(args).down()
    for name in stopped:
        print("%s stopped" % name)
    if not stopped:
        print("no virtual boards were running")
    return 0


def cmd_kill(args) -> int:
    """SIGKILL a board's MicroPython process (simulates a crash; it stays down)."""
    _fleet(args).kill(args.name)
    print("%s killed" % args.name)
    return 0


def cmd_rm(args) -> int:
    """Delete boards with their images."""
    fleet = _fleet(args)
    if args.all == bool(args.names):
        raise UsageError("give board names or --all to 'openheap sim rm', not both or neither")
    if args.all:
        removed = fleet.remove_all()
    else:
        for name in args.names:
            fleet.info(name)  # every name must exist before anything is deleted
        for name in args.names:
            fleet.remove(name)
        removed = args.names
    for name in removed:
        print("%s removed" % name)
    if not removed:
        print("no virtual boards to remove")
    return 0


def register(subparsers, common) -> None:
    """Add the ``sim`` command group to the ``openheap`` parser."""
    sim = subparsers.add_parser(
        "sim",
        parents=[common],
        help="run virtual boards on this machine",
        description="Virtual boards: the real firmware on the MicroPython unix port, on 127.0.0.1.",
    )
    sim.set_defaults(_parser=sim)
    sub = sim.add_subparsers(dest="sim_command", metavar="ACTION")

    p = sub.add_parser(
        "up",
        parents=[common],
        help="create and start boards",
        description="Start the first N virtual boards, creating missing ones (node01, node02, ...). "
        "A board keeps its UDP port and filesystem image; --board and --fs-size apply to boards created now.",
    )
    p.add_argument("--nodes", "-n", type=_nodes, required=True, metavar="N", help="number of boards to run")
    p.add_argument("--board", default="virtual", metavar="NAME", help="board definition for new boards (default: virtual)")
    p.add_argument("--fs-size", type=_size, metavar="BYTES", help="filesystem size of new boards, e.g. 2MiB (default: the board's)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("ls", parents=[common], help="list boards", description="List the virtual boards.")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("down", parents=[common], help="stop every board (images are kept)",
                       description="Stop every virtual board; their images are kept.")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("kill", parents=[common], help="SIGKILL one board (it stays down)",
                       description="Kill a board's MicroPython process with SIGKILL, as a crash would; it stays down.")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_kill)

    p = sub.add_parser("rm", parents=[common], help="delete boards and their images",
                       description="Stop and delete virtual boards with their images.")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--all", action="store_true", help="delete every board")
    p.set_defaults(func=cmd_rm)
