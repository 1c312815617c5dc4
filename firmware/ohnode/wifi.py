# Station-mode Wi-Fi bring-up shared by the ESP32, ESP8266 and Pico W
# platform layers: connect with the configured credentials, retry with
# exponential back-off, and come back after a drop.
import asyncio
from micropython import const

_MAX_BACKOFF_MS = const(60000)


async def up(cfg, feed):
    import network

    w = network.WLAN(network.STA_IF)
    w.active(True)
    try:
        network.hostname(cfg.get("name", "openheap"))
    except (AttributeError, ValueError, OSError):
        pass
    back = 500
    while not w.isconnected():
        w.connect(cfg["ssid"], cfg.get("psk", ""))
        for _ in range(20):
            if w.isconnected():
                break
            feed()
            await asyncio.sleep_ms(250)
        if not w.isconnected():
            w.disconnect()
            feed()
            await asyncio.sleep_ms(back)
            back = min(back * 2, _MAX_BACKOFF_MS)
    asyncio.create_task(_keep(w, cfg, feed))
    return w.ifconfig()[0]


async def _keep(w, cfg, feed):
    # Reconnect after a drop, with the same back-off.
    back = 500
    while True:
        await asyncio.sleep_ms(5000)
        if w.isconnected():
            back = 500
            continue
        w.connect(cfg["ssid"], cfg.get("psk", ""))
        await asyncio.sleep_ms(back)
        back = min(back * 2, _MAX_BACKOFF_MS)
