# CoAP server engine: receives datagrams, de-duplicates CON requests,
# dispatches to resources, answers piggybacked or separately, keeps counters,
# and holds the Observe registrations. Resources are objects with
# handle(req, rsp, path) registered under their first Uri-Path segment.
import asyncio
import gc
from micropython import const
from ohnode import coap
from ohproto import const as P

_RXMAX = const(1280)  # largest datagram taken; a 1024-byte block fits
_BUF = const(1024)
_DRAIN = const(16)  # datagrams read per wake-up before yielding (a burst is 16 blocks)
_MAX_OBS = const(4)
_CON_EVERY = const(8)  # every Nth notification is confirmable (RFC 7641 4.5)
_DD_SLOT = const(96)  # bytes kept per cached response; larger ones are not
_OOM_RESET = const(16)  # receives failing for want of memory in a row: reset
_PROXYING_NOT_SUPPORTED = const(0xA5)
_CF_OCTETS = b"\x2a"  # Content-Format 42, application/octet-stream
# Options this node understands; any other odd (critical) one gets 4.02.
_KNOWN = (1, 3, 5, 6, 7, 11, 12, 14, 15, 17, 23, 27, 28, 35, 39, 60, 258)


class Rsp:
    # The response being built; reused for every request. (Over TCP it has
    # two more: big, a payload streamed, and fin: ohnode.tcpconn.)
    def __init__(self, size=_BUF):
        self.buf = bytearray(size)  # payload scratch space for resources
        self.reset()

    def reset(self):
        self.code = P.CONTENT
        self.opts = []  # (a new list: a resource may keep the old one)
        self.pl = None
        self.later = None  # coroutine: answer separately when it returns
        self.tail = None  # tail(server, req): more datagrams after the answer

    def add(self, num, val):
        if isinstance(val, int):
            val = coap.uint_bytes(val)
        elif isinstance(val, str):
            val = val.encode()
        self.opts.append((num, val))

    def err(self, code, text):
        # Error response with a diagnostic payload (RFC 7252 5.5.2).
        self.code = code
        self.opts = []
        self.pl = text.encode()
        return code


