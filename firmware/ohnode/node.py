# The node: picks the platform layer, mounts storage, brings up the network,
# binds UDP and serves the resources until reset.
import sys
import asyncio
from micropython import const

_WDT_MS = const(10000)
_FEED_MS = const(1000)
_MIN_NOTE_MS = const(100)  # at most ten notification rounds a second


def _platform():
    p = sys.platform
    if p == "esp32":
        from ohnode import plat_esp32 as m
    elif p == "esp8266":
        from ohnode import plat_esp8266 as m
    elif p == "rp2":
        from ohnode import plat_rp2 as m
    else:  # linux, darwin: the virtual board
        from ohnode import plat_unix as m
    return m


async def _feeder(plat, srv, period, changed, lz, sweep):
    # Feed the watchdog every _FEED_MS while the loop turns (a task that
    # never returns, or anything else that blocks the loop, stops it), unload
    # the task machinery once idle, notify observers of /i every period or
    # soon after a change (one notifier, whatever the rate of changes), and
    # run the lease expiry every `sweep` seconds (a no-op until the node
    # knows the time). One task for all: each costs heap for good.
    from ohproto import const as P

    ms = int(period * 1000)
    sweep = max(100, int(sweep * 1000))
    now, diff = plat.ticks
    t0 = ts = now()
    while True:
        plat.wdt_feed()
        if diff(now(), ts) >= sweep:
            ts = now()
            try:
                await lz.sweep()
            except Exception as e:  # a bad flash moment must not end the sweeps
                print("openheap: lease sweep", repr(e))
        if P.PATH_CODE in srv.res or P.PATH_TASKS in srv.res:
            from ohnode.lazy import retire

            retire(srv, plat.ticks)
        if "ohnode.tcp" in sys.modules:  # (started by the share store)
            sys.modules["ohnode.tcp"].retire(plat.ticks)
        left = min(ms - diff(now(), t0), sweep - diff(now(), ts), _FEED_MS)
        try:
            await asyncio.wait_for_ms(changed.wait(), max(left, 0))
        except asyncio.TimeoutError:
            if diff(now(), t0) < ms:
                continue
        changed.clear()
        t0 = now()
        if srv.obs:
            srv.notify(P.PATH_STATUS)
            await asyncio.sleep_ms(_MIN_NOTE_MS)


async def _run(plat, cfg, root):
    import socket
    from ohproto import const as P
    from ohnode.server import Server
    from ohnode.client import Client
    from ohnode.shares import Shares
    from ohnode.status import Status
    from ohnode.epoch import Epoch
    from ohnode.lease import Leases
    from ohproto import cbor  # noqa: settle the heap before serving
    import gc

    lost = plat.wdt_lost()  # a task the watchdog cut before this boot
    plat.wdt_start(_WDT_MS)
    ip = await plat.net_up(cfg)
    port = cfg.get("port", P.DEFAULT_PORT)
    # Real boards bind the wildcard address, so a new DHCP lease after a
    # reconnect does not strand the socket; virtual ones bind loopback.
    host = cfg.get("host", "0.0.0.0")
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
    sock = socket.socket(ai[0], socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except (AttributeError, OSError):
        pass
    sock.bind(ai[-1])
    srv = Server(sock, cfg)

    srv.client = Client(srv, cfg.get("ack_timeout_ms", P.ACK_TIMEOUT_MS))
    sh = Shares(srv, root, cfg, plat.ticks)
    st = Status(srv, cfg, sh, plat.ticks)
    srv.res[P.PATH_SHARES] = sh
    if cfg.get("tcp", 1):  # CoAP over TCP (ohnode.tcp), from the first share request on
        sh.tcp = plat.ticks
    srv.res[P.PATH_STATUS] = st
    if lost is not None:
        st.lost = lost

    def more(key):
        # Server.more: /c and /t made on first use; None: unload them unless
        # busy (ohnode.lazy also does once they are idle)
        res = srv.res
        if key is None:
            if P.PATH_CODE not in res and P.PATH_TASKS not in res:
                return None
        elif key != P.PATH_CODE and key != P.PATH_TASKS:
            return None
        from ohnode.lazy import make

        return make(key, srv, plat, root, cfg, st, _WDT_MS)

    srv.more = more
    ep = Epoch(plat.ticks)
    sh.lease = Leases(sh, cfg, ep)

    ev = asyncio.Event()
    sh.changed = ev.set
    asyncio.create_task(_feeder(plat, srv, cfg.get("status_period", 5), ev, sh.lease,
                                cfg.get("lease_check", P.LEASE_CHECK)))
    if cfg.get("coordinator"):  # else the node does not register
        from ohnode.reg import Reg

        st.reg = Reg(srv, cfg, sh, ep, plat.ticks)
        asyncio.create_task(st.reg.run())
    print("openheap node %s listening on %s:%d" % (cfg.get("name", "?"), cfg.get("host", ip), port))
    gc.collect()
    # Collect often: short-lived garbage is then freed before it spreads the
    # long-lived objects over the heap (fragmentation kills 1 KB buffers).
    gc.threshold(sh.gc_threshold)  # (higher while an upload runs: ohnode.shares)
    await srv.serve()


def main():
    plat = _platform()
    cfg = plat.config()
    root = plat.mount(cfg)
    try:
        asyncio.run(_run(plat, cfg, root))
    except KeyboardInterrupt:
        return
    except Exception as e:
        sys.print_exception(e)
        plat.reset()
