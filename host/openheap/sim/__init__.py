"""Virtual boards: the real firmware on the MicroPython unix port.

A virtual board is ``micropython -X heapsize=<heap budget> -m main
<config.json>`` with ``MICROPYPATH`` pointing at the compiled firmware
bundle, a littlefs2 image file as its flash, and UDP on 127.0.0.1. Each runs
under a small supervisor process (:mod:`openheap.sim.supervisor`);
:class:`openheap.sim.fleet.Fleet` creates, starts, lists, stops and removes
them. Their files live in ``<home>/sim/<name>/``.

The openheap home (state folder) is, in order: the ``--home`` option, the
environment variable ``OPENHEAP_HOME``, ``$XDG_STATE_HOME/openheap``,
``~/.local/state/openheap``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_home", "Fleet", "BoardInfo"]


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """Return the openheap home folder as an absolute path (not created)."""
    if home:
        path = Path(home)
    elif os.environ.get("OPENHEAP_HOME"):
        path = Path(os.environ["OPENHEAP_HOME"])
    elif os.environ.get("XDG_STATE_HOME"):
        path = Path(os.environ["XDG_STATE_HOME"]) / "openheap"
    else:
        path = Path("~/.local/state/openheap")
    return Path(os.path.abspath(path.expanduser()))


def __getattr__(name):  # lazy: keep `import openheap.sim` cheap for the supervisor
    if name in ("Fleet", "BoardInfo"):
        from . import fleet

        return getattr(fleet, name)
    raise AttributeError(name)
