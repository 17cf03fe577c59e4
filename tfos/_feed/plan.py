"""Which rows of which partition go to which TF node: a pure function, unit-tested.

Policy (equal rows, hence equal steps): each epoch's rows, in partition order, are cut into ``n`` equal
contiguous ranges, one per training node, of ``quota = total // n`` rows. The last ``total % n`` rows
(fewer than ``n``) are not fed. Every node therefore sees exactly ``quota`` rows per epoch, so a plain
``model.fit(dataset)`` takes the same number of steps on every worker, whatever the batch size and however
uneven the partitions are - MultiWorkerMirroredStrategy hangs or fails otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Segment:
    """Rows ``[start, stop)`` of a partition (offsets within it) go to training node ``node`` (0-based)."""

    node: int
    start: int
    stop: int


@dataclasses.dataclass(frozen=True)
class FeedPlan:
    """The routing of one ``train()`` call.

    Attributes:
        quota: rows each node gets per epoch.
        dropped: rows per epoch that are not fed (fewer than the number of nodes).
        segments: ``segments[p]`` lists where partition ``p``'s rows go.
    """

    quota: int
    dropped: int
    segments: tuple[tuple[Segment, ...], ...]


def make_plan(counts: Sequence[int], nodes: int) -> FeedPlan:
    """Splits partitions with ``counts[p]`` rows across ``nodes`` nodes, ``total // nodes`` rows each."""
    if nodes < 1:
        raise ValueError(f"need at least one training node, got {nodes}")
    if any(c < 0 for c in counts):
        raise ValueError(f"negative partition count in {list(counts)}")
    total = sum(counts)
    quota = total // nodes
    fed = quota * nodes
    segments = []
    offset = 0  # global index of the partition's first row
    for count in counts:
        parts = []
        start = offset
        end = min(offset + count, fed)
        while quota and start < end:
            node = start // quota
            stop = min(end, (node + 1) * quota)
            parts.append(Segment(node, start - offset, stop - offset))
            start = stop
        segments.append(tuple(parts))
        offset += count
    return FeedPlan(quota=quota, dropped=total - fed, segments=tuple(segments))
