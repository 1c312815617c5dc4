"""Where a home's coordinator keeps its files (cheap to import: no aiohttp, no aiocoap)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..sim import resolve_home

__all__ = ["Paths", "paths"]


@dataclass(frozen=True)
class Paths:
    """The files of ``<home>/coordinator/`` (described in :mod:`.service`)."""

    home: Path
    dir: Path
    db: Path
    token: Path
    pid: Path
    api: Path
    state: Path
    log: Path


def paths(home=None) -> Paths:
    """The coordinator files of ``home`` (resolved like ``--home``)."""
    home = resolve_home(home)
    d = home / "coordinator"
    return Paths(home, d, d / "grid.db", d / "token", d / "coordinator.pid", d / "api.json", d / "state.json",
                 d / "coordinator.log")
