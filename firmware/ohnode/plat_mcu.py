# Platform layer shared by real boards (ESP32 family, ESP8266, RP2040 Pico W):
# configuration in /oh.json on the board's littlefs root, Wi-Fi from it,
# identity from machine.unique_id(), and the hardware watchdog.
import time

_wdt = None


def config():
    import json

    with open("/oh.json") as f:
        return json.load(f)


def mount(cfg):
    return ""  # littlefs is already mounted at / by the port's boot code


async def net_up(cfg):
    from ohnode import wifi

    return await wifi.up(cfg, wdt_feed)


def uid():
    import machine

    return machine.unique_id()


def wdt_start(ms):
    global _wdt
    import machine

    _wdt = machine.WDT(timeout=ms)


def wdt_feed():
    if _wdt is not None:
        _wdt.feed()


def reset():
    import machine

    machine.reset()


ticks = (time.ticks_ms, time.ticks_diff)
