"""``openheap run FILE.py:FUNC``: run a function over many inputs on the boards.

::

    openheap run job.py:score --inputs in.jsonl [--out out.jsonl] [--timeout S] [--retries N]
                 [--replicas R] [--spread] [--heap BYTES] [--no-cache] [--json-summary FILE]
    openheap run job.py:count --over CAP [--chunk BYTES] [--ship] ...

Each line of ``--inputs`` is one JSON value, passed to the function as its
one argument (a line ``[1, 2]`` passes ONE argument, the list ``[1, 2]``;
with ``--spread`` an array line is spread into positional arguments
instead). Blank lines are skipped. Results go to ``--out`` (default: standard
output), one JSON line per input, in input order::

    {"input": 0, "status": "ok", "value": 42}
    {"input": 1, "status": "failed", "error": ["ZeroDivisionError", "divide by zero"]}

(bytes come back as ``{"base64": "..."}``; ``"grid": true`` marks a task no
board could answer, as opposed to an exception of the function). With
``--over CAP`` the function is mapped over the stored file's byte ranges
(``--chunk`` bytes at most, default 1024) and gets each range's plaintext as
its argument, computed on the boards that hold the data; each line also has
``offset`` and ``length``. ``--ship`` runs the same ranges with the bytes
sent to the boards instead (to compare).

A progress bar goes to a terminal's stderr; the summary (tasks, failures,
retries and why, per-board counts, bytes on the wire, time) goes to stderr
at the end. Exit status 0 when every task gave a value, 1 when some failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from ohproto.compute import BATCH_MAX

from ..errors import UsageError

__all__ = ["register", "read_inputs", "parse_target"]


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds, not %r" % text) from None
    if not 0 < v <= 86400:
        raise argparse.ArgumentTypeError("must be from 0 to 86400 seconds, not %r" % text)
    return v


def _count(lo: int, hi: int):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("must be a whole number, not %r" % text) from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError("must be from %d to %d, not %d" % (lo, hi, v))
        return v
    return conv


def register(subparsers, common) -> None:
    """Add ``run`` to the ``openheap`` parser."""
    p = subparsers.add_parser(
        "run", parents=[common], help="run a Python function over many inputs on the boards",
        description="Run FUNC of FILE.py on the grid's boards once per input line (a JSON value, passed as the "
        "function's one argument; a JSON array line is ONE argument that is a list, unless --spread), or once "
        "per byte range of a stored file (--over CAP). Results are written in input order as JSON lines "
        "{\"input\", \"status\", \"value\" | \"error\"}.")
    p.add_argument("target", metavar="FILE.py:FUNC", help="the module and its function to run")
    p.add_argument("--inputs", metavar="FILE.jsonl", help="one JSON value per line (- for standard input)")
    p.add_argument("--out", metavar="FILE.jsonl", help="write the results here (default: standard output)")
    p.add_argument("--timeout", type=_positive, default=30.0, metavar="S",
                   help="time limit of one task on a board, seconds (default 30)")
    p.add_argument("--retries", type=_count(0, 20), default=2, metavar="N",
                   help="times a task is tried again on another board after a board failed it (default 2)")
    p.add_argument("--replicas", type=_count(1, 16), default=1, metavar="R",
                   help="accept a result only when R boards agree (default 1)")
    p.add_argument("--batch", type=_count(1, BATCH_MAX + 1), default=BATCH_MAX + 1, metavar="N",
                   help="quick tasks of the job sent together in one request at most (default %d; 1: one task "
                        "per request)" % (BATCH_MAX + 1))
    p.add_argument("--spread", action="store_true", help="an array line is the function's positional arguments")
    p.add_argument("--heap", type=_count(1, 1 << 30), metavar="BYTES", help="heap one task needs (bytes)")
    p.add_argument("--no-cache", action="store_true", help="do not use (or fill) the results cache")
    p.add_argument("--over", metavar="CAP", help="map the function over byte ranges of this stored file, on the "
                   "boards that hold them (they see those ranges in plaintext)")
    p.add_argument("--chunk", type=_count(16, 1 << 20), default=1024, metavar="BYTES",
                   help="with --over: largest range per task, a multiple of 16 (default 1024: a shipped range "
                   "must fit one datagram, and a board needs twice the range free)")
    p.add_argument("--ship", action="store_true", help="with --over: send each range's bytes to the boards instead")
    p.add_argument("--json-summary", metavar="FILE", help="also write the summary as JSON to FILE")
    p.set_defaults(func=cmd_run)


def parse_target(text: str) -> tuple[str, str]:
    """``FILE.py:FUNC`` -> (path, function)."""
    path, sep, func = text.rpartition(":")
    if not sep or not path or not func:
        raise UsageError("name the function as FILE.py:FUNC, not %r" % text)
    if not func.isidentifier():
        raise UsageError("%r is not a function name" % func)
    return path, func


def read_inputs(path: str, spread: bool = False) -> list[list]:
    """The argument lists from a JSON-lines file (UsageError naming the line)."""
    try:
        f = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except FileNotFoundError:
        raise UsageError("there is no inputs file %s" % path) from None
    except IsADirectoryError:
        raise UsageError("%s is a folder, not an inputs file" % path) from None
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e.strerror or e)) from None
    out = []
    try:
        with f if f is not sys.stdin else _nullctx(f):
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except ValueError as e:
                    raise UsageError("line %d of %s is not JSON (%s)" % (n, path, str(e).split(":")[0])) from None
                if spread:
                    out.append(value if isinstance(value, list) else [value])
                else:
                    out.append([value])
    except UnicodeDecodeError:
        raise UsageError("%s is not UTF-8 text" % path) from None
    return out


class _nullctx:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self.f

    def __exit__(self, *a):
        return False


class _Bar:
    """A one-line task counter on a terminal's stderr; silent otherwise."""

    def __init__(self):
        self.on = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.on or not total:
            return
        pct = 100 * done // total
        if pct == self.shown and done != total:
            return
        self.shown = pct
        width = 30
        fill = width * done // total
        sys.stderr.write("\rrun [%s%s] %3d%% (%d/%d tasks)" % ("#" * fill, "." * (width - fill), pct, done, total))
        sys.stderr.flush()

    def end(self) -> None:
        if self.on and self.shown >= 0:
            sys.stderr.write("\n")


