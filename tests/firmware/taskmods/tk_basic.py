# Task functions for tests/firmware/mp_test_task*.py: compiled into the test
# ROMFS as /rom/taskmods/tk_basic.mpy and PUT into a node's code cache.
from micropython import const
import math

_TWO = const(2)


def add(a, b):
    return a + b


def twice(x):
    return x * _TWO * math.floor(1.5)


def echo(data, *rest):
    return [data] + list(rest)


def pad(n):
    return "y" * n
