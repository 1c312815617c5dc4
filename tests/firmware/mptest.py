# Tiny test helper for the MicroPython-side scripts tests/firmware/mp_test_*.py.
# Runs on MicroPython and CPython (tests/unit imports untag/same from here).
#
#   import mptest
#   def test_x():
#       mptest.eq(f(1), 2, "f(1)")
#   mptest.run(globals())      # last line of the script
#
# run() calls every test_* function in name order, prints one line per
# failure, then "N passed, M failed", and exits with status 1 on failure.
# case(name, fn, *args) runs one generated test at once (e.g. one per line of
# a vector file, so the whole file never sits in the heap); its results count
# in run()'s total.  A test fails on the first failed check() or eq(), or on
# any exception.
import sys

_fails = []
_passed = [0]


class Failure(Exception):
    pass


def check(cond, msg=""):
    if not cond:
        raise Failure(msg)


def eq(a, b, msg=""):
    if not same(a, b):
        raise Failure("%s: %r != %r" % (msg, a, b))


# Deep equality that also tells 1 from 1.0 from True, 0.0 from -0.0, and
# takes NaN equal to NaN (what a codec round trip must preserve).
def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if a != a:
            return b != b
        return a == b and str(a)[0] == str(b)[0]
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        for k in a:
            if k not in b or not same(a[k], b[k]):
                return False
        return True
    return a == b


# protocols/vectors.json keeps CBOR values in JSON with a few tagged objects
# (see protocols/RESOURCES.md, "Golden vectors"):
#   {"$bytes": "<hex>"}           byte string
#   {"$map": [[k, v], ...]}       map with keys that are not all text
#   {"$float": "inf"|"-inf"|"nan"}
# Any other object is a map with text keys; numbers with a fraction or
# exponent are floats, others ints.
def untag(v):
    if isinstance(v, list):
        return [untag(x) for x in v]
    if isinstance(v, dict):
        if len(v) == 1:
            k = list(v)[0]
            x = v[k]
            if k == "$bytes":
                return bytes.fromhex(x)
            if k == "$map":
                d = {}
                for kv in x:
                    d[untag(kv[0])] = untag(kv[1])
                return d
            if k == "$float":
                return float(x)
        d = {}
        for k in v:
            d[k] = untag(v[k])
        return d
    return v


def unhex(s):
    return bytes.fromhex(s)


def case(name, fn, *args):
    try:
        fn(*args)
        _passed[0] += 1
        return True
    except Exception as e:
        _fails.append(name)
        print("FAIL %s: %s %s" % (name, type(e).__name__, e))
        if not isinstance(e, Failure) and hasattr(sys, "print_exception"):
            sys.print_exception(e)
        return False


def run(ns):
    for name in sorted(k for k in ns if k.startswith("test_") and callable(ns[k])):
        case(name, ns[name])
    print("%d passed, %d failed" % (_passed[0], len(_fails)))
    if _fails:
        sys.exit(1)
