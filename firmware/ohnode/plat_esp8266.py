# ESP8266: the shared MCU layer; its WDT cannot be configured, so
# machine.WDT() takes no timeout there.
from ohnode.plat_mcu import config, mount, net_up, uid, wdt_feed, reset, ticks  # noqa
from ohnode import plat_mcu as _m


def wdt_start(ms):
    import machine

    _m._wdt = machine.WDT()
