"""File commands: ``openheap put``, ``get``, ``ls``, ``rm``, ``check``, ``add``.

They talk to the coordinator's HTTP API (``openheap up`` or ``openheap
serve`` must be running). ``put`` prints the read capability as the last line
of standard output; capabilities are checked here first, so that a mistyped
one gets one clear sentence before anything is sent.
"""

from __future__ import annotations

import json
import os
import sys

from ..errors import UsageError

CHUNK = 1 << 16


def register(subparsers, common) -> None:
    p = subparsers.add_parser("put", parents=[common], help="store a file; prints its read capability last")
    p.add_argument("file", help="the file to store, or - for standard input")
    p.add_argument("-k", type=int, help="shares needed to read the file (default 3, lowered for small grids)")
    p.add_argument("-n", type=int, help="shares made (default 10, lowered for small grids)")
    p.add_argument("--happy", type=int, help="distinct nodes that must hold shares (default 7)")
    p.add_argument("--name", help="catalog name (default: the file's name)")
    p.add_argument("--random-key", action="store_true",
                   help="encrypt with a random key: a separate copy, unlinkable to other copies")
    p.set_defaults(func=put)

    p = subparsers.add_parser("get", parents=[common], help="write a stored file to standard output or a file")
    p.add_argument("cap", help="the file's read capability")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    p.set_defaults(func=get)

    p = subparsers.add_parser("ls", parents=[common], help="list the catalog, or what a capability points to")
    p.add_argument("cap", nargs="?", help="a capability to describe: size, k/n, storage index, and the shares "
                   "the grid holds now (works without a catalog entry)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=ls)

    p = subparsers.add_parser("rm", parents=[common], help="delete a file's shares now and drop it from the catalog",
                              description="Delete a file. Given a capability: its shares on every node now, and "
                              "every catalog entry of it. Given a catalog name: that entry, and the file's shares "
                              "unless another catalog entry names the same file.")
    p.add_argument("cap", metavar="CAP|NAME", help="the file's read or verify capability, or its catalog name")
    p.set_defaults(func=rm)

    p = subparsers.add_parser("add", parents=[common], help="put a capability into the catalog",
                              description="Put a capability into the catalog (for example after losing the "
                              "catalog), so that the coordinator renews its leases and repairs it again.")
    p.add_argument("cap", help="the file's read or verify capability")
    p.add_argument("--name", help="catalog name (default: none)")
    p.set_defaults(func=add)

    p = subparsers.add_parser("check", parents=[common], help="count and locate a file's shares")
    p.add_argument("cap", nargs="?", help="the file's read or verify capability")
    p.add_argument("--all", action="store_true", help="check every file in the catalog")
    p.add_argument("--verify", action="store_true", help="also fetch and hash every block")
    p.add_argument("--repair", action="store_true", help="rebuild missing or corrupt shares")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=check)


def _client(args):
    from ..coordinator.client import CoordinatorClient

    return CoordinatorClient(args.home)


def _cap(text, accept=None):
    from ..storage.caps import LiteralCap, ReadCap, VerifyCap, parse_cap

    return parse_cap(text, accept=accept or (ReadCap, VerifyCap, LiteralCap))


class _Progress:
    """A one-line progress report on a terminal's stderr; silent otherwise."""

    def __init__(self, what: str, total: int | None):
        self.what, self.total, self.done = what, total, 0
        self.on = sys.stderr.isatty()

    def add(self, n: int) -> None:
        self.done += n
        if self.on:
            if self.total:
                pct = 100.0 * self.done / self.total
                sys.stderr.write("\r%s %5.1f%% (%d/%d bytes)" % (self.what, pct, self.done, self.total))
            else:
                sys.stderr.write("\r%s %d bytes" % (self.what, self.done))
            sys.stderr.flush()

    def note(self, text: str) -> None:
        """Add ``text`` to the line (e.g. what happens after the last byte)."""
        if self.on:
            sys.stderr.write(" " + text)
            sys.stderr.flush()

    def end(self) -> None:
        if self.on:
            sys.stderr.write("\n")


