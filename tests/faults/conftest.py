"""Fixtures of the fault tests (``board`` and ``module_fleet`` come from
tests/conftest.py).

``raw``  a fresh :class:`rawcoap.Raw` UDP client talking to ``board``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rawcoap  # noqa: E402


@pytest.fixture
def raw(board):
    with rawcoap.Raw(board.host, board.port) as r:
        yield r
