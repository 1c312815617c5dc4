# Block1 uploads (RFC 7959 2.5) streamed into a temporary file and hashed on
# the way: the rules that share uploads (/s, ohnode.shares) and the code
# cache (/c, ohnode.codecache) have in common. The owner keeps the Upload,
# decides where it may go, checks the hash and renames the file into place.
import os
import hashlib
from micropython import const
from ohnode import coap
from ohproto import const as P

_ENOSPC = const(28)


def rm(p):
    # Remove file p if it is there (shares and code cache use this one).
    try:
        os.remove(p)
    except OSError:
        pass


class Upload:
    def __init__(self, peer, key, tmp, size, now):
        self.peer = peer
        self.key = key  # what the owner uploads to (a share's path, a module's name)
        self.tmp = tmp
        self.f = open(tmp, "wb")
        self.h = hashlib.sha256()
        self.size = size  # declared by Size1, or None
        self.off = 0  # bytes taken
        self.t = now  # ticks_ms of the last block
        self.digest = None  # (shares: the h= query)
        self.lease = None  # (shares: the l= query)

    def drop(self):
        # End it: close and remove the temporary file (if still there).
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                pass
        rm(self.tmp)


def block(req, rsp):
    # (Block1 value or None, num, more, szx) of a PUT; None after answering
    # 4.00 for a non-final block of the wrong size. Over TCP a BERT block
    # (SZX 7) is any whole number of 1024-byte blocks, its payload partly
    # still on the connection (req.rest bytes).
    b1 = req.opt(P.OPT_BLOCK1)
    if b1 is None:
        return None, 0, 0, P.MAX_BLOCK_SZX
    num, more, szx = coap.block_of(b1, req.tcp)
    ln = len(req.pl) + req.rest
    if more and (ln % 1024 or not ln if szx == 7 else ln != 1 << (szx + 4)):
        rsp.err(P.BAD_REQUEST, "block size mismatch")
        return None
    return b1, num, more, szx


def take(u, own, rsp, b1, num, more, szx, pl, rest, cap, now):
    # Block num of upload u (not block 0's checks: the owner's), of len(pl)
    # + rest bytes (rest: still on the connection, for pull). None when pl
    # is written; else the code answered: 2.31 for a block sent again, 4.08
    # naming the first block missing after a gap (u kept), 4.13 beyond cap
    # (own._too_large answers it), 4.00 beyond Size1, 5.03 no space (u
    # dropped: the owner forgets it, seeing u.f is None). own: the owner
    # (ohnode.shares.Shares, ohnode.codecache.CodeCache).
    ln = len(pl) + rest
    bs = 1 << ((szx if szx < 7 else 6) + 4)  # (BERT: NUM counts KiB)
    off = num * bs
    if off != u.off:
        if off + ln <= u.off and more:  # taken already
            return ack(own._srv, rsp, b1, num, more, szx)
        # A gap (a block of a burst was lost): the upload stays; the Block1
        # option names the first block missing, to send again.
        rsp.err(P.REQUEST_ENTITY_INCOMPLETE, "block out of sequence")
        rsp.add(P.OPT_BLOCK1, coap.block_val(u.off // bs, 1, szx))
        return rsp.code
    if off + ln > cap:
        _end(u)
        return own._too_large(rsp)
    if u.size is not None and off + ln > u.size:
        _end(u)
        return rsp.err(P.BAD_REQUEST, "more data than Size1")
    try:
        u.f.write(pl)
    except OSError as e:
        _end(u)
        if e.errno == _ENOSPC:
            return rsp.err(P.SERVICE_UNAVAILABLE, "no space")
        raise
    u.h.update(pl)
    u.off += len(pl)
    u.t = now
    return None


def _end(u):
    u.drop()
    u.f = None


def finish(u, rsp):
    # After the last block: close the file; None when the length matches
    # Size1, else 4.00 answered (u dropped). The owner checks the hash.
    u.f.close()
    u.f = None  # (a closed file keeps its buffer: let it go now)
    if u.size is not None and u.size != u.off:
        _end(u)
        return rsp.err(P.BAD_REQUEST, "length mismatch")
    return None


def ack(srv, rsp, b1, num, more, szx):
    # 2.31 for an intermediate block (asking for smaller blocks when the
    # client's are too large, 2.3), 2.04 for the last; Block1 echoed.
    if more:
        rsp.code = P.CONTINUE
        rsp.add(P.OPT_BLOCK1, coap.block_val(num, 1, szx if szx == 7 else min(szx, srv.szx)))
    else:
        rsp.code = P.CHANGED
        if b1 is not None:
            rsp.add(P.OPT_BLOCK1, coap.block_val(num, 0, szx))
    return rsp.code
