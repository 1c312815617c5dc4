# RP2040 Pico W: the shared MCU layer (its WDT allows at most 8.3 s).
from ohnode.plat_mcu import config, mount, net_up, uid, wdt_feed, wdt_lost, reset, ticks  # noqa
from ohnode import plat_mcu as _m


def wdt_start(ms, task=None):
    # (A task needing longer is reset at 8.3 s.)
    _m.wdt_start(min(ms, 8300), task)
