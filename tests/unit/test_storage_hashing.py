"""Tagged hashes and Merkle trees: structure, chains, verification."""

from __future__ import annotations

import hashlib

import pytest

from openheap.storage.hashing import (PAD_HASH, TAG_NODE, HashTree, VerifiedTree, chain_indices,
                                      netstring, next_power_of_two, tagged_hash, tree_is_consistent,
                                      tree_size, verify_leaf)


def leaves(count):
    return [tagged_hash(b"openheap:test:v1", b"%d" % i) for i in range(count)]


def test_tagged_hash_is_sha256_of_netstring_tag_and_data():
    assert netstring(b"abc") == b"3:abc,"
    assert netstring(b"") == b"0:,"
    assert tagged_hash(b"openheap:x:v1", b"data") == hashlib.sha256(b"13:openheap:x:v1,data").digest()
    assert tagged_hash(b"a", b"bc") != tagged_hash(b"ab", b"c")
    assert PAD_HASH == hashlib.sha256(b"15:openheap:pad:v1,").digest()


def test_power_of_two_and_tree_size():
    assert [next_power_of_two(x) for x in (0, 1, 2, 3, 4, 5, 9)] == [1, 1, 2, 4, 4, 8, 16]
    assert [tree_size(x) for x in (1, 2, 3, 10)] == [1, 3, 7, 31]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 13])
def test_tree_shape(count):
    ls = leaves(count)
    t = HashTree(ls)
    p = next_power_of_two(count)
    assert len(t.nodes) == 2 * p - 1
    assert t.nodes[p - 1:p - 1 + count] == ls
    assert all(h == PAD_HASH for h in t.nodes[p - 1 + count:])
    for i in range(p - 1):
        assert t.nodes[i] == tagged_hash(TAG_NODE, t.nodes[2 * i + 1] + t.nodes[2 * i + 2])
    assert t.root == t.nodes[0]
    assert tree_is_consistent(t.nodes)


def test_single_leaf_tree_is_the_leaf():
    (leaf,) = leaves(1)
    t = HashTree([leaf])
    assert t.root == leaf and t.chain(0) == []
    assert verify_leaf(leaf, 0, leaf, [], 1)


def test_two_leaves_root():
    a, b = leaves(2)
    assert HashTree([a, b]).root == tagged_hash(TAG_NODE, a + b)


@pytest.mark.parametrize("count", [2, 3, 5, 8, 10])
def test_every_chain_verifies(count):
    ls = leaves(count)
    t = HashTree(ls)
    for i, leaf in enumerate(ls):
        chain = t.chain(i)
        assert [j for j, _ in chain] == chain_indices(i, count)
        assert len(chain) == next_power_of_two(count).bit_length() - 1
        assert verify_leaf(t.root, i, leaf, chain, count)


def test_wrong_leaf_chain_or_index_fails():
    ls = leaves(6)
    t = HashTree(ls)
    chain = t.chain(2)
    assert not verify_leaf(t.root, 2, ls[3], chain, 6)  # another leaf
    assert not verify_leaf(t.root, 3, ls[2], chain, 6)  # another position
    assert not verify_leaf(t.root, 2, ls[2], chain[:-1], 6)  # short chain
    assert not verify_leaf(t.root, 2, ls[2], chain[::-1], 6)  # wrong order
    bad = list(chain)
    bad[1] = (bad[1][0], bytes(32))
    assert not verify_leaf(t.root, 2, ls[2], bad, 6)
    assert not verify_leaf(t.root, 9, ls[2], chain, 6)  # outside the tree
    assert not verify_leaf(bytes(32), 2, ls[2], chain, 6)


def test_tree_is_consistent_rejects_damage():
    t = HashTree(leaves(5))
    for i in range(len(t.nodes)):
        nodes = list(t.nodes)
        nodes[i] = bytes(32)
        assert not tree_is_consistent(nodes)
    assert not tree_is_consistent(t.nodes[:-1])  # not 2P-1 nodes
    assert not tree_is_consistent([])


def test_verified_tree():
    ls = leaves(5)
    t = HashTree(ls)
    v = VerifiedTree(t.nodes, t.root, 5)
    assert all(v.check_leaf(i, ls[i]) for i in range(5))
    assert not v.check_leaf(1, ls[0])
    with pytest.raises(IndexError):
        v.leaf(5)
    with pytest.raises(ValueError, match="root"):
        VerifiedTree(t.nodes, bytes(32), 5)
    with pytest.raises(ValueError, match="nodes"):
        VerifiedTree(t.nodes, t.root, 9)
    nodes = list(t.nodes)
    nodes[-1] = bytes(32)
    with pytest.raises(ValueError, match="inconsistent"):
        VerifiedTree(nodes, t.root, 5)
    # a tree over 8 "leaves" whose last 3 are not padding is not a tree of 5
    t8 = HashTree(ls + leaves(3))
    with pytest.raises(ValueError, match="padding"):
        VerifiedTree(t8.nodes, t8.root, 5)


def test_leaves_must_be_hashes():
    with pytest.raises(ValueError):
        HashTree([b"short"])
