"""Which rows of a partition go to which TF node, and in what order: pure functions, unit-tested.

**Equal rows.** Every training node gets ``quota = total // nodes`` rows per epoch, so a plain
``model.fit(dataset)`` takes the same number of steps on every worker, however uneven the partitions are
(MultiWorkerMirroredStrategy hangs or fails otherwise). At most ``nodes - 1`` rows per epoch are not fed.

**Every partition feeds every node.** A partition of ``c`` rows gives each node ``c // nodes`` rows, its
*even* part, dealt in rounds: round ``r`` takes the next ``nodes * w`` rows (``w = chunk_rows``, less in the
last round) and sends ``w`` of them to node 0, the next ``w`` to node 1, and so on, one frame per node, always
in node order. The partition's last ``c % nodes`` rows are *spill* rows: each goes to a different node, chosen
round-robin over the epoch so that every node gets ``quota - even`` of them in all (``even`` being the sum of
the even parts). A node takes its spill rows only after all of its even rows of the epoch, and it never pushes
back on a spill frame (at most one row per partition and epoch, so memory stays bounded).

**Why this cannot deadlock.** The nodes take their rows in lockstep (a collective step needs every node), each
node's even rows go through a bounded queue, and a feeding task blocks only while a node whose queue is full
still holds its previous frame (the task hands each node's connection one frame at a time, written by a thread
of its own, so that it writes to all its nodes at once). Suppose every running task is blocked and some node ``B`` lacks the rows of the next
step. ``B`` pushes back on nothing, so each task has given ``B`` all the frames it dealt before the one it is
blocked on. Let ``C`` be the last node, in node order, that any task is blocked on: in every task, ``C``'s
turn in the current round comes at or after the blocking node's, so ``C`` has received no more complete rounds
than ``B``; finished tasks gave both the same even rows. ``C`` therefore holds no more rows than ``B`` (spill
rows count only after the even ones). But ``C``'s queue is full, so it is not taking rows: it already has
the rows of the next step, which ``B`` lacks. Contradiction: some task can always move, whatever the number
of task slots, the queue capacity (at least one frame), the partition sizes and Spark's order of tasks.
``tests/unit/test_feed_routing.py`` checks this by simulation.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence


@dataclasses.dataclass(frozen=True)
class Route:
    """Where one partition's rows go.

    Attributes:
        even: rows each node gets from the partition's first ``nodes * even`` rows.
        spill: the node of each of the following rows that is fed, in row order (distinct nodes).
    """

    even: int
    spill: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class Frame:
    """Rows ``[start, stop)`` of a partition (offsets within it) go to node ``node`` in one message."""

    node: int
    start: int
    stop: int
    spill: bool = False

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclasses.dataclass(frozen=True)
class FeedPlan:
    """The routing of one epoch of a ``train()`` call.

    Attributes:
        nodes: the number of training nodes.
        quota: rows each node gets per epoch.
        even: of those, rows that come from even parts (the rest are spill rows).
        dropped: rows per epoch that are not fed (fewer than ``nodes``).
        routes: ``routes[p]`` says where partition ``p``'s rows go.
    """

    nodes: int
    quota: int
    even: int
    dropped: int
    routes: tuple[Route, ...]

    def route(self, partition: int) -> Route:
        """The route of ``partition``; a partition the plan does not know (it was empty) feeds nothing."""
        return self.routes[partition] if partition < len(self.routes) else Route(0)

    def frames(self, partition: int, chunk_rows: int) -> Iterator[Frame]:
        """The frames of ``partition`` in the order they are sent: consecutive, from row 0 on."""
        route = self.route(partition)
        n = self.nodes
        for lo in range(0, route.even, chunk_rows):
            width = min(chunk_rows, route.even - lo)
            base = lo * n
            for node in range(n):
                yield Frame(node, base + node * width, base + (node + 1) * width)
        start = n * route.even
        for i, node in enumerate(route.spill):
            yield Frame(node, start + i, start + i + 1, spill=True)

    def fed_rows(self, partition: int) -> int:
        """How many of the partition's first rows are fed (the rest are not read)."""
        route = self.route(partition)
        return self.nodes * route.even + len(route.spill)

    def nodes_of(self, partition: int) -> tuple[int, ...]:
        """The nodes ``partition`` sends rows to, in node order."""
        route = self.route(partition)
        return tuple(range(self.nodes)) if route.even else tuple(sorted(route.spill))


def make_plan(counts: Sequence[int], nodes: int) -> FeedPlan:
    """Routes partitions of ``counts[p]`` rows to ``nodes`` training nodes, ``sum(counts) // nodes`` rows each."""
    if nodes < 1:
        raise ValueError(f"need at least one training node, got {nodes}")
    if any(c < 0 for c in counts):
        raise ValueError(f"negative partition count in {list(counts)}")
    total = sum(counts)
    quota = total // nodes
    even = sum(c // nodes for c in counts)
    spill_fed = (quota - even) * nodes  # spill rows that are fed, dealt round-robin in partition order
    routes = []
    dealt = 0
    for count in counts:
        rest = count % nodes
        take = max(0, min(rest, spill_fed - dealt))
        routes.append(Route(count // nodes, tuple((dealt + i) % nodes for i in range(take))))
        dealt += take
    return FeedPlan(nodes=nodes, quota=quota, even=even, dropped=total - quota * nodes, routes=tuple(routes))
