"""The task protocol's numbers and payloads (issue 4; protocols/RESOURCES.md).

The numbers are the wire contract's, imported from ``ohproto.const``
(``TK_*`` request keys, ``TR_*`` result keys, ``TS_*`` states and
``TASK_RESULT_MAX`` come from ``ohproto.compute``, which ``ohproto.const``
re-exports on the host; ``PATH_CODE``/``PATH_TASKS`` and the ``ST_TASK*``
status keys are in ``ohproto.const`` itself): never copied.

Everything here is pure: building the POST /t map, decoding a result map,
turning values between CBOR and JSON.
"""

from __future__ import annotations

import base64
import math

import cbor2

from ohproto import const as P

__all__ = [
    "PATH_CODE", "PATH_TASKS", "TK_CODE", "TK_FUNC", "TK_ARGS", "TK_ID", "TK_TIME", "TK_HEAP",
    "TK_WAIT", "TK_RANGE", "TK_MORE", "BATCH_MAX", "TR_ID", "TR_STATE", "TR_VALUE", "TR_ERROR", "TR_MS",
    "TS_QUEUED", "TS_RUNNING", "TS_DONE", "TS_FAILED", "TS_LOST", "TS_CANCELLED", "STATE_NAMES",
    "TASK_RESULT_MAX", "TASK_PAYLOAD_MAX", "TASK_ID_MAX", "ST_TASKS_DONE", "ST_TASK_LOST", "ST_TASK_RUNNING", "FINAL_STATES",
    "task_map", "encode_task", "TaskEncoder", "cbor_uint", "Result", "decode_result", "decode_results", "dumps", "canonical", "to_json", "from_json",
]


PATH_CODE = P.PATH_CODE
PATH_TASKS = P.PATH_TASKS

TK_CODE = P.TK_CODE
TK_FUNC = P.TK_FUNC
TK_ARGS = P.TK_ARGS
TK_ID = P.TK_ID
TK_TIME = P.TK_TIME
TK_HEAP = P.TK_HEAP
TK_WAIT = P.TK_WAIT
TK_RANGE = P.TK_RANGE
TK_MORE = P.TK_MORE
BATCH_MAX = P.BATCH_MAX

TR_ID = P.TR_ID
TR_STATE = P.TR_STATE
TR_VALUE = P.TR_VALUE
TR_ERROR = P.TR_ERROR
TR_MS = P.TR_MS

TS_QUEUED = P.TS_QUEUED
TS_RUNNING = P.TS_RUNNING
TS_DONE = P.TS_DONE
TS_FAILED = P.TS_FAILED
TS_LOST = P.TS_LOST
TS_CANCELLED = P.TS_CANCELLED
STATE_NAMES = {TS_QUEUED: "queued", TS_RUNNING: "running", TS_DONE: "done", TS_FAILED: "failed",
               TS_LOST: "lost", TS_CANCELLED: "cancelled"}
FINAL_STATES = (TS_DONE, TS_FAILED, TS_LOST, TS_CANCELLED)

TASK_RESULT_MAX = P.TASK_RESULT_MAX

ST_TASKS_DONE = P.ST_TASKS_DONE
ST_TASK_LOST = P.ST_TASK_LOST
ST_TASK_RUNNING = P.ST_TASK_RUNNING

TASK_ID_MAX = (1 << 32) - 1
#: A task request is one datagram; a board takes datagrams below 1280 bytes
#: (its receive buffer), of which the CoAP header, token and options take
#: about 12 here.
TASK_PAYLOAD_MAX = 1280 - 32


def dumps(value) -> bytes:
    """CBOR of ``value`` exactly as the boards encode it (RFC 8949 length-first
    canonical, shortest floats): what goes on the wire and into cache keys."""
    return cbor2.dumps(value, canonical=True)


canonical = dumps


def task_map(code_hash: bytes, func: str, args, task_id: int, *, time_ms: int | None = None,
             heap: int | None = None, wait: bool = True, rng: list | None = None) -> dict:
    """The POST /t map. Keys that carry a default (no time limit given, no
    heap need, no range) are left out: every byte is radio time."""
    if len(code_hash) != 32:
        raise ValueError("a code hash is 32 bytes")
    if not 0 <= task_id <= TASK_ID_MAX:
        raise ValueError("a task id is below 2**32")
    m = {TK_CODE: bytes(code_hash), TK_FUNC: func, TK_ARGS: list(args), TK_ID: task_id}
    if time_ms is not None:
        m[TK_TIME] = int(time_ms)
    if heap is not None:
        m[TK_HEAP] = int(heap)
    if wait:
        m[TK_WAIT] = True
    if rng is not None:
        m[TK_RANGE] = list(rng)
    return m


def encode_task(*a, **kw) -> bytes:
    """CBOR bytes of :func:`task_map`."""
    return dumps(task_map(*a, **kw))


def cbor_uint(v: int) -> bytes:
    """The shortest CBOR encoding of the unsigned integer ``v`` (< 2**64)."""
    if v < 24:
        return bytes((v,))
    if v < 0x100:
        return bytes((0x18, v))
    if v < 0x10000:
        return b"\x19" + v.to_bytes(2, "big")
    if v < 0x100000000:
        return b"\x1a" + v.to_bytes(4, "big")
    return b"\x1b" + v.to_bytes(8, "big")


