"""A counting UDP relay on loopback, for measuring bytes on the wire.

    python bench/udprelay.py TARGET_HOST TARGET_PORT

binds a free port on 127.0.0.1, prints ``READY <port>`` on stdout and then
forwards every datagram a client sends to that port on to TARGET (from one
upstream socket per client address, so that replies find their way back) and
every reply back to its client. It counts datagrams and UDP payload bytes in
each direction. Commands on stdin, one per line, each answered with one JSON
line on stdout:

    read    -> {"c2s_dgrams", "c2s_bytes", "s2c_dgrams", "s2c_bytes"}
    reset   -> the counters before resetting them to zero
    quit    -> the counters, then the relay exits (so does EOF on stdin)

IP-level bytes are the UDP payload plus 8 (UDP header) plus 20 (IPv4 header,
no options) per datagram; the caller adds those. Datagrams of up to 64 KiB
are relayed whole. The relay runs in its own process so that it neither
shares a GIL with the client nor is timed: throughput is measured without it.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    target = (argv[0], int(argv[1]))
    sel = selectors.DefaultSelector()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.setblocking(False)
    for s in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        lsock.setsockopt(socket.SOL_SOCKET, s, 1 << 20)
    sel.register(lsock, selectors.EVENT_READ, None)
    sel.register(sys.stdin, selectors.EVENT_READ, "ctl")
    ups: dict[tuple, socket.socket] = {}  # client address -> upstream socket
    c = {"c2s_dgrams": 0, "c2s_bytes": 0, "s2c_dgrams": 0, "s2c_bytes": 0}
    print("READY %d" % lsock.getsockname()[1], flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == "ctl":
                line = sys.stdin.readline()
                cmd = line.strip()
                print(json.dumps(c), flush=True)
                if cmd == "reset":
                    for k in c:
                        c[k] = 0
                elif cmd == "quit" or not line:
                    return 0
            elif key.data is None:  # from a client
                while True:
                    try:
                        data, peer = lsock.recvfrom(65536)
                    except BlockingIOError:
                        break
                    up = ups.get(peer)
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.bind(("127.0.0.1", 0))
                        up.setblocking(False)
                        up.connect(target)
                        ups[peer] = up
                        sel.register(up, selectors.EVENT_READ, peer)
                    c["c2s_dgrams"] += 1
                    c["c2s_bytes"] += len(data)
                    try:
                        up.send(data)
                    except OSError:
                        pass  # e.g. ECONNREFUSED from an earlier datagram: counted, lost
            else:  # from the target, for client key.data
                up = key.fileobj
                while True:
                    try:
                        data = up.recv(65536)
                    except BlockingIOError:
                        break
                    except OSError:
                        break  # ICMP port unreachable, reported once on a connected socket
                    c["s2c_dgrams"] += 1
                    c["s2c_bytes"] += len(data)
                    try:
                        lsock.sendto(data, key.data)
                    except OSError:
                        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
