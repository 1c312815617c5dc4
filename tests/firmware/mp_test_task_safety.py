# What a task may import: an allow-list importer in builtins.__import__ while
# it runs (machine, os, socket, network, vfs, sys, gc, builtins and the
# firmware's own modules refused with ImportError, also while its module
# loads; the original importer and sys.path back afterwards, also on errors),
# and its exceptions reported as TS_FAILED with type and message.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_task_safety
import sys
import builtins
import mpfake as F
import mptask as T
from mptest import check, eq
from ohproto import compute as C

nd, CODE = T.node(stem="tk_imports")
IMPORT = builtins.__import__
PATH = list(sys.path)


def failed(m, what):
    eq(m[C.TR_STATE], C.TS_FAILED, what + ": failed")
    check(C.TR_VALUE not in m and C.TR_MS in m, what + ": no value")
    return m[C.TR_ERROR]


def test_forbidden_imports():
    for i, (what, mod) in enumerate((("machine", "machine"), ("os", "os"), ("socket", "socket"),
                                     ("network", "network"), ("vfs", "vfs"), ("ohnode", "ohnode"),
                                     ("ohproto", "ohproto.const"), ("sys", "sys"), ("gc", "gc"),
                                     ("builtins", "builtins"))):
        m = T.run(nd, CODE, "use", (what,), tid=100 + i)
        eq(failed(m, what), ["ImportError", "module '%s' is not allowed" % mod], what)
        check(builtins.__import__ is IMPORT, "importer restored after " + what)
        eq(sys.path, PATH, "sys.path restored after " + what)
    eq(T.run(nd, CODE, "use", ("ujson",), tid=120)[C.TR_VALUE], "json", "u-prefixed names of allowed modules")
    m = T.run(nd, CODE, "allowed", tid=121)
    eq(m[C.TR_VALUE], '{"a": 4}e3b0', "math, json, struct, hashlib, binascii, collections, time")
    eq(T.run(nd, CODE, "mp", tid=122)[C.TR_VALUE], [False, 5], "`micropython` offers const() only")


def test_module_level_import_refused():
    T.retire(nd)  # tasks out, code cache in: the heap holds one at a time here
    evil = T.module(nd, "tk_evil")
    T.retire(nd)
    m = T.run(nd, evil, "f", tid=130)
    eq(failed(m, "load"), ["ImportError", "module 'os' is not allowed"], "refused while loading")
    check(builtins.__import__ is IMPORT and sys.path == PATH, "restored")
    check("os" not in [k for k in sys.modules if len(k) == 64], "no half-loaded module left")


def test_exceptions():
    eq(failed(T.run(nd, CODE, "boom", tid=140), "boom"), ["ZeroDivisionError", "divide by zero"], "raised")
    eq(failed(T.run(nd, CODE, "nope", tid=141), "nope")[0], "AttributeError", "no such function")
    eq(failed(T.run(nd, CODE, "add", (1,), tid=142), "args")[0], "TypeError", "wrong arguments")
    check(builtins.__import__ is IMPORT, "importer restored")


F.run(globals())
