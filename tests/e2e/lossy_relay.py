"""A lossy UDP relay on loopback for tests: it sits between the host and some
boards and drops a share of the datagrams in both directions.

    with LossyRelay([(b.host, b.port) for b in boards], loss=0.2, seed=1) as relay:
        peers = [engine.Peer(b.name, *relay.front[i]) for i, b in enumerate(boards)]
        ...
    relay.stats  # {"up": .., "up_dropped": .., "up_bytes": .., "down": .., ...}

"up" and "down" count the datagrams that arrived at the relay, "_dropped"
those it dropped, "_bytes" the UDP payload bytes it passed on (datagrams
not dropped).

One front socket per board (on 127.0.3.<i+1>, an address of its own, as the
boards have); every client address that talks to a front socket gets a back
socket of its own towards the board, so answers find their way back. All
sockets are served by one thread with a selector; the random numbers come
from one seeded generator, so a run's drop pattern depends only on the seed
and the order of the datagrams.
"""

from __future__ import annotations

import random
import selectors
import socket
import threading


class LossyRelay:
    def __init__(self, targets: list[tuple[str, int]], *, loss: float = 0.2, seed: int = 0,
                 front_host: str = "127.0.3.%d"):
        self.targets = list(targets)
        self.loss = loss
        self.rng = random.Random(seed)
        self.stats = {"up": 0, "up_dropped": 0, "up_bytes": 0,
                      "down": 0, "down_dropped": 0, "down_bytes": 0}
        self.sel = selectors.DefaultSelector()
        self.front: list[tuple[str, int]] = []
        self._fronts: list[socket.socket] = []
        self._backs: dict[tuple[int, tuple], socket.socket] = {}
        self._stop = threading.Event()
        for i, _ in enumerate(self.targets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((front_host % (i + 1), 0))
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, ("front", i))
            self._fronts.append(s)
            self.front.append(s.getsockname())
        self._thread = threading.Thread(target=self._run, name="lossy-relay", daemon=True)

    def _drop(self, direction: str, data: bytes) -> bool:
        self.stats[direction] += 1
        if self.rng.random() < self.loss:
            self.stats[direction + "_dropped"] += 1
            return True
        self.stats[direction + "_bytes"] += len(data)
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.sel.select(timeout=0.1):
                kind, *rest = key.data
                sock = key.fileobj
                try:
                    data, addr = sock.recvfrom(65535)
                except OSError:  # e.g. ICMP port unreachable from a dead board
                    continue
                if kind == "front":
                    i = rest[0]
                    back = self._backs.get((i, addr))
                    if back is None:
                        back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        back.bind((self.front[i][0], 0))
                        back.setblocking(False)
                        self.sel.register(back, selectors.EVENT_READ, ("back", i, addr))
                        self._backs[(i, addr)] = back
                    if not self._drop("up", data):
                        try:
                            back.sendto(data, self.targets[i])
                        except OSError:
                            pass
                else:
                    i, client = rest
                    if not self._drop("down", data):
                        try:
                            self._fronts[i].sendto(data, client)
                        except OSError:
                            pass

    def start(self) -> "LossyRelay":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for s in self._fronts + list(self._backs.values()):
            self.sel.unregister(s)
            s.close()
        self.sel.close()

    def __enter__(self) -> "LossyRelay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
