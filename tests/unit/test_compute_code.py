"""Compiling a job's module for the boards (openheap.compute.code)."""

import hashlib

import pytest

from openheap.compute import code as C
from openheap.compute.errors import CompileError
from openheap.errors import UsageError

SRC = "import math\n\ndef square(x):\n    return x * x\n\n\ndef root(x):\n    return math.sqrt(x)\n"


def test_compiles_to_mpy_and_hashes_it():
    c = C.Code(SRC, "job.py")
    data, digest = c.build(None)
    assert data[:1] == b"M"  # .mpy magic
    assert digest == hashlib.sha256(data).digest() == c.code_id
    assert c.hash("x64") == hashlib.sha256(c.mpy("x64")).digest()
    assert c.functions == {"square", "root"}


def test_bytecode_is_the_same_for_every_arch():
    c = C.Code(SRC, "job.py")
    assert c.hash("x64") == c.hash("xtensawin") == c.hash(None)


def test_syntax_error_names_the_line():
    with pytest.raises(CompileError) as e:
        C.Code("def f(x):\n    return x +\n", "bad.py")
    msg = str(e.value)
    assert "bad.py" in msg and "line 2" in msg and "SyntaxError" in msg
    assert "\n" not in msg


def test_unknown_function():
    c = C.Code(SRC, "job.py")
    c.check_function("square")
    with pytest.raises(UsageError, match="has no function cube"):
        c.check_function("cube")
    with pytest.raises(UsageError):
        c.check_function("not-a-name")


def test_load_module_errors(tmp_path):
    with pytest.raises(UsageError, match="there is no file"):
        C.load_module(tmp_path / "missing.py")
    with pytest.raises(UsageError, match="folder"):
        C.load_module(tmp_path)
    p = tmp_path / "ok.py"
    p.write_text(SRC)
    assert C.load_module(p).name == "ok.py"


def test_function_source_drops_host_only_parts_and_keeps_lines():
    src = ("import hashlib\nimport openheap\nfrom concurrent.futures import as_completed\n\n"
           "def f(x):\n    return hashlib.sha256(x).digest()\n\n"
           "if __name__ == \"__main__\":\n    with openheap.Executor() as ex:\n        print(ex)\n")
    out = C.function_source(src)
    lines = out.splitlines()
    assert len(lines) == len(src.splitlines())
    assert lines[0] == "import hashlib"
    assert lines[1] == "" and lines[2] == ""
    assert lines[4] == "def f(x):"
    assert "Executor" not in out
    C.Code(out, "m.py")  # still compiles
