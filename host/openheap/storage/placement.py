"""Where shares go: rendezvous hashing, zones and servers of happiness.

Every file ranks the nodes by ``tagged_hash(b"openheap:placement:v1", si +
node_id)``, highest first, so that each file spreads differently and a node
joining or leaving moves few shares. :func:`place` turns that ranking into a
plan (one share per node while nodes suffice, spread over zones) and checks
the servers-of-happiness rule before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from openheap.errors import UsageError
from openheap.storage.errors import NotHappy
from openheap.storage.hashing import TAG_PLACEMENT, tagged_hash

__all__ = ["Node", "rank", "place", "happiness", "check_happy", "format_size"]


@dataclass(frozen=True)
class Node:
    """A candidate node: its id, free bytes, largest share it accepts, zone."""

    id: str
    free: int
    max_share: int | None = None
    zone: str | None = None

    def room_for(self, share_size: int) -> int:
        """How many shares of ``share_size`` bytes fit on this node."""
        if self.max_share is not None and share_size > self.max_share:
            return 0
        return self.free // max(1, share_size)


def _id_bytes(node_id) -> bytes:
    return node_id if isinstance(node_id, bytes) else str(node_id).encode("utf-8")


def _node_id(node):
    return getattr(node, "id", node)


def rank(storage_index: bytes, nodes: Iterable) -> list:
    """Node ids (``nodes`` may be ids or :class:`Node`) in rendezvous order for a file."""
    ids = [_node_id(nd) for nd in nodes]
    return sorted(ids, key=lambda i: (tagged_hash(TAG_PLACEMENT, bytes(storage_index) + _id_bytes(i)),
                                      _id_bytes(i)), reverse=True)


def format_size(n: int) -> str:
    """``"100 kB"``, ``"1.5 MB"``: a byte count for people."""
    if n < 1000:
        return "%d byte%s" % (n, "" if n == 1 else "s")
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000.0
        if n < 1000 or unit == "TB":
            return "%s %s" % (("%.3g" % n), unit)


def _spread(storage_index: bytes, nodes: list[Node]) -> list[Node]:
    """Rendezvous order, reshuffled round by round over zones: first the best
    node of every zone (in rank order), then the second best of each, ...
    A node without a zone is a zone of its own."""
    by_id = {nd.id: nd for nd in nodes}
    order = rank(storage_index, by_id)
    seen: dict = {}
    keyed = []
    for pos, nid in enumerate(order):
        nd = by_id[nid]
        zone = ("zone", nd.zone) if nd.zone is not None else ("node", nid)
        keyed.append(((seen.get(zone, 0), pos), nd))
        seen[zone] = seen.get(zone, 0) + 1
    return [nd for _, nd in sorted(keyed, key=lambda t: t[0])]


def place(storage_index: bytes, nodes: Iterable[Node], n: int, happy: int, k: int,
          share_size: int, existing=None) -> dict[int, str]:
    """Plan where each of the n shares goes: ``{shnum: node id}``.

    Nodes without room for one share are skipped; each node gets at most one
    share while there are enough nodes (otherwise shares go round-robin,
    within each node's room); zones are used in turn. ``existing``
    (``{shnum: node}``, ``{shnum: [nodes]}`` or pairs) are shares already
    stored, e.g. before a repair: only the other share numbers are planned,
    preferably on nodes holding nothing yet. Raises :class:`NotHappy` with
    the reason when the plan (with ``existing``) cannot reach ``happy``.
    Shares that fit nowhere are left out of the plan.
    """
    if not 1 <= k <= happy <= n <= 256:
        raise UsageError("k=%d, happy=%d, n=%d is impossible: 1 <= k <= happy <= n <= 256 is required"
                         % (k, happy, n))
    nodes = list(nodes)
    if len({nd.id for nd in nodes}) != len(nodes):
        raise UsageError("two candidate nodes have the same id")
    have = _pairs(existing or {})
    busy = {node for _, node in have}
    todo = [s for s in range(n) if s not in {shnum for shnum, _ in have}]
    room = {nd.id: nd.room_for(share_size) for nd in nodes}
    order = _spread(storage_index, [nd for nd in nodes if room[nd.id] > 0])
    plan: dict[int, str] = {}
    for nid in [nd.id for nd in order if nd.id not in busy]:  # one share per node holding none
        if not todo:
            break
        plan[todo.pop(0)] = nid
        room[nid] -= 1
    cycle = [nd.id for nd in order]
    while todo and any(room[nid] > 0 for nid in cycle):  # then round-robin within each node's room
        for nid in cycle:
            if todo and room[nid] > 0:
                plan[todo.pop(0)] = nid
                room[nid] -= 1
    got = happiness(have + list(plan.items()))
    if got < happy:
        usable = len({nd.id for nd in order} | busy)
        if not nodes and not busy:
            msg = "no nodes are registered; %d are needed for happiness %d" % (happy, happy)
        elif usable < happy:
            msg = "only %d of %d nodes %s room for a share of %s; %d are needed for happiness %d" % (
                usable, len({nd.id for nd in nodes} | busy), "has" if usable == 1 else "have",
                format_size(share_size), happy, happy)
        else:
            msg = _unhappy_message(got, happy, k)
        raise NotHappy(msg, got, happy)
    return plan


def _pairs(assignments) -> list[tuple[int, object]]:
    if isinstance(assignments, Mapping):
        out = []
        for shnum, where in assignments.items():
            if isinstance(where, (str, bytes)) or not isinstance(where, Iterable):
                out.append((shnum, where))
            else:
                out.extend((shnum, w) for w in where)
        return out
    return [(s, w) for s, w in assignments]


def happiness(assignments) -> int:
    """Servers of happiness: the size of a maximum matching between shares
    and the nodes that hold them (Tahoe's definition).

    ``assignments`` is ``{shnum: node}``, ``{shnum: [nodes]}`` or pairs
    ``(shnum, node)``. Five shares on one node count 1; the same share on
    two nodes counts 1.
    """
    holders: dict[object, set] = {}
    for shnum, node in _pairs(assignments):
        holders.setdefault(node, set()).add(shnum)
    match: dict[int, object] = {}  # shnum -> node

    def augment(node, visited: set) -> bool:
        for shnum in holders[node]:
            if shnum in visited:
                continue
            visited.add(shnum)
            if shnum not in match or augment(match[shnum], visited):
                match[shnum] = node
                return True
        return False

    return sum(1 for node in holders if augment(node, set()))


def _unhappy_message(got: int, happy: int, k: int | None) -> str:
    msg = "the shares could be placed on only %d distinct node%s, but happiness %d needs %d" % (
        got, "" if got == 1 else "s", happy, happy)
    if k is not None:
        msg += ", so that any %d of them can rebuild the file" % k
    return msg


def check_happy(assignments, happy: int, k: int | None = None) -> int:
    """Return :func:`happiness` of ``assignments`` or raise :class:`NotHappy`
    explaining the shortfall (e.g. after some uploads failed)."""
    got = happiness(assignments)
    if got < happy:
        raise NotHappy(_unhappy_message(got, happy, k), got, happy)
    return got
