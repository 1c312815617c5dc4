"""``openheap serve``: run the coordinator in the foreground.

::

    openheap serve [--coap-host ADDR] [--coap-port P] [--api-port P] [--grace S] [-v]
                   [--lease S] [--renew-every S] [--repair-grace S] [--repair-every S] [--repair-files M] [--repair-rate B]

Boards register with it over CoAP; the CLI talks to it through its HTTP API
on 127.0.0.1. It logs to stderr and stops cleanly on SIGTERM or Ctrl-C.
``openheap up`` starts the same coordinator in the background.
"""

from __future__ import annotations

__all__ = ["register"]


def cmd_serve(args) -> int:
    from ..coordinator.daemon import run_foreground

    return run_foreground(args)


def register(subparsers, common) -> None:
    """Add ``serve`` to the ``openheap`` parser."""
    from ..coordinator.daemon import add_serve_options

    p = subparsers.add_parser(
        "serve",
        parents=[common],
        help="run the coordinator in the foreground",
        description="Run the coordinator in the foreground: boards register with it over CoAP (UDP), the CLI "
        "talks to it through its HTTP API on 127.0.0.1 (address in <home>/coordinator/api.json, token in "
        "<home>/coordinator/token). Logs go to stderr; SIGTERM or Ctrl-C stops it.",
    )
    add_serve_options(p)
    p.set_defaults(func=cmd_serve)
