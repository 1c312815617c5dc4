# Task functions that fail (mp_test_task_limits.py, mp_test_task_safety.py):
# an exception, all the heap, results too large.


def add(a, b):
    return a + b


def boom():
    return 1 // 0


def hog():
    keep = []
    while True:
        keep.append(bytearray(1024))


def big(n):
    return bytes(n)


def many(n):
    return [70000 + i for i in range(n)]  # 5 bytes of CBOR each
