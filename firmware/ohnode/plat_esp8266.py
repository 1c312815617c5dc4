# ESP8266: the shared MCU layer; its WDT cannot be configured, so
# machine.WDT() takes no timeout there.
from ohnode.plat_mcu import config, mount, net_up, uid, wdt_feed, wdt_lost, reset, ticks  # noqa
from ohnode import plat_mcu as _m


def wdt_start(ms, task=None):
    # (A task longer than the fixed hardware timeout, a few seconds, resets.)
    import machine

    _m._wdt = machine.WDT()
    _m.mark(task)
