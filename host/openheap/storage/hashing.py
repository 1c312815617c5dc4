"""Tagged SHA-256 and Merkle hash trees.

Every hash openheap computes is *tagged*: ``SHA-256(netstring(tag) + data)``
with a tag ``b"openheap:<purpose>:v1"``, so that a hash made for one purpose
can never be mistaken for one made for another (as Tahoe-LAFS does).

A hash tree is stored as a flat array of ``2*P - 1`` nodes, ``P`` being the
number of leaves rounded up to a power of two: index 0 is the root and the
children of node ``i`` are ``2i+1`` and ``2i+2``, so leaf ``j`` is node
``P - 1 + j``. Missing leaves are the pad hash.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

__all__ = [
    "HASH_LEN",
    "TAG_PAD", "TAG_NODE", "TAG_BLOCK", "TAG_SEGMENT", "TAG_UEB", "TAG_CONVERGENCE",
    "TAG_STORAGE_INDEX", "TAG_CAP_CHECK", "TAG_PLACEMENT",
    "netstring", "tagged_hash", "next_power_of_two", "tree_size",
    "HashTree", "verify_leaf", "chain_indices", "tree_is_consistent", "VerifiedTree",
]

HASH_LEN = 32

TAG_PAD = b"openheap:pad:v1"
TAG_NODE = b"openheap:node:v1"
TAG_BLOCK = b"openheap:block:v1"
TAG_SEGMENT = b"openheap:segment:v1"
TAG_UEB = b"openheap:ueb:v1"
TAG_CONVERGENCE = b"openheap:convergence:v1"
TAG_STORAGE_INDEX = b"openheap:storage-index:v1"
TAG_CAP_CHECK = b"openheap:cap-check:v1"
TAG_PLACEMENT = b"openheap:placement:v1"


def netstring(s: bytes) -> bytes:
    """``b"<len>:<s>,"``, the unambiguous framing Tahoe-LAFS uses."""
    return b"%d:%s," % (len(s), s)


def tagged_hash(tag: bytes, data: bytes) -> bytes:
    """SHA-256 of ``netstring(tag) + data`` (32 bytes)."""
    h = hashlib.sha256(netstring(tag))
    h.update(data)
    return h.digest()


PAD_HASH = tagged_hash(TAG_PAD, b"")


def _node(left: bytes, right: bytes) -> bytes:
    return tagged_hash(TAG_NODE, left + right)


def next_power_of_two(x: int) -> int:
    """The smallest power of two >= ``x`` (1 for 0 and 1)."""
    p = 1
    while p < x:
        p <<= 1
    return p


def tree_size(num_leaves: int) -> int:
    """Number of nodes (``2P - 1``) of a tree over ``num_leaves`` leaves."""
    return 2 * next_power_of_two(num_leaves) - 1


def chain_indices(leaf_index: int, num_leaves: int) -> list[int]:
    """Node indices of the siblings on the path from a leaf to the root, leaf first."""
    p = next_power_of_two(num_leaves)
    if not 0 <= leaf_index < p:
        raise IndexError("leaf %d is outside a tree of %d leaves" % (leaf_index, num_leaves))
    i = p - 1 + leaf_index
    out = []
    while i > 0:
        out.append(i + 1 if i % 2 else i - 1)
        i = (i - 1) // 2
    return out


class HashTree:
    """A complete Merkle tree over ``leaves`` (32-byte hashes).

    ``nodes`` is the flat array (root first), ``root`` is ``nodes[0]``.
    """

    def __init__(self, leaves: Iterable[bytes]):
        leaves = list(leaves)
        for leaf in leaves:
            if len(leaf) != HASH_LEN:
                raise ValueError("a leaf must be a %d-byte hash" % HASH_LEN)
        self.num_leaves = len(leaves)
        p = next_power_of_two(len(leaves))
        nodes: list[bytes] = [b""] * (p - 1) + leaves + [PAD_HASH] * (p - len(leaves))
        for i in range(p - 2, -1, -1):
            nodes[i] = _node(nodes[2 * i + 1], nodes[2 * i + 2])
        self.nodes = nodes

    @property
    def root(self) -> bytes:
        """The root hash."""
        return self.nodes[0]

    def leaf(self, leaf_index: int) -> bytes:
        """The hash of leaf ``leaf_index``."""
        return self.nodes[len(self.nodes) // 2 + leaf_index]

    def chain(self, leaf_index: int) -> list[tuple[int, bytes]]:
        """``[(node_index, hash), ...]``: the siblings needed to go from a leaf to the root."""
        return [(i, self.nodes[i]) for i in chain_indices(leaf_index, len(self.nodes) // 2 + 1)]


def verify_leaf(root: bytes, leaf_index: int, leaf_hash: bytes,
                chain: Sequence[tuple[int, bytes]], num_leaves: int) -> bool:
    """True when ``leaf_hash`` at ``leaf_index`` hashes up to ``root`` through ``chain``.

    The chain must hold exactly the sibling nodes :meth:`HashTree.chain`
    returns, in that order.
    """
    try:
        expected = chain_indices(leaf_index, num_leaves)
    except IndexError:
        return False
    if [i for i, _ in chain] != expected:
        return False
    p = next_power_of_two(num_leaves)
    i = p - 1 + leaf_index
    h = leaf_hash
    for sib, sib_hash in chain:
        if len(sib_hash) != HASH_LEN:
            return False
        h = _node(h, sib_hash) if i % 2 else _node(sib_hash, h)
        i = (i - 1) // 2
    return h == root


def tree_is_consistent(nodes: Sequence[bytes]) -> bool:
    """True when ``nodes`` is a well-formed flat tree: every internal node is
    the hash of its two children and every node is 32 bytes."""
    n = len(nodes)
    if n < 1 or (n + 1) & n:  # n + 1 must be a power of two
        return False
    if any(len(h) != HASH_LEN for h in nodes):
        return False
    return all(nodes[i] == _node(nodes[2 * i + 1], nodes[2 * i + 2]) for i in range(n // 2))


class VerifiedTree:
    """A full list of tree nodes checked once against a known root.

    Raises ``ValueError`` (with the problem) when the nodes are not a
    consistent tree or do not hash up to ``root``; afterwards
    :meth:`check_leaf` verifies a leaf hash with one comparison. This is the
    full-download counterpart of Tahoe's ``IncompleteHashTree``.
    """

    def __init__(self, nodes: Sequence[bytes], root: bytes, num_leaves: int):
        if len(nodes) != tree_size(num_leaves):
            raise ValueError("a tree of %d leaves has %d nodes, not %d"
                             % (num_leaves, tree_size(num_leaves), len(nodes)))
        if not tree_is_consistent(nodes):
            raise ValueError("its hash tree is inconsistent")
        if nodes[0] != root:
            raise ValueError("its hash tree does not match the expected root")
        p = next_power_of_two(num_leaves)
        if any(h != PAD_HASH for h in nodes[p - 1 + num_leaves:]):
            raise ValueError("its hash tree has a non-padding hash past the last leaf")
        self.nodes = list(nodes)
        self.num_leaves = num_leaves
        self._first_leaf = p - 1

    @property
    def root(self) -> bytes:
        """The verified root."""
        return self.nodes[0]

    def leaf(self, leaf_index: int) -> bytes:
        """The verified hash of leaf ``leaf_index``."""
        if not 0 <= leaf_index < self.num_leaves:
            raise IndexError("leaf %d is outside a tree of %d leaves" % (leaf_index, self.num_leaves))
        return self.nodes[self._first_leaf + leaf_index]

    def check_leaf(self, leaf_index: int, leaf_hash: bytes) -> bool:
        """True when ``leaf_hash`` is the verified leaf ``leaf_index``."""
        return self.leaf(leaf_index) == leaf_hash
