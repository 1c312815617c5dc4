"""The firmware bundle: compiled .mpy tree, incremental rebuilds, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from openheap import boards, firmware
from openheap.errors import BuildError
from openheap.sim.fleet import micropython_binary

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def src(tmp_path, monkeypatch):
    """A small firmware tree of our own, built into a temporary cache."""
    root = tmp_path / "fw"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "main.py").write_text("import pkg.a\nprint('main', pkg.a.VALUE)\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "a.py").write_text("from pkg.sub import b\nVALUE = b.VALUE + 1\n")
    (root / "pkg" / "sub" / "b.py").write_text("VALUE = 41\n")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "junk.py").write_text("this is not python")
    (root / "notes.py").write_text("top-level files other than main.py are not firmware")
    monkeypatch.setenv("OPENHEAP_FIRMWARE_DIR", str(root))
    monkeypatch.setenv("OPENHEAP_BUILD_DIR", str(tmp_path / "build"))
    return root


def _bump(path: Path):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_bundle_mirrors_the_tree(src):
    result = firmware.build("x64")
    names = {f.name for f in result.files}
    assert {"main.mpy", "pkg/__init__.mpy", "pkg/a.mpy", "pkg/sub/b.mpy", "ohproto/const.mpy"} <= names
    assert not any("pycache" in n or n == "notes.mpy" for n in names)
    for f in result.files:
        assert (result.dir / f.name).read_bytes()[:1] == b"M"  # .mpy magic
        assert f.size == (result.dir / f.name).stat().st_size
    assert result.total_size == sum(f.size for f in result.files)
    assert result.dir.parent.parent == Path(os.environ["OPENHEAP_BUILD_DIR"])


def test_bundle_runs_on_the_unix_port(src):
    bundle = firmware.build_bundle("x64")
    proc = subprocess.run(
        [micropython_binary(), "-X", "heapsize=65536", "-m", "main"],
        env=dict(os.environ, MICROPYPATH=".frozen:%s" % bundle),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(src.parent),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "main 42"


def test_incremental_rebuild(src):
    first = firmware.build("x64")
    assert len(first.rebuilt) == len(first.files)
    second = firmware.build("x64")
    assert second.rebuilt == [] and second.removed == []
    _bump(src / "pkg" / "a.py")
    third = firmware.build("x64")
    assert [f.name for f in third.rebuilt] == ["pkg/a.mpy"]
    assert len(firmware.build("x64", force=True).rebuilt) == len(first.files)


def test_stale_mpy_is_removed(src):
    bundle = firmware.build_bundle("x64")
    assert (bundle / "pkg" / "sub" / "b.mpy").exists()
    (src / "pkg" / "a.py").write_text("VALUE = 1\n")
    (src / "pkg" / "sub" / "b.py").unlink()
    result = firmware.build("x64")
    assert result.removed == ["pkg/sub/b.mpy"]
    assert not (bundle / "pkg" / "sub").exists()


def test_arches_get_separate_bundles(src):
    a = firmware.build_bundle("xtensawin")
    b = firmware.build_bundle("armv6m")
    c = firmware.build_bundle(None)
    assert len({a, b, c}) == 3 and c.name.startswith("bytecode")


def test_explicit_out_folder(src, tmp_path):
    out = tmp_path / "out"
    assert firmware.build_bundle("x64", out=out) == out
    assert (out / "main.mpy").is_file()


def test_syntax_error_names_file_and_line(src):
    (src / "pkg" / "a.py").write_text("x = 1\ndef broken(:\n    pass\n")
    with pytest.raises(BuildError) as err:
        firmware.build("x64")
    assert "%s:2" % (src / "pkg" / "a.py") in str(err.value)
    assert "SyntaxError" in str(err.value)


def test_missing_main_py(src):
    (src / "main.py").unlink()
    with pytest.raises(BuildError) as err:
        firmware.build("x64")
    assert "main.py" in str(err.value) and "OPENHEAP_FIRMWARE_DIR" in str(err.value)


@pytest.mark.skipif(not (REPO / "firmware" / "main.py").is_file(), reason="firmware/main.py not written yet")
def test_real_firmware_builds_for_every_board(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENHEAP_FIRMWARE_DIR", raising=False)
    monkeypatch.setenv("OPENHEAP_BUILD_DIR", str(tmp_path / "build"))
    for arch in sorted({b.mpy_arch for b in boards.list_boards()}):
        result = firmware.build(arch)
        names = {f.name for f in result.files}
        assert {"main.mpy", "ohproto/const.mpy", "ohproto/cbor.mpy"} <= names
        assert any(n.startswith("ohnode/") for n in names)


def test_tool_prints_files_and_sizes(src, tmp_path):
    out = tmp_path / "tool-out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_firmware.py"), "--board", "esp32", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "xtensawin" in proc.stdout and "pkg/sub/b.mpy" in proc.stdout
    size = (out / "main.mpy").stat().st_size
    assert any(line.split()[-2:] == ["main.mpy", str(size)] for line in proc.stdout.splitlines())


def test_tool_reports_errors_in_one_line(src, tmp_path):
    (src / "main.py").write_text("def (\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_firmware.py"), "--arch", "x64", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == BuildError.exit_code
    assert proc.stderr.count("\n") == 1 and "main.py:1" in proc.stderr and "Traceback" not in proc.stderr
