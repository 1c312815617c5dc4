# ESP32, ESP32-S3, ESP32-C3: nothing beyond the shared MCU layer yet.
from ohnode.plat_mcu import config, mount, net_up, uid, wdt_start, wdt_feed, wdt_lost, reset, ticks  # noqa