def cmd_run(args) -> int:
    from ..compute import code as C
    from ..compute import grid as G
    from ..compute.cache import ResultCache, cache_path
    from ..compute.job import prepare_over, run_job

    path, func = parse_target(args.target)
    code = C.load_module(path)
    code.check_function(func)
    if args.over:
        from ..storage.caps import parse_cap

        if args.inputs:
            raise UsageError("give --inputs or --over, not both")
        cap = parse_cap(args.over)
        inputs = None
    else:
        if args.ship:
            raise UsageError("--ship goes with --over")
        if not args.inputs:
            raise UsageError("give the inputs with --inputs FILE.jsonl (or a stored file with --over CAP)")
        inputs = read_inputs(args.inputs, args.spread)
        if not inputs:
            raise UsageError("%s has no inputs" % args.inputs)
    if args.chunk % 16:
        raise UsageError("--chunk must be a multiple of 16, not %d" % args.chunk)
    clients = G.from_coordinator(args.home)
    if args.replicas > len(clients):
        raise UsageError("--replicas %d needs at least %d boards; %d %s registered" % (
            args.replicas, args.replicas, len(clients), "is" if len(clients) == 1 else "are"))
    cache = None if args.no_cache else ResultCache(cache_path(args.home))
    bar = _Bar()

    async def job():
        extra, ranges = {}, None
        if args.over:
            source, ranges, holds = await prepare_over(clients, cap, args.chunk)
            extra = dict(ranges=ranges, source=source, holds=holds, ship=args.ship)
        answers, summary = await run_job(clients, code, func, inputs, timeout=args.timeout, retries=args.retries,
                                         replicas=args.replicas, heap=args.heap, cache=cache, progress=bar,
                                         batch=args.batch, **extra)
        return answers, summary, ranges

    try:
        answers, summary, ranges = asyncio.run(job())
    finally:
        bar.end()
        if cache is not None:
            cache.close()
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for a in answers:
            extra = None
            if ranges is not None:
                r = ranges[a.index]
                extra = {"offset": r.offset, "length": r.length}
            out.write(json.dumps(a.to_json(extra)) + "\n")
    finally:
        if args.out:
            out.close()
        else:
            out.flush()
    print(summary.text(), file=sys.stderr)
    if args.json_summary:
        from ..compute.wire import to_json

        with open(args.json_summary, "w") as f:
            json.dump(to_json(summary.to_json()), f, indent=1)
    return 0 if all(a.status == "ok" for a in answers) else 1
