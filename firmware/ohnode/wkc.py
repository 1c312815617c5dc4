# Resource /.well-known/core (RFC 6690), filterable by rt= (and href=).
# Imported only when first asked for.
from ohproto import const as P

_LINKS = (
    ("/s", P.RT_SHARES, ";ct=60"),
    ("/i", P.RT_STATUS, ";ct=60;obs"),
)


class WellKnown:
    def __init__(self, srv):
        self._srv = srv

    def handle(self, req, rsp, path):
        if path != ["core"]:
            return rsp.err(P.NOT_FOUND, "no such resource")
        if req.code != P.GET:
            return rsp.err(P.METHOD_NOT_ALLOWED, "GET only")
        rt = href = None
        for q in req.opt_all(P.OPT_URI_QUERY):
            if q.startswith("rt="):
                rt = q[3:]
            elif q.startswith("href="):
                href = q[5:]
        out = []
        for h, r, rest in _LINKS:
            if _match(rt, r) and _match(href, h):
                out.append('<%s>;rt="%s"%s' % (h, r, rest))
        body = ",".join(out).encode()
        rsp.add(P.OPT_CONTENT_FORMAT, P.CF_LINK_FORMAT)

        def rd(off, mv):
            mv[:] = body[off : off + len(mv)]
            return mv

        return self._srv.block2(req, rsp, len(body), rd)


def _match(pat, val):
    # RFC 6690 4.1: exact match, or prefix match with a trailing '*'.
    if pat is None:
        return True
    if pat.endswith("*"):
        return val.startswith(pat[:-1])
    return val == pat
