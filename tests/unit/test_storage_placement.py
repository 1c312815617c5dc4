"""Placement: rendezvous ranking, one share per node, zones, room, happiness."""

from __future__ import annotations

import collections

import pytest

from openheap.errors import UsageError
from openheap.storage.errors import NotHappy
from openheap.storage.hashing import tagged_hash
from openheap.storage.placement import Node, check_happy, format_size, happiness, place, rank

SI = bytes(range(16))
GB = 10 ** 9


def nodes(count, free=GB, zone=None, prefix="node"):
    return [Node("%s%02d" % (prefix, i), free, None, zone) for i in range(count)]


def test_rank_is_rendezvous_order_and_deterministic():
    ns = nodes(12)
    order = rank(SI, ns)
    assert order == rank(SI, list(reversed(ns))) == rank(SI, [n.id for n in ns])
    hashes = [tagged_hash(b"openheap:placement:v1", SI + i.encode()) for i in order]
    assert hashes == sorted(hashes, reverse=True)
    assert rank(bytes(16), ns) != order  # another file, another order


def test_rank_is_stable_when_a_node_leaves():
    ns = nodes(12)
    order = rank(SI, ns)
    gone = order[3]
    assert rank(SI, [n for n in ns if n.id != gone]) == [i for i in order if i != gone]


def test_one_share_per_node_when_nodes_suffice():
    ns = nodes(15)
    plan = place(SI, ns, n=10, happy=7, k=3, share_size=1000)
    assert sorted(plan) == list(range(10))
    assert len(set(plan.values())) == 10
    assert [plan[i] for i in range(10)] == rank(SI, ns)[:10]
    assert place(SI, ns, 10, 7, 3, 1000) == plan


def test_fewer_nodes_than_shares_go_round_robin():
    ns = nodes(4)
    plan = place(SI, ns, n=10, happy=4, k=3, share_size=1000)
    assert sorted(plan) == list(range(10))
    counts = collections.Counter(plan.values())
    assert sorted(counts.values()) == [2, 2, 3, 3]
    order = rank(SI, ns)
    assert [plan[i] for i in range(4)] == order and plan[4] == order[0]


def test_nodes_without_room_are_skipped():
    ns = nodes(8) + [Node("full", 999), Node("tiny-max", GB, max_share=999)]
    plan = place(SI, ns, n=8, happy=7, k=3, share_size=1000)
    assert "full" not in plan.values() and "tiny-max" not in plan.values()
    assert len(set(plan.values())) == 8


def test_room_limits_round_robin():
    ns = [Node("a", 2500), Node("b", 1000), Node("c", 10 ** 6)]
    plan = place(SI, ns, n=10, happy=3, k=2, share_size=1000)
    counts = collections.Counter(plan.values())
    assert counts["a"] == 2 and counts["b"] == 1 and counts["c"] == 7


def test_unplaceable_shares_are_left_out_when_happy_anyway():
    ns = [Node("a", 1000), Node("b", 1000), Node("c", 1000)]
    plan = place(SI, ns, n=5, happy=3, k=2, share_size=1000)
    assert len(plan) == 3 and happiness(plan) == 3


def test_zones_are_spread():
    ns = nodes(6, zone="kitchen", prefix="k") + nodes(6, zone="attic", prefix="a") + \
        nodes(2, zone="garage", prefix="g")
    plan = place(SI, ns, n=10, happy=7, k=3, share_size=1000)
    zone_of = {n.id: n.zone for n in ns}
    used = collections.Counter(zone_of[i] for i in plan.values())
    assert used == {"kitchen": 4, "attic": 4, "garage": 2}
    assert len(set(plan.values())) == 10
    # the first three shares go to the best node of each zone
    assert {zone_of[plan[i]] for i in range(3)} == {"kitchen", "attic", "garage"}