def put(args) -> int:
    if args.file == "-":
        src, size, name = sys.stdin.buffer, None, args.name
    else:
        try:
            src = open(args.file, "rb")
        except FileNotFoundError:
            raise UsageError("there is no file %s" % args.file) from None
        except IsADirectoryError:
            raise UsageError("%s is a folder; put stores one file at a time" % args.file) from None
        size = os.fstat(src.fileno()).st_size
        name = args.name or os.path.basename(args.file)
    progress = _Progress("put", size)

    def chunks():
        while True:
            data = src.read(CHUNK)
            if not data:
                # the coordinator has the file: it encodes it and sends the
                # shares now, which the bar does not see
                progress.note("sent; the coordinator is storing the shares...")
                return
            progress.add(len(data))
            yield data

    try:
        result = _client(args).put(chunks(), name=name, size=size, k=args.k, n=args.n, happy=args.happy,
                                   random_key=args.random_key)
    finally:
        progress.end()
        if src is not sys.stdin.buffer:
            src.close()
    if result.get("note"):
        print("note: %s" % result["note"], file=sys.stderr)
    sent = result.get("bytes_sent", 0)
    print("stored %d bytes as %s-of-%s (happy %s): %d shares sent (%d bytes), %d already on the grid"
          % (result.get("size", 0), result.get("k"), result.get("n"), result.get("happy"),
             len(result.get("placed", {})), sent, len(result.get("existing", {}))), file=sys.stderr)
    print(result["cap"])
    return 0


def get(args) -> int:
    from ..storage.caps import LiteralCap, ReadCap

    cap = _cap(args.cap, accept=(ReadCap, LiteralCap))
    rsp = _client(args).get(cap.to_string())
    total = int(rsp.headers.get("Content-Length") or 0)
    progress = _Progress("get", total)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    got = 0
    try:
        with rsp:
            while True:
                data = rsp.read(CHUNK)
                if not data:
                    break
                out.write(data)
                got += len(data)
                progress.add(len(data))
    finally:
        progress.end()
        if args.output:
            out.close()
        else:
            out.flush()
    if got != total:
        if args.output:
            os.unlink(args.output)
        raise UsageError("the download broke off after %d of %d bytes; see the coordinator's log" % (got, total))
    _report_read(args, cap)
    return 0


def _report_read(args, cap) -> None:
    """Say on stderr which shares the coordinator found corrupt while
    reading ``cap`` (it read others instead), and how to rebuild them."""
    from ..errors import OpenheapError
    from ..storage.caps import LiteralCap

    if isinstance(cap, LiteralCap):
        return
    try:
        seen = _client(args).last_read(cap.to_string())
    except OpenheapError:  # (an older coordinator: nothing to report)
        return
    for c in seen.get("corrupt", []):
        print("warning: share %s on node %s is corrupt (%s); the file was read from other shares"
              % (c.get("share"), c.get("node"), c.get("why")), file=sys.stderr)
    if seen.get("corrupt"):
        print("warning: 'openheap check --repair %s' rebuilds the corrupt share%s"
              % (cap.to_string(), "s" if len(seen["corrupt"]) > 1 else ""), file=sys.stderr)


def _found_text(found: dict | None, unknown: str) -> str:
    if found is None:
        return unknown
    if found.get("literal"):
        return "kept inside the capability"
    state = "healthy" if found["healthy"] else "recoverable" if found["recoverable"] else "NOT RECOVERABLE"
    return "%d of %d shares on %d nodes (%d needed): %s" % (found["shares"], found["n"], found["nodes"],
                                                              found["needed"], state)


