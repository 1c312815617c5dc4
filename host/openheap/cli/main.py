"""The ``openheap`` command line.

Command groups are modules of this package: every module ``openheap.cli.X``
that defines ``register(subparsers, common)`` adds its group (adding a group
is adding a module). ``register`` calls ``subparsers.add_parser(...,
parents=[common])`` and sets ``func`` on each leaf parser with
``set_defaults(func=handler)``; a handler takes the parsed arguments and
returns an exit status (None means 0).

User errors never show a traceback: an :class:`~openheap.errors.OpenheapError`
is printed as one sentence on stderr and the process exits with its
``exit_code``; Ctrl-C exits with status 130. Set ``OPENHEAP_DEBUG=1`` to get
tracebacks anyway.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from .. import __version__
from ..errors import OpenheapError

__all__ = ["main", "build_parser", "ArgumentParser"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``openheap sim up: error: ...``."""

    def error(self, message):
        hint = "see '%s --help'" % self.prog
        self.exit(2, "%s: error: %s (%s)\n" % (self.prog, message, hint))


def _group_modules():
    package = sys.modules[__package__]
    for mod in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if mod.name in ("main", "__main__") or mod.name.startswith("_"):
            continue
        module = importlib.import_module("%s.%s" % (__package__, mod.name))
        if callable(getattr(module, "register", None)):
            yield module


def build_parser() -> ArgumentParser:
    """The full parser, with every command group registered."""
    # --home is accepted before and after the subcommand; SUPPRESS keeps a
    # value given early from being reset by the subparser's default.
    common = ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="openheap state folder (default: $OPENHEAP_HOME, else $XDG_STATE_HOME/openheap or ~/.local/state/openheap)",
    )
    parser = ArgumentParser(
        prog="openheap",
        description="openheap: a grid of MicroPython boards that stores files and runs jobs, over CoAP.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version="openheap %s" % __version__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for module in _group_modules():
        module.register(subparsers, common)
    return parser


def main(argv=None) -> int:
    """Run the command line; return (and, as a script, exit with) its status."""
    debug = bool(os.environ.get("OPENHEAP_DEBUG"))
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "home", None):
            args.home = None
        func = getattr(args, "func", None)
        if func is None:
            # `openheap` or `openheap sim` alone: show what can be done.
            sub = getattr(args, "_parser", parser)
            sub.print_help(sys.stderr)
            return 2
        status = func(args)
        return 0 if status is None else int(status)
    except OpenheapError as e:
        if debug:
            raise
        print("openheap: error: %s" % e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `openheap sim ls | head`: the reader went away; that is fine.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as e:
        if debug:
            raise
        what = e.strerror or str(e)
        if e.filename:
            what = "%s: %s" % (what, e.filename)
        print("openheap: error: %s" % what, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