def test_zones_with_plain_rank_within_a_zone():
    ns = nodes(5, zone="z", prefix="z") + [Node("lone", GB)]
    plan = place(SI, ns, n=3, happy=2, k=2, share_size=10)
    assert "lone" in plan.values()
    z_order = [i for i in rank(SI, ns) if i.startswith("z")]
    assert z_order[0] in plan.values()


def test_not_happy_explains_why():
    ns = nodes(4, free=GB) + nodes(6, free=10, prefix="small")
    with pytest.raises(NotHappy) as info:
        place(SI, ns, n=10, happy=7, k=3, share_size=100_000)
    assert str(info.value) == ("only 4 of 10 nodes have room for a share of 100 kB; "
                               "7 are needed for happiness 7")
    assert (info.value.happiness, info.value.needed) == (4, 7)
    with pytest.raises(NotHappy, match="no nodes are registered"):
        place(SI, [], n=10, happy=7, k=3, share_size=1)
    with pytest.raises(NotHappy, match="only 1 of 1 nodes has room"):
        place(SI, nodes(1), n=3, happy=2, k=1, share_size=1)


def test_bad_placement_arguments():
    with pytest.raises(UsageError):
        place(SI, nodes(3), n=3, happy=4, k=3, share_size=1)
    with pytest.raises(UsageError):
        place(SI, nodes(3), n=3, happy=2, k=3, share_size=1)
    with pytest.raises(UsageError):
        place(SI, nodes(3) + nodes(1), n=3, happy=2, k=1, share_size=1)


@pytest.mark.parametrize("assignments,expected", [
    ({}, 0),
    ({0: "a", 1: "b", 2: "c"}, 3),
    ({0: "a", 1: "a", 2: "a", 3: "a"}, 1),  # several shares on one node count once
    ({0: ["a", "b", "c"]}, 1),  # one share on several nodes counts once
    ({0: ["a", "b"], 1: ["a"]}, 2),  # needs augmenting: 0->b, 1->a
    ([(0, "a"), (1, "a"), (1, "b"), (2, "b"), (2, "c"), (3, "c")], 3),
    ({0: ["a", "b"], 1: ["a", "b"], 2: ["a", "b"], 3: "c"}, 3),
    ({i: "n%d" % (i % 4) for i in range(10)}, 4),
    ([(s, "a") for s in range(5)] + [(0, "b"), (0, "c")], 2),
])
def test_happiness(assignments, expected):
    assert happiness(assignments) == expected


def test_check_happy():
    assert check_happy({0: "a", 1: "b", 2: "c"}, 3, k=2) == 3
    with pytest.raises(NotHappy) as info:
        check_happy({0: "a", 1: "a", 2: "b"}, 3, k=2)
    assert str(info.value) == ("the shares could be placed on only 2 distinct nodes, but happiness 3 "
                               "needs 3, so that any 2 of them can rebuild the file")


def test_format_size():
    assert [format_size(x) for x in (1, 999, 1000, 100_000, 1_500_000, 2 * 10 ** 9)] == \
        ["1 byte", "999 bytes", "1 kB", "100 kB", "1.5 MB", "2 GB"]


def test_existing_shares_stay_and_the_rest_go_to_other_nodes():
    ns = nodes(12)
    first = place(SI, ns, n=10, happy=7, k=3, share_size=1000)
    gone = {first[2], first[5]}  # two nodes died with shares 2 and 5
    existing = {s: nid for s, nid in first.items() if nid not in gone}
    alive = [n for n in ns if n.id not in gone]
    plan = place(SI, alive, n=10, happy=10, k=3, share_size=1000, existing=existing)
    assert sorted(plan) == [2, 5]
    assert not set(plan.values()) & set(existing.values())
    assert happiness({**existing, **plan}) == 10


def test_existing_shares_count_for_happiness():
    existing = {0: "a", 1: "b", 2: "c"}
    plan = place(SI, [Node("d", GB)], n=4, happy=4, k=2, share_size=10, existing=existing)
    assert plan == {3: "d"}
    with pytest.raises(NotHappy):
        place(SI, [Node("d", GB)], n=5, happy=5, k=2, share_size=10, existing=existing)
