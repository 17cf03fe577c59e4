"""The equal-rows feed plan."""

import random

import pytest

from tfos._feed.plan import Segment, make_plan


def per_node(plan, nodes):
    rows = [0] * nodes
    for segs in plan.segments:
        for s in segs:
            rows[s.node] += s.stop - s.start
    return rows


def test_even_split_over_uneven_partitions():
    plan = make_plan([10, 0, 3, 7], 2)
    assert plan.quota == 10 and plan.dropped == 0
    assert plan.segments == ((Segment(0, 0, 10),), (), (Segment(1, 0, 3),), (Segment(1, 0, 7),))


def test_a_partition_spanning_nodes_and_a_remainder():
    plan = make_plan([7, 4], 3)
    assert (plan.quota, plan.dropped) == (3, 2)
    assert plan.segments == ((Segment(0, 0, 3), Segment(1, 3, 6), Segment(2, 6, 7)), (Segment(2, 0, 2),))


def test_fewer_rows_than_nodes_feeds_nothing():
    plan = make_plan([1, 1], 3)
    assert (plan.quota, plan.dropped) == (0, 2) and plan.segments == ((), ())


@pytest.mark.parametrize("seed", range(20))
def test_random_counts_give_equal_rows_and_cover_in_order(seed):
    rng = random.Random(seed)
    counts = [rng.choice([0, 1, 5, 17, 100]) for _ in range(rng.randint(1, 12))]
    nodes = rng.randint(1, 5)
    plan = make_plan(counts, nodes)
    assert per_node(plan, nodes) == [plan.quota] * nodes
    assert plan.dropped == sum(counts) - nodes * plan.quota < nodes
    for count, segs in zip(counts, plan.segments):
        assert all(0 <= s.start < s.stop <= count for s in segs)
        assert [s.node for s in segs] == sorted(s.node for s in segs)


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
