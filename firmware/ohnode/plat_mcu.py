# Platform layer shared by real boards (ESP32 family, ESP8266, RP2040 Pico W):
# configuration in /oh.json on the board's littlefs root, Wi-Fi from it,
# identity from machine.unique_id(), and the hardware watchdog.
import time

_wdt = None
_RUN = "/t.run"  # id of the task running; a reset leaves it (wdt_lost)
_run = False


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


def wdt_start(ms, task=None):
    # Arm (or re-arm: esp32 reconfigures) for ms; task: id of the task about
    # to run, written to flash until the next wdt_start.
    global _wdt
    import machine

    try:
        _wdt = machine.WDT(timeout=ms)
    except OSError:  # a port that cannot re-arm keeps its first timeout
        wdt_feed()
    mark(task)


def mark(task):
    global _run
    if task is not None:
        with open(_RUN, "w") as f:
            f.write(str(task))
        _run = True
    elif _run:
        import os

        _run = False
        try:
            os.remove(_RUN)
        except OSError:
            pass


def wdt_lost():
    # Id of the task that ran when the board last reset, or None (at boot).
    import os

    try:
        with open(_RUN) as f:
            t = int(f.read())
    except (OSError, ValueError):
        return None
    os.remove(_RUN)
    return t


def wdt_feed():
    if _wdt is not None:
        _wdt.feed()


def reset():
    import machine

    machine.reset()


ticks = (time.ticks_ms, time.ticks_diff)
