#!/usr/bin/env python3
"""Build the openheap firmware bundle (.mpy files) for a board or architecture.

    python tools/build_firmware.py --board esp32
    python tools/build_firmware.py --arch xtensawin --out /tmp/bundle
    python tools/build_firmware.py --all          # one bundle per board arch

Prints each file of the bundle with its size; files compiled by this run are
marked with '*'. A thin command line over openheap.firmware.build().
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import openheap  # noqa: F401
except ImportError:  # run from a checkout without the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))

from openheap import boards, firmware  # noqa: E402
from openheap.errors import OpenheapError  # noqa: E402


def _print_result(result: firmware.BuildResult) -> None:
    print("%s  (arch %s)" % (result.dir, result.arch or "bytecode"))
    width = max(len(f.name) for f in result.files)
    for f in result.files:
        print("  %s %-*s %7d" % ("*" if f.rebuilt else " ", width, f.name, f.size))
    for name in result.removed:
        print("  - %s (source gone, removed)" % name)
    print("  %d files, %d bytes, %d compiled" % (len(result.files), result.total_size, len(result.rebuilt)))


def main(argv=None) -> int:
    """Parse the command line, build, print the bundle; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="build_firmware.py", description="Compile the openheap firmware into an .mpy bundle."
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--board", metavar="NAME", help="build for this board's mpy arch (default: virtual)")
    which.add_argument("--arch", metavar="ARCH", help="mpy-cross -march value (%s)" % ", ".join(boards.MPY_ARCHES))
    which.add_argument("--bytecode", action="store_true", help="plain bytecode, no -march")
    which.add_argument("--all", action="store_true", help="build the bundle of every board's arch")
    parser.add_argument("--out", metavar="DIR", type=Path, help="output folder (default build/firmware/<arch>)")
    parser.add_argument("--force", action="store_true", help="recompile every file")
    args = parser.parse_args(argv)
    try:
        if args.all:
            if args.out:
                parser.error("--out cannot be combined with --all")
            arches = sorted({b.mpy_arch for b in boards.list_boards()})
        elif args.bytecode:
            arches = [None]
        elif args.arch:
            if args.arch not in boards.MPY_ARCHES:
                parser.error("unknown --arch %r; choose one of %s" % (args.arch, ", ".join(boards.MPY_ARCHES)))
            arches = [args.arch]
        else:
            arches = [boards.get_board(args.board or "virtual").mpy_arch]
        for arch in arches:
            _print_result(firmware.build(arch, args.out, args.force))
    except OpenheapError as e:
        print("build_firmware.py: error: %s" % e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
