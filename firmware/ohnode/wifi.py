# Station-mode Wi-Fi bring-up shared by the ESP32, ESP8266 and Pico W
# platform layers: connect with the configured credentials, retry with
# exponential back-off, and reconnect after a drop (checked every few
# seconds by a background task). Timings can be overridden in the config
# (wifi_wait_ms, wifi_backoff_ms, wifi_check_ms).
import asyncio
from micropython import const

_WAIT_MS = const(5000)  # time one connect attempt may take
_BACKOFF_MS = const(500)  # first pause after a failed attempt
_MAX_BACKOFF_MS = const(60000)
_CHECK_MS = const(5000)  # link check period once up
_POLL_MS = const(50)


async def _connect(w, cfg, feed):
    # Try until connected; returns the number of attempts made.
    wait = cfg.get("wifi_wait_ms", _WAIT_MS)
    back = cfg.get("wifi_backoff_ms", _BACKOFF_MS)
    n = 0
    while True:
        n += 1
        w.connect(cfg["ssid"], cfg.get("psk", ""))
        t = 0
        while t < wait:
            if w.isconnected():
                return n
            feed()
            await asyncio.sleep_ms(_POLL_MS)
            t += _POLL_MS
        w.disconnect()
        feed()
        await asyncio.sleep_ms(back)
        back = min(back * 2, _MAX_BACKOFF_MS)


async def up(cfg, feed):
    # Bring the station interface up; returns our IPv4 address.
    import network

    w = network.WLAN(network.STA_IF)
    w.active(True)
    try:
        network.hostname(cfg.get("name", "openheap"))
    except (AttributeError, ValueError, OSError):
        pass
    await _connect(w, cfg, feed)
    asyncio.create_task(_keep(w, cfg, feed))
    return w.ifconfig()[0]


async def _keep(w, cfg, feed):
    while True:
        await asyncio.sleep_ms(cfg.get("wifi_check_ms", _CHECK_MS))
        if not w.isconnected():
            await _connect(w, cfg, feed)
