"""Board definitions: one JSON file per board in the ``boards/`` folder.

Adding a board is adding one file ``boards/<name>.json``; nothing else needs
to change. The folder is found relative to the repository
(``<repo>/boards``) unless the environment variable ``OPENHEAP_BOARDS``
names another folder.

Every file is validated on load; a broken file raises
:class:`~openheap.errors.ConfigError` naming the file and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["Board", "Radio", "boards_dir", "list_boards", "get_board", "load_board", "MPY_ARCHES"]

#: Architectures ``mpy-cross -march=`` accepts.
MPY_ARCHES = (
    "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
    "xtensa", "xtensawin", "rv32imc", "rv64imc",
)

_MISSING = object()


@dataclass(frozen=True)
class Radio:
    """Radio power profile of a board (currents in mA except deep sleep in uA)."""

    tx_ma: float
    rx_ma: float
    modem_sleep_ma: float
    light_sleep_ma: float
    deep_sleep_ua: float
    wake_ms: float


@dataclass(frozen=True)
class Board:
    """One board definition, as read from ``boards/<name>.json``."""

    name: str
    description: str
    chip: str  # esptool chip name, "rp2040" or "unix"
    port: str  # MicroPython sys.platform: esp32, esp8266, rp2, linux
    flash_offset: int | None  # offset of the MicroPython image; None: not flashed by offset (UF2, virtual)
    flash_size: int | None  # bytes; None for the virtual board
    fs_size: int  # bytes of the littlefs2 filesystem
    fs_block_size: int  # bytes
    heap_budget: int  # bytes of heap the firmware may use
    mpy_arch: str  # mpy-cross -march value
    radio: Radio
    block_szx: int  # default CoAP block SZX (6 = 1024 bytes)
    max_share: int  # largest share accepted, bytes
    max_shares: int  # number of shares kept at most
    tasks: int  # tasks accepted at once (they run one after another)
    code_cache: int  # bytes of compiled task modules kept on flash
    firmware_url: str | None
    notes: str = ""
    path: Path | None = None

    @property
    def fs_blocks(self) -> int:
        """Number of filesystem blocks."""
        return self.fs_size // self.fs_block_size

    @property
    def block_size(self) -> int:
        """Default CoAP block size in bytes (``2 ** (block_szx + 4)``)."""
        return 1 << (self.block_szx + 4)

    @property
    def is_virtual(self) -> bool:
        """True for a board that runs on the MicroPython unix port."""
        return self.chip == "unix"


def boards_dir() -> Path:
    """Return the folder the board files are read from."""
    env = os.environ.get("OPENHEAP_BOARDS")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "boards"


# -- validation helpers: each raises ConfigError naming file and field


def _fail(path: Path, field: str | None, problem: str) -> ConfigError:
    where = "board file %s" % path
    if field:
        where += ": field '%s'" % field
    return ConfigError("%s %s" % (where, problem))


def _get(data: dict, path: Path, field: str, default=_MISSING):
    if field not in data:
        if default is _MISSING:
            raise _fail(path, field, "is missing")
        return default
    return data[field]


def _int(data, path, field, *, minimum=None, maximum=None, nullable=False):
    value = _get(data, path, field)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "an integer or null" if nullable else "an integer"
        raise _fail(path, field, "must be %s, not %s" % (kind, json.dumps(value)))
    if minimum is not None and value < minimum:
        raise _fail(path, field, "must be at least %d, not %d" % (minimum, value))
    if maximum is not None and value > maximum:
        raise _fail(path, field, "must be at most %d, not %d" % (maximum, value))
    return value


def _number(data, path, field):
    value = _get(data, path, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise _fail(path, field, "must be a non-negative number, not %s" % json.dumps(value))
    return value


def _str(data, path, field, *, nullable=False, default=_MISSING):
    """A string field; empty strings are refused unless the field is optional."""
    value = _get(data, path, field, default)
    if value is None and nullable:
        return None
    optional = nullable or default is not _MISSING
    if not isinstance(value, str) or (not value and not optional):
        kind = "a string or null" if nullable else "a string" if optional else "a non-empty string"
        raise _fail(path, field, "must be %s, not %s" % (kind, json.dumps(value)))
    return value


_RADIO_FIELDS = ("tx_ma", "rx_ma", "modem_sleep_ma", "light_sleep_ma", "deep_sleep_ua", "wake_ms")
_FIELDS = {
    "name", "description", "chip", "port", "flash_offset", "flash_size", "fs_size",
    "fs_block_size", "heap_budget", "mpy_arch", "radio", "block_szx", "max_share",
    "max_shares", "tasks", "code_cache", "firmware_url", "notes",
}


def load_board(path: Path) -> Board:
    """Read and validate one board file; raise ConfigError if it is broken."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError("cannot read board file %s: %s" % (path, e.strerror or e)) from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError("board file %s is not valid JSON: %s" % (path, e)) from None
    if not isinstance(data, dict):
        raise _fail(path, None, "must hold a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise _fail(path, unknown[0], "is not a known board field (known: %s)" % ", ".join(sorted(_FIELDS)))

    name = _str(data, path, "name")
    if name != path.stem:
        raise _fail(path, "name", "must match the file name '%s', not %s" % (path.stem, json.dumps(name)))
    block = _int(data, path, "fs_block_size", minimum=128)
    if block & (block - 1):
        raise _fail(path, "fs_block_size", "must be a power of two, not %d" % block)
    fs_size = _int(data, path, "fs_size", minimum=2 * block)
    if fs_size % block:
        raise _fail(path, "fs_size", "must be a multiple of fs_block_size (%d), not %d" % (block, fs_size))
    flash_size = _int(data, path, "flash_size", minimum=1, nullable=True)
    if flash_size is not None and fs_size > flash_size:
        raise _fail(path, "fs_size", "(%d) cannot exceed flash_size (%d)" % (fs_size, flash_size))
    arch = _str(data, path, "mpy_arch")
    if arch not in MPY_ARCHES:
        raise _fail(path, "mpy_arch", "must be one of %s, not %s" % (", ".join(MPY_ARCHES), json.dumps(arch)))
    radio_data = _get(data, path, "radio")
    if not isinstance(radio_data, dict):
        raise _fail(path, "radio", "must be an object with %s" % ", ".join(_RADIO_FIELDS))
    extra = sorted(set(radio_data) - set(_RADIO_FIELDS))
    if extra:
        raise _fail(path, "radio." + extra[0], "is not a known radio field (known: %s)" % ", ".join(_RADIO_FIELDS))
    radio_values = {}
    for field in _RADIO_FIELDS:
        if field not in radio_data:
            raise _fail(path, "radio." + field, "is missing")
        value = radio_data[field]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise _fail(path, "radio." + field, "must be a non-negative number, not %s" % json.dumps(value))
        radio_values[field] = value

    return Board(
        name=name,
        description=_str(data, path, "description"),
        chip=_str(data, path, "chip"),
        port=_str(data, path, "port"),
        flash_offset=_int(data, path, "flash_offset", minimum=0, nullable=True),
        flash_size=flash_size,
        fs_size=fs_size,
        fs_block_size=block,
        heap_budget=_int(data, path, "heap_budget", minimum=8 * 1024),
        mpy_arch=arch,
        radio=Radio(**radio_values),
        block_szx=_int(data, path, "block_szx", minimum=0, maximum=6),
        max_share=_int(data, path, "max_share", minimum=1),
        max_shares=_int(data, path, "max_shares", minimum=1),
        tasks=_int(data, path, "tasks", minimum=1),
        code_cache=_int(data, path, "code_cache", minimum=1024),
        firmware_url=_str(data, path, "firmware_url", nullable=True),
        notes=_str(data, path, "notes", default=""),
        path=path,
    )


def _board_files() -> list[Path]:
    folder = boards_dir()
    if not folder.is_dir():
        raise ConfigError("board folder %s does not exist; set OPENHEAP_BOARDS to the folder of board files" % folder)
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def list_boards() -> list[Board]:
    """Load and validate every board file; return the boards sorted by name."""
    return [load_board(p) for p in _board_files()]


def board_names() -> list[str]:
    """Names of the defined boards (file names, without loading them)."""
    return [p.stem for p in _board_files()]


def get_board(name: str) -> Board:
    """Return the board called ``name``; ConfigError if there is none."""
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError("%r is not a board name" % (name,))
    path = boards_dir() / (name + ".json")
    if not path.is_file():
        known = ", ".join(board_names()) or "none"
        raise ConfigError("unknown board '%s'; known boards: %s" % (name, known))
    return load_board(path)
