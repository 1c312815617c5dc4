# Task functions that import (mp_test_task_safety.py).


def use(what):
    # An import statement of a module a task must not have.
    if what == "machine":
        import machine  # noqa
    elif what == "os":
        import os  # noqa
    elif what == "socket":
        import socket  # noqa
    elif what == "network":
        import network  # noqa
    elif what == "vfs":
        import vfs  # noqa
    elif what == "ohnode":
        from ohnode import server  # noqa
    elif what == "ohproto":
        import ohproto.const  # noqa
    elif what == "sys":
        import sys  # noqa
    elif what == "builtins":
        import builtins  # noqa
    elif what == "gc":
        import gc  # noqa
    else:
        return __import__(what).__name__
    return "imported"


def allowed():
    import json
    import struct
    import hashlib
    import binascii
    import collections
    import time  # noqa

    d = collections.OrderedDict()
    d["a"] = struct.calcsize("<I")
    return json.dumps(d) + binascii.hexlify(hashlib.sha256(b"").digest()[:2]).decode()


def mp():
    from micropython import const

    import micropython

    return hasattr(micropython, "heap_lock"), const(5)


def boom():
    return 1 // 0


def add(a, b):
    return a + b