def ls(args) -> int:
    if args.cap:
        from ..coordinator.errors import CoordinatorNotRunning
        from ..coordinator.files import describe_cap

        cap = _cap(args.cap)
        info = describe_cap(cap)
        note = None
        try:
            remote = _client(args).describe(cap.to_string())
        except CoordinatorNotRunning as e:
            note = str(e)
            info["found"] = None
        else:
            info["catalog"] = [c.get("name") or "(no name)" for c in remote.get("catalog", [])]
            info["found"] = remote.get("found")
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            for key, value in info.items():
                if key == "catalog":
                    value = ", ".join(value) if value else "not in the catalog"
                elif key == "found":
                    value = _found_text(value, "unknown (the coordinator is not running)")
                print("%-14s %s" % (key, value))
            if info.get("found") and info["found"].get("where"):
                where = info["found"]["where"]
                print("%-14s %s" % ("where", ", ".join("%s on %s" % (s, "+".join(nds)) for s, nds in
                                                         sorted(where.items(), key=lambda kv: int(kv[0])))))
        if note:
            print("openheap: note: %s, so whether the grid holds this file is unknown" % note, file=sys.stderr)
        return 0
    files = _client(args).files()
    if args.json:
        print(json.dumps(files, indent=2))
        return 0
    for f in files:
        print("%-24s %10d  %d-of-%d  %s  %s" % ((f.get("name") or "-")[:24], f["size"], f["k"], f["n"],
                                              f["created"], f["cap"]))
    return 0


def _is_cap(text: str) -> bool:
    return text.strip().lower().startswith("oh:")


def rm(args) -> int:
    if _is_cap(args.cap):
        result = _client(args).delete(_cap(args.cap).to_string())
    else:
        if not args.cap.strip():
            raise UsageError("give a capability or a catalog name to remove")
        result = _client(args).delete_name(args.cap)
        if result.get("kept"):
            print("removed %s from the catalog; the file stays, since another catalog entry names it" % args.cap)
            return 0
    print("deleted the shares on %d node%s" % (result.get("nodes", 0), "" if result.get("nodes") == 1 else "s"))
    return 0


def add(args) -> int:
    result = _client(args).add(_cap(args.cap).to_string(), args.name)
    print("added to the catalog%s: %s" % (" as %s" % args.name if args.name else "",
                                          _found_text(result.get("found"), "kept inside the capability")))
    return 0 if result.get("found") is None or result["found"]["recoverable"] else 1


def check(args) -> int:
    if bool(args.cap) == bool(args.all):
        raise UsageError("give one capability, or --all for the whole catalog")
    caps = None if args.all else [_cap(args.cap).to_string()]
    result = _client(args).check(caps, verify=args.verify, repair=args.repair)
    if args.json:
        print(json.dumps(result, indent=2))
        return 1 if any(not (f.get("after") or f).get("recoverable", True) for f in result.get("files", [])) else 0
    bad = 0
    for f in result.get("files", []):
        if f.get("literal"):
            print("healthy (kept inside the capability): %s" % f["cap"][:40])
            continue
        rep = f.get("repair")
        now = f.get("after") or f
        for c in f.get("corrupt", []):
            print("share %d on %s is corrupt: %s" % (c["shnum"], c["node"], c["reason"]))
        if rep is not None:
            for s, why in sorted(rep.get("failed", {}).items(), key=lambda kv: int(kv[0])):
                print("share %s could not be rebuilt: %s" % (s, why))
            if rep.get("error"):
                print("repair failed: %s" % rep["error"])
        if rep is not None and rep.get("rebuilt"):
            where = ", ".join("share %s to %s" % (s, nd) for s, nd in
                              sorted(rep["rebuilt"].items(), key=lambda kv: int(kv[0])))
            n = len(rep["rebuilt"])
            state = "repaired %d share%s (%s), now %s" % (
                n, "" if n == 1 else "s", where, "healthy" if now["healthy"] else "still unhealthy")
        elif now["healthy"]:
            state = "healthy"
        elif now["recoverable"]:
            state = "recoverable"
        else:
            state = "NOT RECOVERABLE"
        bad += not now["recoverable"]
        print("%s: %d of %d shares on %d nodes (%d needed)  %s"
              % (state, now["shares"], now["n"], now["nodes"], now["k"], f["cap"][:40]))
        if f.get("unreachable"):
            print("  unreachable: %s" % ", ".join(f["unreachable"]))
    return 1 if bad else 0
