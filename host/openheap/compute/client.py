"""One board's task client: code upload, task submission, results, cancel.

It speaks the task resources of protocols/RESOURCES.md over the lean CoAP
channel of :mod:`openheap.bulk` (aiocoap costs about 0.3 ms of host CPU per
message; a task is one CON request and its piggybacked answer):

* ``POST /t`` with the task map; with ``TK_WAIT`` the board runs the task and
  the result comes back in the ACK. A 4.04 means the board does not hold the
  module: it is uploaded with ``PUT /c/<hex>`` (Block1 runs, as shares are)
  and the task sent again, so code travels once per board.
* Long tasks are submitted without ``TK_WAIT`` (2.01) and followed with
  ``GET /t/<id>`` and Observe, asked again every ``POLL`` seconds in case a
  notification is lost.
* 5.03 becomes :class:`BoardBusy` (with Max-Age), 4.13 :class:`HeapTooSmall`,
  silence :class:`openheap.errors.NodeUnreachable`.

The retransmission timer of a task request never fires sooner than the time
the task is expected to take (``expect`` seconds), so a board busy computing
is not flooded with copies of the request.

``POST /t`` is the hot path (thousands a second over a grid): its header
and options are encoded once, and the task requests of a channel share one
retransmission timer, re-armed only when it fires, instead of a timer
created and cancelled per request.
"""

from __future__ import annotations

import asyncio
import functools
import math

import cbor2

from ohproto import const as P
from openheap.bulk import CON, Channel, _Exchange, encode, uint_opt
from openheap.compute import wire as W
from openheap.compute.errors import BoardBusy, CodeNotCached, HeapTooSmall
from openheap.errors import CoapError, NodeUnreachable, from_code

__all__ = ["BoardClient", "TaskChannel", "POLL", "CONTROL_TIMEOUT", "is_refusal"]

POLL = 2.0  # seconds between GET /t/<id> while following a long task
CONTROL_TIMEOUT = 5.0  # seconds for GET /i, PUT /c, DELETE /t
CF_OCTET = P.CF_OCTET_STREAM
_T_PATH = (P.OPT_URI_PATH, W.PATH_TASKS.encode())
_CF_CBOR = (P.OPT_CONTENT_FORMAT, uint_opt(P.CF_CBOR))


# A POST /t request after its Message ID and 2-byte token: the options and
# the payload marker (what bulk.encode writes for them).
_POST_T_HEAD = bytes((0x40 | (CON << 4) | 2, P.POST))
_POST_T_OPTS = encode(CON, P.POST, 0, b"\0\0", (_T_PATH, _CF_CBOR), b"\0")[6:-1]


class _TaskExchange(_Exchange):
    """A POST /t waiting for its answer; ``due``: its next retransmission."""

    __slots__ = ("due",)


class TaskChannel(Channel):
    """A bulk channel whose retransmission timer has a floor (``min_rto``),
    set per request to the task's expected run time, with a lean path for
    task requests (:meth:`post_task`)."""

    min_rto = 0.0

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._watch: dict[int, _TaskExchange] = {}  # task requests by Message ID, for the shared timer
        self._tick: asyncio.TimerHandle | None = None
        self._tick_at = math.inf

    def rto(self) -> float:
        return max(Channel.rto(self), self.min_rto)

    def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick, self._tick_at = None, math.inf
        super().close()

    async def post_task(self, payload: bytes, timeout: float, expect: float = 0.0):
        """``POST /t`` (Content-Format CBOR) with ``payload``: what
        ``con(P.POST, (_T_PATH, _CF_CBOR), payload)`` does with ``timeout``
        as the budget and ``expect`` as the floor of the first timer, with
        the header pre-encoded and the channel's shared retransmission timer."""
        if self._error is not None:
            raise self._error
        if self._loop is None:
            await self.open()
        loop = self._loop
        self.timeout = timeout  # the budget (and what an expiry message says)
        token = self.next_token()
        ex = _TaskExchange()
        ex.mid = mid = self.next_mid()
        ex.data = b"".join((_POST_T_HEAD, mid.to_bytes(2, "big"), token, _POST_T_OPTS, payload))
        ex.fut = loop.create_future()
        ex.tries, ex.timer = 0, None
        r = Channel.rto(self)
        ex.rto = r if r > expect else expect
        ex.t0 = now = loop.time()
        ex.deadline = now + timeout
        ex.due = now + ex.rto
        self._by_mid[mid] = ex
        self._by_tok[token] = functools.partial(self._finish, ex)  # a separate response comes by token
        self._watch[mid] = ex
        try:
            self._send(ex.data)
            if ex.due < self._tick_at:
                self._arm(ex.due)
            return await ex.fut
        finally:
            del self._watch[mid]
            if ex.timer is not None:  # the deadline of a separate response
                self._stop_timer(ex)
            self._by_mid.pop(mid, None)
            self._by_tok.pop(token, None)

    def _arm(self, when: float) -> None:
        if self._tick is not None:
            self._tick.cancel()
        self._tick_at = when
        self._tick = self._loop.call_at(when, self._on_tick)

    def _on_tick(self) -> None:
        """The shared timer: retransmit each task request that is due (as
        ``Channel._retransmit`` does), then re-arm for the next one."""
        self._tick, self._tick_at = None, math.inf
        now = self._loop.time()
        nxt = math.inf
        for ex in list(self._watch.values()):
            if ex.fut.done() or ex.timer is not None:
                continue  # answered, or an empty ACK came: its deadline timer runs
            if ex.due <= now:
                due = self._resend(ex, now)
                if due is None:
                    continue
                ex.due = due
            if ex.due < nxt:
                nxt = ex.due
        if nxt < math.inf:
            self._arm(nxt)


