"""Fold the shared protocol constants into firmware source at build time.

The firmware and the host share one protocol definition,
``protocols/ohproto/const.py`` and ``compute.py``. On a board, importing
them costs heap for as long as the node runs: every public name is an
entry of the module's globals and an interned string (measured on the
64-bit unix port: ``ohproto.const`` 5.3 KB, ``ohproto.compute`` 2.8 KB of a
64 KiB heap), and every ``P.NAME`` is a dictionary lookup at run time.
MicroPython's ``const()`` folds only names of the module being compiled, so
the bundle build does what it cannot: each ``P.NAME`` whose value is a
number, a string or bytes becomes that literal in the module's source
before ``mpy-cross`` compiles it, and an ``from ohproto import const as P``
left without uses becomes ``pass``. Lines and columns of everything else
stay where they were, so tracebacks point at the real source lines.

Only ``ohnode`` modules are folded; the ``ohproto`` package itself is
compiled as it is (the firmware tests and a board's REPL can still import
it).
"""

from __future__ import annotations

import io
import re
import tokenize
from types import ModuleType

__all__ = ["fold", "foldable"]

# `from ohproto import const as P`, at any indentation
_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from ohproto import (?P<mod>\w+) as (?P<alias>\w+)[ \t]*(#.*)?$")
# `from micropython import const` at module level
_CONST_IMPORT = re.compile(r"^from micropython import const[ \t]*(#.*)?$")


def foldable(module: ModuleType) -> dict[str, int | str | bytes]:
    """The names of ``module`` that can be folded: upper-case public names
    bound to an int (not a bool), a str or bytes."""
    out = {}
    for name, value in vars(module).items():
        if name.isupper() and not name.startswith("_"):
            if isinstance(value, (str, bytes)) or (isinstance(value, int) and not isinstance(value, bool)):
                out[name] = value
    return out


def _literal(value) -> str:
    if isinstance(value, int) and value < 0:
        return "(%d)" % value
    return repr(value)


def fold(text: str, modules: dict[str, dict[str, int | str | bytes]]) -> str:
    """Return ``text`` with ``ALIAS.NAME`` replaced by literals.

    ``modules`` maps an ``ohproto`` module name (``"const"``) to its
    :func:`foldable` names. Aliases come from ``from ohproto import MOD as
    ALIAS`` lines of ``text``; an import whose alias is no longer used after
    folding becomes ``pass``. Raises ``tokenize.TokenError`` or
    ``SyntaxError`` on source that does not tokenize.
    """
    text = _drop_const_import(text)
    lines = text.splitlines(keepends=True)
    aliases: dict[str, str] = {}
    import_rows: dict[int, tuple[str, str]] = {}  # row (1-based) -> (indent, alias)
    for i, line in enumerate(lines, 1):
        m = _IMPORT.match(line.rstrip("\r\n"))
        if m and m.group("mod") in modules:
            aliases[m.group("alias")] = m.group("mod")
            import_rows[i] = (m.group("indent"), m.group("alias"))
    if not aliases:
        return text
    toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    edits = []  # (row, start col, end col, replacement)
    bare: set[str] = set()  # aliases still used other than as ALIAS.NAME
    for j, tok in enumerate(toks):
        if tok.type != tokenize.NAME or tok.string not in aliases or tok.start[0] in import_rows:
            continue
        if j > 0 and toks[j - 1].type == tokenize.OP and toks[j - 1].string == ".":
            continue  # x.P: another object's attribute
        names = modules[aliases[tok.string]]
        if (j + 2 < len(toks) and toks[j + 1].string == "." and toks[j + 2].type == tokenize.NAME
                and toks[j + 2].string in names and toks[j + 2].start[0] == tok.start[0]):
            edits.append((tok.start[0], tok.start[1], toks[j + 2].end[1], _literal(names[toks[j + 2].string])))
        else:
            bare.add(tok.string)
    for row, (indent, alias) in import_rows.items():
        if alias not in bare:
            nl = lines[row - 1][len(lines[row - 1].rstrip("\r\n")):]
            lines[row - 1] = indent + "pass  # (ohproto constants folded in by openheap.constfold)" + nl
    for row, c0, c1, rep in sorted(edits, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:c0] + rep + line[c1:]
    return "".join(lines)


def _drop_const_import(text: str) -> str:
    """``from micropython import const`` becomes ``pass`` when ``const`` is
    only ever called: mpy-cross folds ``const()`` without the import, which
    would keep a ``const`` entry in the module's globals on the board's heap
    for good (the import is there for CPython and linters)."""
    lines = text.splitlines(keepends=True)
    rows = [i for i, ln in enumerate(lines, 1) if _CONST_IMPORT.match(ln.rstrip("\r\n"))]
    if not rows:
        return text
    toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    for j, tok in enumerate(toks):
        if tok.type == tokenize.NAME and tok.string == "const" and tok.start[0] not in rows:
            if j and toks[j - 1].string in ("import", ".", ","):
                continue  # another module's `const` (ohproto's), an attribute
            if not (j + 1 < len(toks) and toks[j + 1].string == "("):
                return text  # used as a value: keep the import
    for row in rows:
        nl = lines[row - 1][len(lines[row - 1].rstrip("\r\n")):]
        lines[row - 1] = "pass  # (const() is folded by mpy-cross without the import)" + nl
    return "".join(lines)
