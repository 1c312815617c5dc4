# Wall-clock time for a board without a real-time clock: epoch seconds learnt
# from the coordinator's answers (RR_TIME), carried forward with ticks_ms.
# Before the first answer the node has no time (now() is None), and nothing
# that needs it (lease expiry, renewal) happens.
from time import ticks_add
from micropython import const

# ticks_diff is right only for spans below half the ticks period (2**29 ms,
# about 6 days): re-anchor after an hour, so any caller at least every few
# days (the lease sweep runs every 10 minutes) keeps the count right.
_ANCHOR_S = const(3600)


class Epoch:
    def __init__(self, ticks):
        self._ticks = ticks  # (ticks_ms, ticks_diff)
        self._e = None  # epoch seconds at tick _t
        self._t = 0

    def set(self, e):
        self._e = e
        self._t = self._ticks[0]()

    def now(self):
        # Epoch seconds, or None before the first answer.
        e = self._e
        if e is None:
            return None
        s = self._ticks[1](self._ticks[0](), self._t) // 1000
        if s >= _ANCHOR_S:
            self._e = e = e + s
            self._t = ticks_add(self._t, s * 1000)
            s = 0
        return e + s
