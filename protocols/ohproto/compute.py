# openheap compute grid: the numbers of the task request, the task result and
# the task states (protocols/RESOURCES.md "Tasks and code", rules
# task-request and task-result in openheap.cddl).
# Runs unchanged on MicroPython and CPython. On a board only the task
# machinery imports it (a node that runs no task pays no heap for these
# names); on the host ohproto.const re-exports them, so P.TK_CODE works there.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# task request map keys (schema "task-request"), POST /t
TK_CODE = const(0)  # bytes(32): SHA-256 of the .mpy file, as stored under /c
TK_FUNC = const(1)  # text: function name in that module
TK_ARGS = const(2)  # array: positional arguments
TK_ID = const(3)  # uint < 2**32: host-chosen task id
TK_TIME = const(4)  # uint: time limit, ms (the watchdog is armed for it plus a margin)
TK_HEAP = const(5)  # uint: heap the task may need, bytes
TK_WAIT = const(6)  # bool: true = run now, answer 2.05 with the result
TK_RANGE = const(7)  # [si, shnum, offset, length, key, ctr]: AES-128-CTR plaintext of a share range as first argument
TK_MORE = const(8)  # array of argument arrays: tasks TK_ID + 1, TK_ID + 2, ... of the same function (a batch)

# task result map keys (schema "task-result"), GET /t/<id> and POST /t answers
TR_ID = const(0)
TR_STATE = const(1)  # TS_*
TR_VALUE = const(2)  # the function's return value (TS_DONE)
TR_ERROR = const(3)  # [type, message] (TS_FAILED, TS_LOST)
TR_MS = const(4)  # run time, ms

# task states
TS_QUEUED = const(0)
TS_RUNNING = const(1)
TS_DONE = const(2)
TS_FAILED = const(3)
TS_LOST = const(4)
TS_CANCELLED = const(5)

BATCH_MAX = const(32)  # entries of TK_MORE at most
TASK_RESULT_MAX = const(512)  # bytes of CBOR result value at most; larger: TS_FAILED ResultTooLarge
