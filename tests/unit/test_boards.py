"""Board definitions: every file loads and validates; broken files are named."""

from __future__ import annotations

import json
import shutil

import pytest

from openheap import boards
from openheap.errors import ConfigError

EXPECTED = {"esp32", "esp32s3", "esp32c3", "esp8266", "picow", "virtual"}


@pytest.fixture
def board_dir(tmp_path, monkeypatch):
    """A copy of the real boards/ folder that a test may change."""
    folder = tmp_path / "boards"
    shutil.copytree(boards.boards_dir(), folder)
    monkeypatch.setenv("OPENHEAP_BOARDS", str(folder))
    return folder


def _edit(folder, board, changes):
    path = folder / (board + ".json")
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DELETE:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path


_DELETE = object()


def test_every_board_file_loads():
    loaded = {b.name: b for b in boards.list_boards()}
    assert EXPECTED <= set(loaded)
    for b in loaded.values():
        assert b.fs_size % b.fs_block_size == 0
        assert b.fs_block_size == 4096
        assert 0 <= b.block_szx <= 6
        assert b.mpy_arch in boards.MPY_ARCHES
        assert b.heap_budget > 0 and b.tasks >= 1
        assert b.radio.tx_ma > b.radio.rx_ma > 0


def test_board_facts_from_the_brief():
    assert boards.get_board("esp32").flash_offset == 0x1000
    for name in ("esp32s3", "esp32c3", "esp8266"):
        assert boards.get_board(name).flash_offset == 0
    assert boards.get_board("picow").flash_offset is None  # UF2 copy
    assert boards.get_board("picow").chip == "rp2040"
    arch = {b.name: b.mpy_arch for b in boards.list_boards()}
    assert arch["esp8266"] == "xtensa" and arch["esp32"] == "xtensawin" and arch["esp32s3"] == "xtensawin"
    assert arch["esp32c3"] == "rv32imc" and arch["picow"] == "armv6m" and arch["virtual"] == "x64"
    virtual = boards.get_board("virtual")
    assert virtual.heap_budget == 65536 and virtual.is_virtual and virtual.port == "linux"
    assert boards.get_board("esp8266").heap_budget < 38 * 1024
    assert "estimate" in boards.get_board("picow").notes


def test_unknown_board_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        boards.get_board("esp9000")
    assert "esp9000" in str(err.value) and "esp32" in str(err.value)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"fs_size": 1000}, "fs_size"),
        ({"heap_budget": "64k"}, "heap_budget"),
        ({"mpy_arch": "z80"}, "mpy_arch"),
        ({"block_szx": 7}, "block_szx"),
        ({"name": "other"}, "name"),
        ({"chip": _DELETE}, "chip"),
        ({"radio": {"tx_ma": 1}}, "radio."),
        ({"flash_offset": -1}, "flash_offset"),
        ({"colour": "red"}, "colour"),
        ({"tasks": True}, "tasks"),
    ],
)
def test_broken_board_file_names_file_and_field(board_dir, changes, field):
    path = _edit(board_dir, "esp32", changes)
    with pytest.raises(ConfigError) as err:
        boards.get_board("esp32")
    message = str(err.value)
    assert str(path) in message and field in message
    with pytest.raises(ConfigError):
        boards.list_boards()


def test_invalid_json_names_file(board_dir):
    path = board_dir / "esp32.json"
    path.write_text("{ not json")
    with pytest.raises(ConfigError) as err:
        boards.get_board("esp32")
    assert str(path) in str(err.value)


def test_adding_a_file_adds_a_board(board_dir):
    data = json.loads((board_dir / "esp32c3.json").read_text())
    data.update(name="esp32c6", description="ESP32-C6", chip="esp32c6")
    (board_dir / "esp32c6.json").write_text(json.dumps(data))
    assert "esp32c6" in [b.name for b in boards.list_boards()]
    assert boards.get_board("esp32c6").chip == "esp32c6"


def test_missing_board_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENHEAP_BOARDS", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError) as err:
        boards.list_boards()
    assert "OPENHEAP_BOARDS" in str(err.value)
