"""The equal-rows feed plan."""

import random

import pytest

from tfos._feed.plan import Frame, Route, make_plan


def per_node(plan, nodes, chunk_rows=3):
    rows = [0] * nodes
    for p in range(len(plan.routes)):
        for f in plan.frames(p, chunk_rows):
            rows[f.node] += f.rows
    return rows


def test_every_partition_feeds_every_node_and_remainders_rotate():
    plan = make_plan([10, 0, 3, 7], 2)
    assert (plan.quota, plan.even, plan.dropped) == (10, 9, 0)
    assert plan.routes == (Route(5, ()), Route(0, ()), Route(1, (0,)), Route(3, (1,)))
    assert list(plan.frames(3, chunk_rows=2)) == [
        Frame(0, 0, 2), Frame(1, 2, 4),  # round 1: 2 rows per node
        Frame(0, 4, 5), Frame(1, 5, 6),  # round 2: the 1 even row left per node
        Frame(1, 6, 7, spill=True),  # the partition's odd row
    ]
    assert plan.nodes_of(1) == () and plan.nodes_of(2) == (0, 1)


def test_a_remainder_that_is_not_fed():
    plan = make_plan([7, 4], 3)
    assert (plan.quota, plan.even, plan.dropped) == (3, 3, 2)
    assert plan.routes == (Route(2, ()), Route(1, ()))  # the even parts make the quota: no spill row is fed
    plan = make_plan([7, 5], 3)
    assert (plan.quota, plan.even, plan.dropped) == (4, 3, 0)
    assert plan.routes == (Route(2, (0,)), Route(1, (1, 2)))  # spill rows rotate across partitions
    assert per_node(plan, 3) == [4, 4, 4]


def test_fewer_rows_than_nodes_feeds_nothing():
    plan = make_plan([1, 1], 3)
    assert (plan.quota, plan.dropped) == (0, 2) and plan.routes == (Route(0), Route(0))


@pytest.mark.parametrize("seed", range(20))
def test_random_counts_give_equal_rows_and_cover_in_order(seed):
    rng = random.Random(seed)
    counts = [rng.choice([0, 1, 5, 17, 100]) for _ in range(rng.randint(1, 12))]
    nodes = rng.randint(1, 5)
    plan = make_plan(counts, nodes)
    assert per_node(plan, nodes) == [plan.quota] * nodes
    assert plan.dropped == sum(counts) - nodes * plan.quota < nodes
    for p, count in enumerate(counts):
        frames = list(plan.frames(p, 4))
        assert all(0 <= f.start < f.stop <= count for f in frames)
        spill = [f.node for f in frames if f.spill]
        assert len(spill) == len(set(spill)) < nodes  # a partition's spill rows go to different nodes


def test_bad_input():
    with pytest.raises(ValueError):
        make_plan([1], 0)
    with pytest.raises(ValueError):
        make_plan([-1], 1)


def test_inference_results_become_rows():
    from tfos._feed.client import FeedError, as_result_row

    assert as_result_row((1, 2), ["a", "b"]) == {"a": 1, "b": 2}
    assert as_result_row({"a": 1}, ["a"]) == {"a": 1}
    assert as_result_row(([0.5, 0.25],), ["p"]) == {"p": [0.5, 0.25]}  # a 1-tuple is a row
    assert as_result_row([0.5, 0.25], ["p"]) == {"p": [0.5, 0.25]}  # a list is the value
    assert as_result_row(7, ["p"]) == {"p": 7}
    with pytest.raises(FeedError, match="does not match the result columns"):
        as_result_row(7, ["a", "b"])