class TaskEncoder:
    """POST /t maps of one code hash and function with fixed ``time_ms``,
    ``heap`` and ``wait``: the constant keys are encoded once, so a task
    costs only its arguments and id. :meth:`encode` gives exactly the bytes
    of :func:`encode_task` (canonical CBOR: the keys, all one-byte uints,
    in numeric order)."""

    __slots__ = ("_head", "_mid", "_tail", "_head_rng")

    def __init__(self, code_hash: bytes, func: str, *, time_ms: int | None = None, heap: int | None = None,
                 wait: bool = True):
        m = task_map(code_hash, func, [], 0, time_ms=time_ms, heap=heap, wait=wait)
        if not TK_CODE < TK_FUNC < TK_ARGS < TK_ID < TK_TIME < TK_HEAP < TK_WAIT < TK_RANGE < 24:
            raise ValueError("the task map's keys are not in the order this encoder assumes")
        code_func = dumps({TK_CODE: m[TK_CODE], TK_FUNC: func})[1:]
        self._head = bytes((0xa0 + len(m),)) + code_func + bytes((TK_ARGS,))
        self._head_rng = bytes((0xa0 + len(m) + 1,)) + code_func + bytes((TK_ARGS,))
        self._mid = bytes((TK_ID,))
        self._tail = b"".join(dumps({k: v})[1:] for k, v in m.items() if k > TK_ID)

    def encode(self, args_cbor: bytes, task_id: int, rng: list | None = None) -> bytes:
        """The map for arguments ``args_cbor`` (``dumps(list(args))``), task
        ``task_id`` and, for a task over a stored range, ``rng``."""
        if not 0 <= task_id <= TASK_ID_MAX:
            raise ValueError("a task id is below 2**32")
        if rng is None:
            return b"".join((self._head, args_cbor, self._mid, cbor_uint(task_id), self._tail))
        return b"".join((self._head_rng, args_cbor, self._mid, cbor_uint(task_id), self._tail,
                         bytes((TK_RANGE,)), dumps(list(rng))))

    def encode_batch(self, args: list[bytes], first_id: int) -> bytes:
        """A batch (``TK_MORE``): tasks ``first_id``, ``first_id + 1``, ...
        with the arguments ``args`` (each ``dumps(list(args))``), 2 to
        ``BATCH_MAX + 1`` of them; only for an encoder made with ``wait``."""
        if not 2 <= len(args) <= BATCH_MAX + 1:
            raise ValueError("a batch has 2 to %d tasks" % (BATCH_MAX + 1))
        if not 0 <= first_id <= TASK_ID_MAX - len(args) + 1:
            raise ValueError("a task id is below 2**32")
        rest = args[1:]
        return b"".join((self._head_rng, args[0], self._mid, cbor_uint(first_id), self._tail,
                         bytes((TK_MORE,)), _array_head(len(rest)), *rest))


def _array_head(n: int) -> bytes:
    return bytes((0x80 | n,)) if n < 24 else b"\x98" + bytes((n,))


class Result:
    """One decoded result map (GET /t/<id>, or a POST /t answer)."""

    __slots__ = ("id", "state", "value", "error", "ms")

    def __init__(self, id, state, value=None, error=None, ms=None):
        self.id, self.state, self.value, self.error, self.ms = id, state, value, error, ms

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def __repr__(self) -> str:
        return "Result(id=%r, %s, value=%r, error=%r, ms=%r)" % (
            self.id, STATE_NAMES.get(self.state, self.state), self.value, self.error, self.ms)


def decode_result(payload: bytes) -> Result:
    """Parse a result map; ValueError (one sentence) when it is not one."""
    try:
        m = cbor2.loads(payload)
    except Exception as e:  # cbor2 raises several types
        raise ValueError("the board's result is not valid CBOR (%s)" % e) from None
    return _result_of(m)


def _result_of(m) -> Result:
    if not isinstance(m, dict) or TR_STATE not in m:
        raise ValueError("the board's result is not a result map")
    err = m.get(TR_ERROR)
    if err is not None:
        if isinstance(err, (list, tuple)) and len(err) >= 2:
            err = (str(err[0]), str(err[1]))
        else:
            err = ("Error", str(err))
    return Result(m.get(TR_ID), m.get(TR_STATE), m.get(TR_VALUE), err, m.get(TR_MS))


def decode_results(payload: bytes) -> list[Result]:
    """Parse the ``task-results`` array of a batch's answer; ValueError (one
    sentence) when it is not one."""
    try:
        arr = cbor2.loads(payload)
    except Exception as e:  # cbor2 raises several types
        raise ValueError("the board's results are not valid CBOR (%s)" % e) from None
    if not isinstance(arr, list) or not arr:
        raise ValueError("the board's answer to a batch is not a list of results")
    return [_result_of(m) for m in arr]


# -- JSON <-> task values


def from_json(value):
    """A JSON value as a task argument (JSON has nothing CBOR cannot carry)."""
    return value


def to_json(value):
    """A task's value for a JSON line: bytes become ``{"base64": "..."}``,
    non-text map keys become text, non-finite floats become null."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else _key_text(k): to_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _key_text(k) -> str:
    if isinstance(k, (bytes, bytearray)):
        return bytes(k).hex()
    return str(k)
