# The platform layer of real boards (ohnode.plat_mcu, plat_esp32,
# plat_esp8266, plat_rp2, wifi) against stand-ins for the two modules that
# cannot run here: `network` (the radio) and `machine` (watchdog, reset,
# unique id). Everything above them is the real firmware code.
import sys
import asyncio
import mptest


class _WLAN:
    # A station interface that connects on the Nth attempt and can drop.
    def __init__(self, hw):
        self.hw = hw

    def active(self, on=None):
        self.hw.active = on

    def connect(self, ssid, psk):
        self.hw.attempts.append((ssid, psk))
        if len(self.hw.attempts) >= self.hw.succeed_at:
            self.hw.up = True

    def isconnected(self):
        return self.hw.up

    def disconnect(self):
        self.hw.disconnects += 1

    def ifconfig(self):
        return ("192.168.4.7", "255.255.255.0", "192.168.4.1", "192.168.4.1")


class _Network:
    STA_IF = 0

    def __init__(self):
        self.reset(1)

    def reset(self, succeed_at):
        self.attempts = []
        self.succeed_at = succeed_at
        self.up = False
        self.active = None
        self.disconnects = 0
        self.name = None

    def WLAN(self, i):
        return _WLAN(self)

    def hostname(self, n):
        self.name = n


class _WDT:
    def __init__(self, hw, timeout=None):
        hw.wdt = self
        self.timeout = timeout
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class _Machine:
    def __init__(self):
        self.wdt = None
        self.resets = 0

    def WDT(self, timeout=None):
        return _WDT(self, timeout)

    def unique_id(self):
        return b"\x24\x0a\xc4\x01\x02\x03"

    def reset(self):
        self.resets += 1


NET = _Network()
MACHINE = _Machine()
sys.modules["network"] = NET
sys.modules["machine"] = MACHINE

CFG = {"name": "n7", "ssid": "drawer", "psk": "secret", "wifi_wait_ms": 100,
       "wifi_backoff_ms": 20, "wifi_check_ms": 30}


def test_wifi_connects_with_backoff():
    from ohnode import wifi
    import time

    NET.reset(succeed_at=3)
    feeds = [0]

    def feed():
        feeds[0] += 1

    async def go():
        t = time.ticks_ms()
        ip = await wifi.up(CFG, feed)
        return ip, time.ticks_diff(time.ticks_ms(), t)

    ip, took = asyncio.run(go())
    mptest.eq(ip, "192.168.4.7", "address")
    mptest.eq(NET.attempts, [("drawer", "secret")] * 3, "three attempts with the configured credentials")
    mptest.eq(NET.disconnects, 2, "a failed attempt is torn down")
    mptest.eq(NET.name, "n7", "hostname is the node name")
    mptest.check(NET.active is True, "interface activated")
    # two waits of 100 ms plus back-offs of 20 then 40 ms
    mptest.check(took >= 2 * 100 + 20 + 40, "back-off respected: %d ms" % took)
    mptest.check(feeds[0] > 0, "the watchdog is fed while waiting")


def test_wifi_reconnects_after_drop():
    from ohnode import wifi

    NET.reset(succeed_at=1)

    async def go():
        await wifi.up(CFG, lambda: None)
        NET.up = False  # the access point went away
        NET.succeed_at = 3  # comes back on the 2nd new attempt
        for _ in range(100):
            await asyncio.sleep_ms(20)
            if NET.up:
                return True
        return False

    mptest.check(asyncio.run(go()), "link restored by the keeper task")
    mptest.eq(len(NET.attempts), 3, "attempts: 1 at start, 2 after the drop")


def test_mcu_watchdog_identity_reset():
    from ohnode import plat_esp32, plat_esp8266, plat_rp2

    plat_esp32.wdt_start(10000)
    mptest.eq(MACHINE.wdt.timeout, 10000, "esp32 watchdog timeout")
    plat_esp32.wdt_feed()
    plat_esp32.wdt_feed()
    mptest.eq(MACHINE.wdt.feeds, 2, "feeds reach the hardware watchdog")
    plat_rp2.wdt_start(10000)
    mptest.eq(MACHINE.wdt.timeout, 8300, "rp2 watchdog capped at 8.3 s")
    plat_esp8266.wdt_start(10000)
    mptest.eq(MACHINE.wdt.timeout, None, "esp8266 watchdog takes no timeout")
    mptest.eq(plat_esp32.uid(), b"\x24\x0a\xc4\x01\x02\x03", "identity from machine.unique_id")
    plat_rp2.reset()
    mptest.eq(MACHINE.resets, 1, "reset is machine.reset")
    mptest.eq(plat_esp32.mount({}), "", "littlefs root is / on a real board")


def test_mcu_task_id_outlasts_a_reset():
    # The id of a running task is on flash (/t.run) until the watchdog is
    # re-armed for idle: a reset in between leaves it for wdt_lost() at boot.
    import os
    from ohnode import plat_mcu, plat_esp32, plat_rp2

    plat_mcu._RUN = "%s/ohmp-%s.run" % (os.getenv("TMPDIR") or "/tmp", os.urandom(4).hex())
    try:
        plat_esp32.wdt_start(12000, 42)
        mptest.eq(MACHINE.wdt.timeout, 12000, "armed for the task")
        mptest.eq(plat_esp32.wdt_lost(), 42, "a reset now: task 42 was lost")
        mptest.eq(plat_esp32.wdt_lost(), None, "told once")
        plat_rp2.wdt_start(30000, 7)
        mptest.eq(MACHINE.wdt.timeout, 8300, "rp2: capped, the task is cut at 8.3 s")
        plat_rp2.wdt_start(10000)
        mptest.eq(plat_rp2.wdt_lost(), None, "finished: nothing lost")
    finally:
        try:
            os.remove(plat_mcu._RUN)
        except OSError:
            pass


def test_node_picks_platform_by_port():
    from ohnode import node

    mptest.eq(node._platform().__name__, "ohnode.plat_unix", "unix port runs the virtual board layer")


mptest.run(globals())
