"""littlefs2 filesystem images for virtual boards.

The image is made on the host with ``littlefs-python`` (outside the board's
small heap) in the geometry MicroPython's ``vfs.VfsLfs2`` mounts: blocks of
``block_size`` bytes (4096), ``fs_size // block_size`` of them. The node's
``ohnode.plat_unix`` mounts the file at ``/flash`` through a block device
object.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SimError

__all__ = ["create_image", "read_image", "MIN_FS_SIZE"]

#: Smallest filesystem accepted: littlefs needs a few blocks for metadata.
MIN_FS_SIZE = 64 * 1024


def _check_geometry(fs_size: int, block_size: int) -> int:
    if fs_size < MIN_FS_SIZE:
        raise SimError("filesystem size %d is too small; use at least %d bytes" % (fs_size, MIN_FS_SIZE))
    if fs_size % block_size:
        raise SimError("filesystem size %d is not a multiple of the block size %d" % (fs_size, block_size))
    return fs_size // block_size


def create_image(path: Path, fs_size: int, block_size: int = 4096) -> Path:
    """Write a freshly formatted littlefs2 image of ``fs_size`` bytes to ``path``.

    The file is written atomically (temporary file, then rename); an
    existing image at ``path`` is replaced.
    """
    from littlefs import LittleFS

    count = _check_geometry(fs_size, block_size)
    path = Path(path)
    fs = LittleFS(block_size=block_size, block_count=count)
    tmp = path.with_name(path.name + ".tmp%d" % os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(fs.context.buffer)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SimError("cannot write the filesystem image %s: %s" % (path, e.strerror or e)) from None
    return path


def read_image(path: Path, block_size: int = 4096) -> dict[str, bytes]:
    """Return ``{path: contents}`` of every file in an image (for tests and tools).

    Paths are absolute within the image (``/s/...``). Do not call this on the
    image of a running board: the board may be half-way through a write.
    """
    from littlefs import LittleFS

    path = Path(path)
    try:
        data = bytearray(path.read_bytes())
    except OSError as e:
        raise SimError("cannot read the filesystem image %s: %s" % (path, e.strerror or e)) from None
    count = _check_geometry(len(data), block_size)
    fs = LittleFS(block_size=block_size, block_count=count, mount=False)
    fs.context.buffer = data
    try:
        fs.mount()
    except Exception as e:  # littlefs.errors.LittleFSError
        raise SimError("%s is not a littlefs2 image: %s" % (path, e)) from None
    files = {}
    for root, _dirs, names in fs.walk("/"):
        for name in names:
            full = root.rstrip("/") + "/" + name
            with fs.open(full, "rb") as f:
                files[full] = f.read()
    return files