class BoardClient:
    """Task client for the board ``name`` at ``host:port``.

    ``arch`` is its ``mpy_arch`` (None: bytecode only), ``slots`` how many
    tasks it runs at once (its definition's ``tasks``), ``heap`` its heap
    budget in bytes (None: unknown).
    """

    def __init__(self, name: str, host: str, port: int, *, board: str | None = None, arch: str | None = None,
                 slots: int = 1, heap: int | None = None):
        self.name, self.host, self.port = name, host, port
        self.board, self.arch, self.slots, self.heap = board, arch, max(1, slots), heap
        self._chan: TaskChannel | None = None
        self.uploads = 0  # modules sent
        self.upload_bytes = 0

    def __repr__(self) -> str:
        return "BoardClient(%s %s:%d)" % (self.name, self.host, self.port)

    async def channel(self) -> TaskChannel:
        """The channel to the board (opened on first use)."""
        if self._chan is None:
            self._chan = await TaskChannel(self.host, self.port, name=self.name, timeout=CONTROL_TIMEOUT).open()
        return self._chan

    def close(self) -> None:
        """Close the channel (pending requests fail)."""
        if self._chan is not None:
            self._chan.close()
            self._chan = None

    @property
    def bytes_sent(self) -> int:
        return self._chan.bytes_sent if self._chan else 0

    @property
    def counters(self) -> tuple[int, int, int, int]:
        """``(datagrams sent, received, UDP payload bytes sent, received)``."""
        c = self._chan
        return (c.sent, c.received, c.bytes_sent, c.bytes_received) if c else (0, 0, 0, 0)

    async def _con(self, code, opts, payload=b"", *, timeout: float, expect: float = 0.0, token=None):
        chan = await self.channel()
        chan.timeout, chan.min_rto = timeout, expect  # read by con() before its first await
        try:
            return await chan.con(code, opts, payload, token=token)
        finally:
            chan.min_rto = 0.0

    # -- status and code

    async def status(self, timeout: float = CONTROL_TIMEOUT) -> dict:
        """GET /i: the board's status map (ST_* keys)."""
        r = await self._con(P.GET, [(P.OPT_URI_PATH, P.PATH_STATUS.encode())], timeout=timeout)
        if r.code >= 0x80:
            raise from_code(r.code, r.text())
        return cbor2.loads(r.payload)

    async def code_list(self) -> list[bytes]:
        """GET /c: the hashes of the modules the board holds."""
        chan = await self.channel()
        chan.timeout = CONTROL_TIMEOUT
        return list(cbor2.loads(await chan.get_body(W.PATH_CODE)))

    async def put_code(self, mpy: bytes, digest: bytes) -> int:
        """PUT /c/<hex> (Block1 runs); returns 2.01/2.04. A 4.13 means the
        module is larger than the board's code cache."""
        chan = await self.channel()
        chan.timeout = CONTROL_TIMEOUT

        async def chunks():
            yield mpy

        code = await chan.put_share("%s/%s" % (W.PATH_CODE, digest.hex()), chunks(), len(mpy), digest_query=False)
        self.uploads += 1
        self.upload_bytes += len(mpy)
        return code

    async def delete_code(self, digest: bytes) -> None:
        """DELETE /c/<hex>."""
        r = await self._con(P.DELETE, [(P.OPT_URI_PATH, W.PATH_CODE.encode()),
                                       (P.OPT_URI_PATH, digest.hex().encode())], timeout=CONTROL_TIMEOUT)
        if r.code >= 0x80 and r.code != P.NOT_FOUND:
            raise from_code(r.code, r.text())

    # -- tasks

    async def submit(self, payload: bytes, *, timeout: float, expect: float = 0.0) -> W.Result:
        """POST /t with an encoded task map. Returns the result (TK_WAIT) or a
        ``TS_QUEUED`` stand-in (2.01); raises CodeNotCached, BoardBusy,
        HeapTooSmall, CoapError or NodeUnreachable."""
        return _task_answer(await (self._chan or await self.channel()).post_task(payload, timeout, expect))

    async def run(self, code_hash: bytes, mpy, payload: bytes, *, timeout: float, expect: float = 0.0) -> W.Result:
        """Submit; on "code not cached" upload ``mpy()`` (a callable giving the
        .mpy bytes) and submit again."""
        try:  # submit(), inline: this is once per task
            return _task_answer(await (self._chan or await self.channel()).post_task(payload, timeout, expect))
        except CodeNotCached:
            await self.put_code(mpy(), code_hash)
        return await self.submit(payload, timeout=timeout, expect=expect)

    async def run_batch(self, code_hash: bytes, mpy, payload: bytes, *, timeout: float,
                        expect: float = 0.0) -> list[W.Result]:
        """POST /t of a batch (``TK_MORE``, see :meth:`TaskEncoder.encode_batch`):
        the results of the tasks the board ran, in id order from the first
        (fewer than asked when the rest might not have fit its answer). On
        "code not cached" uploads ``mpy()`` and sends again; raises as
        :meth:`submit` does."""
        chan = self._chan or await self.channel()
        r = await chan.post_task(payload, timeout, expect)
        if r.code == P.NOT_FOUND:  # code not cached
            await self.put_code(mpy(), code_hash)
            r = await chan.post_task(payload, timeout, expect)
        if r.code == P.CONTENT:
            try:
                return W.decode_results(r.payload)
            except ValueError as e:
                raise CoapError(r.code, str(e)) from None
        res = _task_answer(r)  # an error: raises
        raise CoapError(r.code, "a single result (%r) where a batch's were expected" % (res,))

    async def result(self, task_id: int, timeout: float = CONTROL_TIMEOUT) -> W.Result:
        """GET /t/<id> once; ClientError 4.04 if the board does not know it."""
        r = await self._con(P.GET, self._task_path(task_id), timeout=timeout)
        if r.code >= 0x80:
            raise from_code(r.code, r.text())
        return W.decode_result(r.payload)

    async def follow(self, task_id: int, timeout: float, expect: float = 0.0) -> W.Result:
        """Wait for a submitted task's final result: GET /t/<id> with Observe,
        asked again every POLL seconds; NodeUnreachable after ``timeout``.

        A board running a task does not read its socket until the task
        ends, so the GET is not retransmitted sooner than ``expect`` (the
        task's usual run time, seconds)."""
        chan = await self.channel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        news: asyncio.Queue = asyncio.Queue()
        token = chan.next_token()
        chan._by_tok[token] = news.put_nowait  # notifications (and separate answers) by token
        opts = [(P.OPT_OBSERVE, b"")] + self._task_path(task_id)
        pending: set[asyncio.Future] = set()
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise NodeUnreachable(self.name, "no result in %g s" % timeout)
                chan.timeout = min(left, max(POLL, CONTROL_TIMEOUT, expect * 1.5))
                chan.min_rto = expect
                ask = asyncio.ensure_future(chan.con(P.GET, opts, token=token))
                await asyncio.sleep(0)  # con() has read its timer settings
                chan.min_rto = 0.0
                pending.add(ask)
                until = loop.time() + min(max(POLL, expect * 1.5), left)
                while loop.time() < until:
                    get = asyncio.ensure_future(news.get())
                    done, _ = await asyncio.wait(pending | {get}, timeout=until - loop.time(),
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if get not in done:
                        get.cancel()
                    for f in done:
                        pending.discard(f)
                        if f is get:
                            r = f.result()
                        else:
                            try:
                                r = f.result()
                            except NodeUnreachable as e:
                                if is_refusal(e):
                                    raise
                                continue  # silence this round: ask again
                        if r.code >= 0x80:
                            raise from_code(r.code, r.text())
                        res = W.decode_result(r.payload)
                        if res.final:
                            return res
        finally:
            chan._by_tok.pop(token, None)
            for f in pending:
                f.cancel()

    async def cancel(self, task_id: int) -> None:
        """DELETE /t/<id>: cancel a queued task or forget a finished one."""
        r = await self._con(P.DELETE, self._task_path(task_id), timeout=CONTROL_TIMEOUT)
        if r.code >= 0x80 and r.code != P.NOT_FOUND:
            raise from_code(r.code, r.text())

    @staticmethod
    def _task_path(task_id: int) -> list:
        return [_T_PATH, (P.OPT_URI_PATH, str(task_id).encode())]


def _task_answer(r) -> W.Result:
    """The answer to a POST /t as a result (see :meth:`BoardClient.submit`)."""
    code = r.code
    if code == P.CONTENT or code == P.CHANGED:
        try:
            return W.decode_result(r.payload)
        except ValueError as e:
            raise CoapError(code, str(e)) from None
    if code == P.CREATED:
        return W.Result(None, W.TS_QUEUED)
    if code == P.NOT_FOUND:
        raise CodeNotCached(code, r.text())
    if code == P.SERVICE_UNAVAILABLE:
        raise BoardBusy(code, r.text(), r.uint(P.OPT_MAX_AGE))
    if code == P.REQUEST_ENTITY_TOO_LARGE:
        raise HeapTooSmall(code, r.text())
    raise from_code(code, r.text())


def is_refusal(e: Exception) -> bool:
    """True when a NodeUnreachable came from an ICMP error (the board's port is
    closed: it is down or restarting), not from silence."""
    return isinstance(e, NodeUnreachable) and "no answer" not in str(e.diagnostic or "") and \
        "no result" not in str(e.diagnostic or "")
