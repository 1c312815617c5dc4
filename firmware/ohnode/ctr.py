# AES-128-CTR (NIST SP 800-38A 6.5) from the ECB mode of cryptolib, the one
# every port has (the unix port and stock ESP32/ESP8266 builds have ECB and
# CBC, no CTR): the keystream is ECB over the counter blocks, the counter a
# 128-bit big-endian integer incremented per 16 bytes. Imported only for a
# task that computes next to the data (TK_RANGE).
from micropython import const

_ECB = const(1)


def xor(key, ctr, buf):
    # XOR buf (a bytearray) in place with the keystream of key that starts at
    # counter block ctr: decrypts (or encrypts) it.
    import cryptolib

    aes = cryptolib.aes(key, _ECB)
    c = bytearray(ctr)
    ks = bytearray(16)
    n = len(buf)
    o = 0
    while o < n:
        aes.encrypt(c, ks)
        k = n - o if n - o < 16 else 16
        for i in range(k):
            buf[o + i] ^= ks[i]
        o += 16
        i = 15
        while i >= 0:  # next counter block
            c[i] = (c[i] + 1) & 0xFF
            if c[i]:
                break
            i -= 1
