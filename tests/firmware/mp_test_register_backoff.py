# Registration when the coordinator is silent or refuses: exponential
# back-off from ACK_TIMEOUT up to the lifetime, the server answering
# meanwhile, "registered" only within a lifetime of the last success, error
# codes and RST, and a separate (non-piggybacked) 2.01.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_register_backoff
import asyncio
import mpfake as F
from mptest import check, eq
from mp_test_register_double import node, when, created, answer, silent, status, check_delay
from ohnode import coap
from ohproto import const as P


def test_backoff_on_silence_keeps_serving():
    nd = node(lt=2, ack=5)
    served = []

    def quiet(m):  # meanwhile the node answers requests (a small one: the heap)
        if not served:
            served.append(nd.ask(P.GET, "s/" + F.SI).code)
            served.append(F.parse(nd.feed(b"\x40\x00\x12\x34")[0][0]).t)

    d, seen = when(nd, quiet)
    eq(len(seen), P.MAX_RETRANSMIT + 1, "retransmitted, then given up")
    check(all(mid == seen[0].mid for mid in seen[1:]), "same MID")
    eq(served, [P.NOT_FOUND, P.RST], "served meanwhile")
    ds = [d]
    for _ in range(9):
        ds.append(when(nd, silent)[0])
    eq(ds, [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2000], "doubling, capped at lt")
    eq(nd.reg.loc, None, "not registered")
    d, seen = when(nd, created("rd", "x"))
    check_delay(nd, d)
    d, seen = when(nd, silent)
    eq(d, 5, "back-off reset by a success")
    eq(seen[0].opt_all(P.OPT_URI_PATH), ["rd", "x"], "location kept")


def test_registered_expires_with_the_lifetime():
    nd = node(lt=30)
    when(nd, created("rd", "1"))
    nd.clock.t += 29000
    check(nd.reg.registered(), "29 s")
    when(nd, silent)
    nd.clock.t += 1000
    check(not nd.reg.registered(), "30 s")
    eq(status(nd)[P.ST_REGISTERED], False, "status")


def test_errors_back_off():
    nd = node(lt=10)
    d, _ = when(nd, lambda m: answer(m, P.BAD_REQUEST))
    eq((d, nd.reg.loc), (10, None), "4.00")
    d, _ = when(nd, lambda m: answer(m, P.CREATED))
    eq((d, nd.reg.loc), (20, None), "no Location-Path")
    when(nd, created("rd", "1"))
    d, _ = when(nd, lambda m: answer(m, P.SERVICE_UNAVAILABLE))
    eq((d, nd.reg.loc), (10, (b"rd", b"1")), "5.03: keep location")
    d, _ = when(nd, lambda m: answer(m, P.BAD_REQUEST))
    eq((d, nd.reg.loc), (20, None), "4.00: afresh")
    d, seen = when(nd, lambda m: answer(m, P.EMPTY, t=P.RST))
    eq((d, len(seen)), (40, 1), "RST")


def test_separate_response():
    # An empty ACK first, then the 2.01 as a CON of its own.
    nd = node()
    reqs = []

    async def main():
        task = asyncio.create_task(nd.reg.attempt())
        while not reqs:
            for data, peer in nd.sock.out:
                m = F.parse(data)
                reqs.append(m)
                nd.srv.datagram(answer(m, P.EMPTY), peer)
            nd.sock.out = []
            await asyncio.sleep_ms(1)
        r = answer(reqs[0], P.CREATED, ("rd", "9"), t=P.CON, mid=0x7777)
        nd.srv.datagram(r, "coord")
        ack = F.parse(nd.sock.out.pop()[0])
        eq((ack.t, ack.mid), (P.ACK, 0x7777), "ACKed")
        return await task

    d = asyncio.run(main())
    eq(nd.reg.loc, (b"rd", b"9"), "location")
    check_delay(nd, d)
    eq(nd.ep.now(), None, "no time")


F.run(globals())
