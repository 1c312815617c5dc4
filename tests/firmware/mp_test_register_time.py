# The node's clock (ohnode.epoch): no time before the coordinator's first
# answer, then its epoch seconds carried forward with ticks_ms on the fake
# clock, across ticks_ms wrap-arounds, without drift; odd answers (bad
# payloads, RR_LEASE), the lifetime's bounds, a bad coordinator address,
# and no status keys without a coordinator.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_register_time
import time
import asyncio
import mpfake as F
from mptest import check, eq
from mp_test_register_double import node, when, created, changed, status, T0
from ohnode.epoch import Epoch
from ohproto import const as P
from ohproto import cbor


def test_epoch_before_and_after():
    clock = F.Clock()
    ep = Epoch(clock.ticks())
    eq(ep.now(), None, "no time")
    ep.set(T0)
    eq(ep.now(), T0, "set")
    clock.t += 999
    eq(ep.now(), T0, "999 ms")
    clock.t += 1
    eq(ep.now(), T0 + 1, "1 s")
    ep.set(T0 - 50)
    eq(ep.now(), T0 - 50, "backwards")


def test_epoch_long_run_across_tick_wraps():
    # 30 days in steps of 10 minutes (the lease sweep's period): ticks_ms
    # wraps (period 2**30 ms, about 12 days); no drift.
    clock = F.Clock()
    clock.t = time.ticks_add(0, -5000)
    ep = Epoch(clock.ticks())
    ep.set(T0)
    for i in range(1, 30 * 144 + 1):
        clock.t = time.ticks_add(clock.t, 600000)
        t = ep.now()
        if i % 144 == 0:
            eq(t, T0 + i * 600, "day %d" % (i // 144))
    clock.t = time.ticks_add(clock.t, 1234)
    eq(ep.now(), T0 + 30 * 86400 + 1, "rest kept")


def test_epoch_daily_calls():
    # Called once a day only (ticks_diff holds up to about 6 days).
    clock = F.Clock()
    ep = Epoch(clock.ticks())
    ep.set(T0)
    for day in range(1, 40):
        clock.t = time.ticks_add(clock.t, 86400000)
        eq(ep.now(), T0 + day * 86400, "day %d" % day)


def test_bad_answer_payloads():
    nd = node()
    for pl in (b"\xff\x00", cbor.dumps([1, 2]), cbor.dumps({P.RR_TIME: -5}), cbor.dumps({P.RR_TIME: "x"}),
               cbor.dumps({P.RR_TIME: True}), cbor.dumps({P.RR_TIME: 1.5})):
        nd.reg.loc = None
        when(nd, created("rd", "1", pl=pl))
        check(nd.reg.registered(), "registered %r" % pl)
        eq(nd.ep.now(), None, "no time %r" % pl)


def test_lease_default_from_answer():
    nd = node(lease_default=500)
    eq(nd.sh.lease.default, 500, "config")
    when(nd, created("rd", "1", pl=cbor.dumps({P.RR_TIME: T0, P.RR_LEASE: 86400, 99: "x"})))
    eq(nd.sh.lease.default, 86400, "RR_LEASE")
    when(nd, changed(cbor.dumps({P.RR_LEASE: 0})))
    eq(nd.sh.lease.default, 86400, "0 ignored")


def test_lifetime_clamped():
    eq(node(lt=1).reg.lt, P.REG_LIFETIME_MIN, "min")
    eq(node(lt=10 ** 6).reg.lt, P.REG_LIFETIME_MAX, "max")


def test_bad_address_keeps_trying():
    nd = node()
    nd.reg.addr = "nohostport"

    async def main():
        task = asyncio.create_task(nd.reg.run())
        await asyncio.sleep_ms(40)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    check(nd.reg._back > 10, "backing off")
    eq(nd.sock.out, [], "nothing sent")


def test_no_coordinator_no_status_keys():
    st = status(F.fresh())
    check(P.ST_REGISTERED not in st and P.ST_COORDINATOR not in st, "%r" % st)


F.run(globals())
