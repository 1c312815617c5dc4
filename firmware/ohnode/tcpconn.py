# One CoAP-over-TCP connection (RFC 8323), made by ohnode.node (_tcp). It reads its
# frames through one buffer; a message's options and
# the start of its payload land there, and a payload longer than the buffer
# (a BERT block, RFC 8323 6: many 1024-byte blocks in one message) stays on
# the connection for the resource to pull piece by piece (Msg.rest, pull),
# so a 64 KiB block needs no 64 KiB of heap. A BERT Block2 answer
# (Rsp.big) goes out the same way, read piece by piece. The requests of a
# connection are handled in order, one at a time; a peer may send the next
# ones before the answers come (TCP's flow control holds them back).
import asyncio
from micropython import const
from ohnode import coap
from ohproto import const as P

_RX = const(1024)  # receive buffer: the server's response scratch, lent (Server.lend)
_TX = const(160)  # frame header and options of an answer (payload apart), in the server's transmit buffer
_MMS = const(1 << 20)  # Max-Message-Size we take (payload streamed, not held)
_PEER_MMS = const(1152)  # the peer's until its CSM says (RFC 8323 5.3.1)


class Conn:
    def __init__(self, srv, s):
        import gc
        from ohnode.server import Rsp

        gc.collect()  # what it allocates goes low, out of the way
        self._srv = srv
        self._s = s
        self._rsp = Rsp(0)  # (payloads are streamed from read(): no scratch of its own)
        self._rsp.big = self._rsp.fin = None  # (a payload streamed; called once it went out)
        m = self._m = coap.Msg()
        m.tcp = m.peer = self  # (uploads are the connection's)
        self._b = self._mv = None  # (open: the server's buffer)
        self._a = self._e = 0  # bytes not yet taken: _b[_a:_e]
        self._tx = srv._tx  # (used in one go: a frame is copied only if its write waits)
        self.mms = _PEER_MMS  # the peer's Max-Message-Size
        self.bert = False  # the peer takes BERT blocks (its CSM)
        self.dead = False

    def open(self):
        # Its buffers are the server's, made at boot: a fragmented heap has
        # no hole for 1 KB more while a share is uploaded (measured). The
        # response scratch is lent (nothing allocated after it is taken, so
        # close() always gives it back): UDP answers meanwhile allocate
        # theirs (Server.block2) and send no bursts.
        srv = self._srv
        self._mv = memoryview(srv._rsp.buf)
        self._b = srv._rsp.buf
        srv._rsp.buf = b""

    def room(self, most):
        # BERT blocks of 1024 bytes an answer may carry: at most `most` (0:
        # BERT_MAX) and what the peer's Max-Message-Size leaves.
        n = (self.mms - _TX) >> 10
        most = most or P.BERT_MAX
        return max(1, n if n < most else most)

    # -- reading
    async def _need(self, k):
        # At least k bytes in the buffer (k <= _RX); 0: any, into an empty one.
        s = self._s
        while self._e - self._a < (k or 1):
            a = self._a
            if a + k > _RX or a == self._e:  # move what is left to the front
                n = self._e - a
                self._b[:n] = self._mv[a : self._e]  # (memmove: may overlap)
                self._a = 0
                self._e = n
            try:
                n = s.readinto(self._mv[self._e :])
            except OSError:
                self.dead = True
                raise
            if n is None:
                yield asyncio.core._io_queue.queue_read(s)
            elif n:
                self._e += n
            else:
                self.dead = True
                raise OSError(104)  # ECONNRESET: the peer closed

    async def pull(self, put, m):
        # Hand the payload still on the connection (m.rest bytes) to
        # put(memoryview), piece by piece; put None: skip it. First what is
        # in the buffer, then straight from the socket into it (one
        # generator for it all: nothing allocated per piece but the view).
        a = self._a
        k = min(m.rest, self._e - a)
        if k:
            self._a = a + k
            m.rest -= k
            if put:
                put(self._mv[a : a + k])
        if not m.rest:
            return
        s = self._s
        b = self._b
        self._a = self._e = 0
        while m.rest:
            try:
                n = s.readinto(b, m.rest if m.rest < _RX else _RX)
            except OSError:
                self.dead = True
                raise
            if n is None:
                yield asyncio.core._io_queue.queue_read(s)
                continue
            if not n:
                self.dead = True
                raise OSError(104)
            m.rest -= n
            if put:
                put(self._mv if n == _RX else self._mv[:n])  # (a full one: no new view)

    async def run(self):
        await self._write(self._frame(P.CSM, b"", [(P.OPT_MAX_MESSAGE_SIZE, coap.uint_bytes(_MMS)), (P.OPT_BLOCK_WISE_TRANSFER, b"")], 0), True)
        m = self._m
        while True:
            await self._need(1)
            x = self._b[self._a]
            ln = x >> 4
            tkl = x & 15
            xl = 0 if ln < 13 else (1 if ln == 13 else (2 if ln == 14 else 4))
            h = 2 + xl + tkl  # bytes before the options
            if tkl > 8:
                raise coap.FormatError("token length")
            await self._need(h)
            b = self._b
            a = self._a
            if xl:
                v = 0
                for i in range(a + 1, a + 1 + xl):
                    v = (v << 8) | b[i]
                ln = v + (13 if xl == 1 else (269 if xl == 2 else 65805))
            k = ln if ln < _RX - h else _RX - h
            await self._need(h + k)
            a = self._a
            m.code = self._b[a + 1 + xl]
            m.tok = bytes(self._mv[a + h - tkl : a + h]) if tkl else b""
            self._a = a + h + k
            m.rest = ln - k
            try:
                coap.parse(self._b, m, a + h, a + h + k, m.rest)
            except coap.FormatError:
                m.n = 0  # answered as a bad request
                m.code |= 0x100
            await self._message(m)
            await self.pull(None, m)  # what nobody took
            m.clear()
            await asyncio.sleep_ms(0)  # let the node's other tasks run

    async def _message(self, m):
        c = m.code
        if c >> 5 == 7:  # signals (RFC 8323 5)
            if c == P.CSM:
                v = m.opt_uint(P.OPT_MAX_MESSAGE_SIZE)
                if v:
                    self.mms = v
                if m.opt(P.OPT_BLOCK_WISE_TRANSFER) is not None:
                    self.bert = True
            elif c == P.PING:
                await self._write(self._frame(P.PONG, m.tok, [], 0), True)
            elif c == P.RELEASE or c == P.ABORT:
                self.dead = True
                raise OSError(104)
            return
        if c == P.EMPTY or (c >> 5 and c < 0x100):  # empty, or a response: ignored
            return
        srv = self._srv
        rsp = self._rsp
        rsp.reset()
        rsp.big = rsp.fin = None
        srv.rx_m += 1
        if c >= 0x100:
            rsp.err(P.BAD_REQUEST, "message format error")
        else:
            crit = srv._check_options(m)
            if crit == 1:
                rsp.err(P.BAD_OPTION, "unrecognised critical option")
            elif crit == 2:
                rsp.err(0xA5, "no proxying")
            else:
                srv._dispatch(m, rsp)
                if rsp.later is not None:  # on TCP simply awaited
                    later = rsp.later
                    rsp.reset()
                    rsp.big = rsp.fin = None
                    try:
                        await later(rsp)
                    except MemoryError:
                        rsp.err(P.SERVICE_UNAVAILABLE, "out of memory")
                    except OSError as e:
                        if self.dead:
                            raise
                        rsp.err(P.INTERNAL_SERVER_ERROR, "os error %s" % e)
                srv._accept(m, rsp)
        if rsp.code >= P.BAD_REQUEST:
            srv.errs += 1
        try:
            if srv._suppressed(m, rsp.code):
                return
            big = rsp.big
            pl = rsp.pl
            await self._write(self._frame(rsp.code, m.tok, coap.sort_opts(rsp.opts), big[2] if big else (len(pl) if pl else 0)), True)
            srv.tx_m += 1
            if big:
                # read into the receive buffer, after what is in of the next
                # requests (moved to its front)
                read, off, n = big
                a = self._a
                k = self._e - a
                self._b[:k] = self._mv[a : self._e]
                self._a = 0
                self._e = k
                buf = self._mv[k:] if _RX - k >= 256 else memoryview(bytearray(256))
                while n:
                    k = n if n < len(buf) else len(buf)
                    await self._write(read(off, buf[:k]))
                    off += k
                    n -= k
            elif pl:
                await self._write(memoryview(pl))
        finally:
            if rsp.fin:
                rsp.fin()

    # -- writing
    def _frame(self, code, tok, opts, pn):
        # The frame of a message up to its payload of pn bytes (the payload
        # marker included), in _tx. The options are written 6 bytes in, the
        # length, code and token then fill the room before them.
        mv = memoryview(self._tx)
        t = len(tok)
        n = coap.build(mv[2 : _TX - 1], 0, code, 0, tok, opts, None) - 4 - t  # options
        s = 6 + t + n  # end of the options
        if pn:
            self._tx[s] = 0xFF
            s += 1
            n += 1 + pn
        if n < 13:
            h = b""
            x = n
        elif n < 269:
            h = bytes((n - 13,))
            x = 13
        elif n < 65805:
            h = (n - 269).to_bytes(2, "big")
            x = 14
        else:
            h = (n - 65805).to_bytes(4, "big")
            x = 15
        p = 4 - len(h)  # first byte of the frame
        self._tx[p] = (x << 4) | t
        self._tx[p + 1 : 5] = h
        self._tx[5] = code
        return mv[p:s]

    async def _write(self, d, tx=False):
        # tx: d is in the server's transmit buffer, which UDP answers reuse
        # while this waits: copied first then.
        s = self._s
        while True:
            n = s.write(d)
            if n == len(d):
                return
            d = d[n or 0 :]
            if tx:
                d = bytes(d)
                tx = False
            yield asyncio.core._io_queue.queue_write(s)

    def close(self):
        # The connection ended: the server gets its buffer back, the
        # uploads that came this way end.
        if self._b is None:  # (closed already)
            return
        self._srv._rsp.buf = self._b
        self._b = self._mv = None
        sh = self._srv.res[P.PATH_SHARES]
        for u in sh._up:
            if u is not None and u.peer is self:
                sh._drop(u)

    def upload(self, sh, u, end):
        # rsp.later of a BERT block of a share upload (ohnode.shares): the
        # rest of its payload from the connection into u, then end(): the
        # answer (2.31, or the commit); 5.03 when the flash is full.
        def put(mv):  # (write and hash the next bytes)
            u.f.write(mv)
            u.h.update(mv)
            u.off += len(mv)

        async def later(r):
            try:
                try:
                    await self.pull(put, self._m)
                except OSError as e:
                    if self.dead:
                        raise
                    sh._drop(u)
                    if e.errno != 28:  # ENOSPC: the flash is full
                        raise
                    r.err(P.SERVICE_UNAVAILABLE, "no space")
                    return
                sh._put_end(r, u, *end)
            except MemoryError:  # (answered 5.03): the upload ends
                if u in sh._up:
                    sh._drop(u)
                raise

        return later