class Server:
    def __init__(self, sock, cfg):
        self.sock = sock
        self.cfg = cfg
        self.szx = cfg.get("szx", P.MAX_BLOCK_SZX)
        self.b2 = (0, self.szx)  # (num, szx) of the last Block2 answer
        self.res = {}
        # more(key) -> resource made on first use, or None; more(None)
        # unloads those that are idle, when the heap runs out
        self.more = None
        self.client = None  # ohnode.client.Client, set by the node
        self._m = coap.Msg()
        self._rsp = Rsp()
        self._tx = bytearray(_RXMAX)
        # De-duplication cache (RFC 7252 4.5) in fixed slots, so that it
        # leaves no long-lived objects scattered over the heap: peers, message
        # IDs, response lengths and the responses themselves.
        n = cfg.get("dedup", 8)
        self._ddp = [None] * n
        self._ddm = [-1] * n
        self._ddl = bytearray(n)
        self._ddb = bytearray(n * _DD_SLOT)
        self._ddi = 0
        self.low = gc.mem_free()  # low-water mark of free heap
        self.obs = []  # [resource key, peer, token, seq, last mid, CON in flight]
        self.rx_m = self.tx_m = self.rx_b = self.tx_b = self.errs = 0

    # -- sending
    def send(self, data, peer):
        try:
            self.sock.sendto(data, peer)
        except OSError:
            self.errs += 1
            return
        self.tx_m += 1
        self.tx_b += len(data)

    def _empty(self, t, mid, peer):
        b = self._tx
        b[0] = 0x40 | (t << 4)
        b[1] = 0
        b[2] = mid >> 8
        b[3] = mid & 0xFF
        d = memoryview(b)[:4]
        self.send(d, peer)
        return d

    def _remember(self, peer, mid, data):
        n = len(data)
        if n > _DD_SLOT:
            return
        i = self._ddi
        self._ddi = (i + 1) % len(self._ddm)
        for p in self._ddp:  # keep one address object per peer: a new one
            if p == peer:  # per slot would pin small objects all over the heap
                peer = p
                break
        self._ddp[i] = peer
        self._ddm[i] = mid
        self._ddl[i] = n
        o = i * _DD_SLOT
        self._ddb[o : o + n] = data

    def _cached(self, peer, mid):
        ms = self._ddm
        for i in range(len(ms)):
            if ms[i] == mid and self._ddp[i] == peer:
                o = i * _DD_SLOT
                return memoryview(self._ddb)[o : o + self._ddl[i]]
        return None

    # -- receiving
    async def serve(self):
        sock = self.sock
        sock.setblocking(False)
        q = asyncio.core._io_queue
        m = self._m
        oom = 0
        while True:
            yield q.queue_read(sock)
            for _ in range(_DRAIN):
                try:
                    data, peer = sock.recvfrom(_RXMAX)
                    oom = 0
                except OSError:
                    break
                except MemoryError:  # datagram lost; the sender retransmits
                    self.errs += 1
                    oom += 1
                    if oom > _OOM_RESET:  # wedged: let the node reset
                        raise
                    if self.more is not None:
                        self.more(None)  # unload what is made on first use
                    gc.collect()
                    break
                try:
                    self.datagram(data, peer)
                except Exception as e:  # a bug must not stop the node
                    self.errs += 1
                    print("openheap: error", repr(e))
                # Let go of the datagram: the next one may need its heap (a
                # 1 KB block is scarce on a fragmented 64 KiB heap).
                data = None
                m.clear()
            # Sample heap use after the work, garbage included: the peak.
            f = gc.mem_free()
            if f < self.low:
                self.low = f

    def datagram(self, data, peer):
        self.rx_m += 1
        self.rx_b += len(data)
        if len(data) < 4 or data[0] >> 6 != 1:  # too short or wrong version:
            self.errs += 1  # silently ignored (4.2)
            return
        t = (data[0] >> 4) & 3
        code = data[1]
        mid = (data[2] << 8) | data[3]
        m = self._m
        try:
            coap.parse(data, m)
        except coap.FormatError:
            self.errs += 1
            if t == P.CON:  # reject (RFC 7252 4.2)
                self._empty(P.RST, mid, peer)
            return
        m.peer = peer
        if t == P.ACK or t == P.RST:
            if t == P.RST:
                self._drop_obs(peer, m.mid)
            if self.client:
                self.client.reply(m)
            return
        if code == P.EMPTY:  # CoAP ping (CON) or stray empty NON
            if t == P.CON:
                self._empty(P.RST, mid, peer)
            return
        if code >> 5:  # a response to one of our requests
            if self.client:
                self.client.reply(m)
            if t == P.CON:
                self._empty(P.ACK, mid, peer)
            return
        if t == P.CON:
            d = self._cached(peer, mid)
            if d is not None:
                self.send(d, peer)
                return
        self._request(m, len(data) >= _RXMAX)

    def _request(self, m, truncated):
        rsp = self._rsp
        rsp.reset()
        crit = self._check_options(m)
        if crit == 1:
            if m.t != P.CON:  # NON with unknown critical option: reject
                self.errs += 1
                self._empty(P.RST, m.mid, m.peer)
                return
            rsp.err(P.BAD_OPTION, "unrecognised critical option")
        elif crit == 2:
            rsp.err(_PROXYING_NOT_SUPPORTED, "no proxying")
        elif truncated:
            rsp.err(P.REQUEST_ENTITY_TOO_LARGE, "datagram too large")
            rsp.add(P.OPT_BLOCK1, coap.block_val(0, 1, self.szx))
        else:
            self._dispatch(m, rsp)
            self._accept(m, rsp)
        if rsp.code >= P.BAD_REQUEST:
            self.errs += 1
        if rsp.later is not None:
            if m.t == P.CON:
                self._remember(m.peer, m.mid, self._empty(P.ACK, m.mid, m.peer))
            asyncio.create_task(self._separate(m.peer, m.tok, m.t, rsp.later))
            return
        if self._suppressed(m, rsp.code):
            if m.t == P.CON:  # RFC 7967 2.1: a CON still gets its empty ACK
                self._remember(m.peer, m.mid, self._empty(P.ACK, m.mid, m.peer))
        else:
            d = self._respond(m.t, m.mid, m.tok, m.peer, rsp)
            if m.t == P.CON and m.code != P.GET:
                self._remember(m.peer, m.mid, d)
        if rsp.tail is not None:  # a burst: the blocks after the first
            t, rsp.tail = rsp.tail, None
            t(self, m)

    def _suppressed(self, m, code):
        # No-Response (RFC 7967): bit 2 = 2.xx, 8 = 4.xx, 16 = 5.xx.
        v = m.opt_uint(P.OPT_NO_RESPONSE)
        return v is not None and (v & (1 << ((code >> 5) - 1))) != 0

    def _accept(self, m, rsp):
        # Accept (RFC 7252 5.10.4): 4.06 unless the representation matches.
        want = m.opt_uint(P.OPT_ACCEPT)
        if want is None or rsp.code != P.CONTENT:
            return
        for n, v in rsp.opts:
            if n == P.OPT_CONTENT_FORMAT and coap.uint_of(v) == want:
                return
        rsp.err(P.NOT_ACCEPTABLE, "content-format %d not available" % want)

    def _check_options(self, m):
        # 0 fine, 1 unknown critical option (or repeated Block), 2 proxy.
        nb1 = nb2 = 0
        for i in range(m.n):
            n = m.num(i)
            if n == 35 or n == 39:
                return 2
            if n == P.OPT_BLOCK1:
                nb1 += 1
            elif n == P.OPT_BLOCK2:
                nb2 += 1
            elif n & 1 and n not in _KNOWN:
                return 1
        return 1 if nb1 > 1 or nb2 > 1 else 0

    def _dispatch(self, m, rsp):
        try:
            path = m.opt_all(P.OPT_URI_PATH)
        except UnicodeError:
            rsp.err(P.BAD_REQUEST, "Uri-Path is not UTF-8")
            return
        key = path[0] if path else ""
        if m.rest and key != P.PATH_SHARES:  # a payload on TCP that only a
            rsp.err(P.REQUEST_ENTITY_TOO_LARGE, "payload too large")  # resource
            return  # streaming it may take (ohnode.shares; the rest is skipped)
        r = self.res.get(key)
        if r is None:
            if key == P.PATH_WELL_KNOWN:
                from ohnode import wkc

                r = self.res[key] = wkc.WellKnown(self)
            elif self.more is not None:
                r = self.more(key)
            if r is None:
                rsp.err(P.NOT_FOUND, "no such resource")
                return
        try:
            r.handle(m, rsp, path[1:])
        except coap.FormatError as e:  # e.g. SZX 7: 4.00 (RFC 7959 2.2)
            rsp.err(P.BAD_REQUEST, str(e))
        except UnicodeError:
            rsp.err(P.BAD_REQUEST, "option is not UTF-8")
        except MemoryError:
            rsp.err(P.SERVICE_UNAVAILABLE, "out of memory")
        except OSError as e:
            rsp.err(P.INTERNAL_SERVER_ERROR, "os error %s" % e)

    def _respond(self, t, mid, tok, peer, rsp, rt=None):
        if rt is None:
            rt = P.ACK if t == P.CON else P.NON
            if rt == P.NON:
                mid = self.next_mid()
        n = coap.build(self._tx, rt, rsp.code, mid, tok, coap.sort_opts(rsp.opts), rsp.pl)
        d = memoryview(self._tx)[:n]
        self.send(d, peer)
        return d

    async def _separate(self, peer, tok, t, coro):
        # Separate response (RFC 7252 5.2.2): CON, retransmitted until ACKed.
        rsp = Rsp(0)
        try:
            await coro(rsp)
        except Exception as e:
            rsp.err(P.INTERNAL_SERVER_ERROR, repr(e))
        if t != P.CON or self.client is None:
            self._respond(P.NON, 0, tok, peer, rsp)
            return
        mid = self.next_mid()
        n = coap.build(self._tx, P.CON, rsp.code, mid, tok, coap.sort_opts(rsp.opts), rsp.pl)
        try:
            await self.client.exchange(peer, bytes(self._tx[:n]), mid)
        except OSError:
            pass

    def next_mid(self):
        return self.client.next_mid()

    # -- block-wise responses (RFC 7959 2.4)
    def block2(self, req, rsp, size, read, most=P.BERT_MAX):
        # Answer the Block2 slice the request asks for; read(off, mv) fills
        # mv with the representation's bytes at off and returns mv. Over TCP
        # the payload is read as it goes out (rsp.big), and a BERT request
        # (SZX 7) from a peer that takes BERT gets up to `most` blocks of
        # 1024 bytes, as many as its Max-Message-Size allows.
        szx = self.szx
        v = req.opt(P.OPT_BLOCK2)
        c = req.tcp
        off = 0
        if v is not None:
            num, _, s = coap.block_of(v, c)
            off = num << ((s if s < 7 else 6) + 4)  # (BERT: NUM counts KiB)
            if s < szx or (s == 7 and c.bert):
                szx = s
        # Larger blocks asked for than we use: same byte offset, our block
        # size, renumbered (RFC 7959 2.4).
        bs = 1 << ((szx if szx < 7 else 6) + 4)
        num = off // bs
        if off > size or (off == size and num):
            return rsp.err(P.BAD_OPTION, "block beyond end")
        n = min(bs * (c.room(most) if szx == 7 else 1), size - off)
        more = off + n < size
        self.b2 = (num, szx)
        if more or v is not None:
            rsp.add(P.OPT_BLOCK2, coap.block_val(num, more, szx))
        if num == 0 and more:
            rsp.add(P.OPT_SIZE2, size)
        if n and c:
            rsp.big = (read, off, n)
        elif n:  # (the scratch may be lent to a TCP connection: ohnode.tcpconn)
            rsp.pl = read(off, memoryview(rsp.buf if len(rsp.buf) >= n else bytearray(n))[:n])
        return rsp.code

    def burst(self, req, size, read, n):
        # The blocks after the one just answered (self.b2), as NON 2.05
        # responses with the request's token (the b= query of a share GET).
        # A send that fails (no buffers) ends the burst: the client asks again.
        num, szx = self.b2
        bs = 1 << (szx + 4)
        buf = memoryview(self._rsp.buf)
        if not len(buf):  # lent: the client asks for the rest again
            return
        errs = self.errs
        for i in range(num + 1, num + n):
            off = i * bs
            if off >= size:
                return
            k = min(bs, size - off)
            opts = [(P.OPT_CONTENT_FORMAT, _CF_OCTETS), (P.OPT_BLOCK2, coap.block_val(i, off + k < size, szx))]
            w = coap.build(self._tx, P.NON, P.CONTENT, self.next_mid(), req.tok, opts, read(off, buf[:k]))
            self.send(memoryview(self._tx)[:w], req.peer)
            if self.errs != errs:
                return

    # -- Observe (RFC 7641)
    def observe(self, req, rsp, key):
        # Register or deregister the requester; adds the Observe option.
        v = req.opt_uint(P.OPT_OBSERVE)
        if v is None or req.tcp:  # (notifications go over UDP only)
            return
        obs = self.obs
        for o in obs:
            if o[1] == req.peer and o[2] == req.tok:
                obs.remove(o)
                break
        if v == 0 and len(obs) < _MAX_OBS:
            obs.append([key, req.peer, req.tok, 1, -1, False])
            rsp.add(P.OPT_OBSERVE, 1)

    def _drop_obs(self, peer, mid):
        for o in self.obs:
            if o[1] == peer and o[4] == mid:
                self.obs.remove(o)
                return

    def notify(self, key, r=None):
        # Send the current state of resource key to its observers: the body
        # is built once (by r.notify(rsp), r the resource registered under
        # key unless given); an observer with a confirmable notification still
        # in flight gets nothing new (RFC 7641 4.5.2: newer state follows).
        if r is None:
            r = self.res.get(key)
        rsp = None
        for o in list(self.obs):
            if o[0] != key or o[5]:
                continue
            if rsp is None:
                rsp = Rsp(0)
                r.notify(rsp)
            o[3] = (o[3] + 1) & 0xFFFFFF
            opts = coap.sort_opts(rsp.opts + [(P.OPT_OBSERVE, coap.uint_bytes(o[3]))])
            mid = o[4] = self.next_mid()
            con = o[3] % _CON_EVERY == 0
            n = coap.build(self._tx, P.CON if con else P.NON, rsp.code, mid, o[2], opts, rsp.pl)
            if con:
                o[5] = True
                asyncio.create_task(self._confirm(o, bytes(self._tx[:n]), mid))
            else:
                self.send(memoryview(self._tx)[:n], o[1])

    async def _confirm(self, o, data, mid):
        # A confirmable notification; no ACK means the observer is gone (4.5).
        try:
            await self.client.exchange(o[1], data, mid)
            o[5] = False
        except OSError:
            if o in self.obs:
                self.obs.remove(o)
