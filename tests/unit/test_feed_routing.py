"""The Spark feed's routing cannot deadlock: a simulation of feeding tasks, bounded queues and lockstep readers.

The model, step by step with a seeded random choice among whatever can happen next:

- Spark runs each epoch's tasks (one per partition) in a given order on ``slots`` task slots; epoch ``e + 1``'s
  tasks start only once every task of epoch ``e`` ended (``train()`` runs one Spark job per epoch);
- a task sends its partition's frames in :meth:`FeedPlan.frames` order, one connection per node, each holding
  at most ``in_flight`` frames that the node has not read yet (the socket buffers); a write to a full
  connection blocks the task; after its last frame it ends every connection and waits for the node's answer;
- a node reads a connection's next frame into the real :class:`Intake`; an even frame waits while the intake
  is full (back-pressure);
- the nodes train in lockstep, as MultiWorkerMirroredStrategy does: step ``s`` of an epoch needs
  ``min(s * batch, quota)`` rows on every node; a node's reader takes chunks from its intake only up to
  ``prefetch`` steps ahead of the step all nodes are at, and starts an epoch only once the last one ended.

The feed must always end: every node gets exactly ``quota`` rows of its own epoch, and no state is stuck.
"""

from __future__ import annotations

import collections
import random

import pytest

from tfos._feed.intake import Chunk, Intake
from tfos._feed.plan import Frame, make_plan


class Deadlock(AssertionError):
    pass


class _Task:
    def __init__(self, epoch: int, frames: list[Frame], nodes: list[int]) -> None:
        self.epoch = epoch
        self.frames = frames
        self.sent = 0
        self.conns = {node: collections.deque() for node in nodes}
        self.ended = False
        self.answered: set[int] = set()

    def done(self) -> bool:
        return self.ended and self.answered == set(self.conns)


def simulate(counts, nodes, slots, capacity, chunk_rows, batch, epochs=1, prefetch=1, in_flight=1, order=None,
             seed=0, eager=0.0, frames_of=None, max_events=2_000_000):
    """Runs the model to its end; returns the rows each node took per epoch. Raises Deadlock if it gets stuck."""
    rng = random.Random(seed)
    plan = make_plan(counts, nodes)
    frames_of = frames_of or (lambda p: list(plan.frames(p, chunk_rows)))
    intakes = [Intake(capacity) for _ in range(nodes)]
    steps_per_epoch = -(-plan.quota // batch)
    order = list(order) if order is not None else list(range(len(counts)))
    job = 0
    pending = collections.deque(order)
    running: list[_Task] = []
    epoch, step = 0, 0  # where the lockstep readers are
    pulled = [0] * nodes  # rows each reader took in the current epoch
    taken: list[list[int]] = [[] for _ in range(nodes)]

    def need(s):
        return min(s * batch, plan.quota)

    for _ in range(max_events):
        if epoch == epochs:
            return taken
        actions = []
        if job < epochs and not pending and not running:
            actions.append(("next job",))
        if pending and len(running) < slots and job < epochs:
            actions.append(("start",))
        for task in running:
            if task.sent < len(task.frames):
                frame = task.frames[task.sent]
                if len(task.conns[frame.node]) < in_flight:
                    actions.append(("send", task))
            elif not task.ended:
                actions.append(("end", task))
            for node, conn in task.conns.items():
                if conn and (conn[0] == "END" or conn[0].spill or not intakes[node].full()):
                    actions.append(("read", task, node))
        for node in range(nodes):
            if epoch < epochs and pulled[node] < need(step + 1 + prefetch) and _peek(intakes[node]):
                actions.append(("take", node))
        if epoch < epochs and all(p >= need(step + 1) for p in pulled):
            actions.append(("step",))
        if not actions:
            raise Deadlock(f"stuck at epoch {epoch} step {step}/{steps_per_epoch}: rows taken {pulled} "
                           f"(quota {plan.quota}), queued {[i.queued() for i in intakes]} of {capacity}, "
                           f"{len(running)} running task(s) sent {[t.sent for t in running]} frames, "
                           f"{len(pending)} pending")
        feeding = [a for a in actions if a[0] in ("start", "send", "end", "read")]
        # Readers slower than the feeders (the case that fills queues), or any order.
        action = rng.choice(feeding if feeding and rng.random() < eager else actions)
        kind = action[0]
        if kind == "next job":
            job += 1
            if job < epochs:
                pending.extend(order)
        elif kind == "start":
            p = pending.popleft()
            frames = frames_of(p)
            running.append(_Task(job, frames, sorted({f.node for f in frames})))
        elif kind == "send":
            task = action[1]
            frame = task.frames[task.sent]
            task.conns[frame.node].append(frame)
            task.sent += 1
        elif kind == "end":
            task = action[1]
            for conn in task.conns.values():
                conn.append("END")
            task.ended = True
            if task.done():  # a partition with no rows to feed
                running.remove(task)
        elif kind == "read":
            task, node = action[1], action[2]
            item = task.conns[node].popleft()
            if item == "END":
                task.answered.add(node)
                if task.done():
                    running.remove(task)
            else:
                key = task.epoch
                intakes[node].open(key, plan.even)
                intakes[node].put(Chunk(list(range(item.start, item.stop)), item.rows, epoch=key,
                                        quota=plan.quota, key=key, spill=item.spill))
        elif kind == "take":
            node = action[1]
            chunk = intakes[node].take()
            assert chunk.key == epoch, f"node {node} got a chunk of epoch {chunk.key} during epoch {epoch}"
            pulled[node] += chunk.rows
            assert pulled[node] <= plan.quota, f"node {node} got more than its quota in epoch {epoch}"
        elif kind == "step":
            step += 1
            if step == steps_per_epoch:
                assert pulled == [plan.quota] * nodes
                for node in range(nodes):
                    taken[node].append(pulled[node])
                epoch, step, pulled = epoch + 1, 0, [0] * nodes
    raise AssertionError("the simulation did not end")


def _peek(intake: Intake) -> bool:
    """Whether ``take()`` would return a chunk (without taking it)."""
    return not intake.empty() and (intake.queued() > 0 or any(
        intake._spill_due(key, False) for key in intake._spill))


def _old_contiguous_frames(counts, nodes, chunk_rows):
    """The routing tfos had before: each node a contiguous range of the epoch, one node after the other."""
    total = sum(counts)
    quota = total // nodes
    out = []
    offset = 0
    for count in counts:
        frames = []
        start, end = offset, min(offset + count, quota * nodes)
        while start < end:
            node = start // quota
            stop = min(end, (node + 1) * quota, start + chunk_rows)
            frames.append(Frame(node, start - offset, stop - offset))
            start = stop
        out.append(frames)
        offset += count
    return lambda p: out[p]


# The job of the issue: 10 partitions of 6,000 rows, 2 slots, 2 nodes, queues of 16 chunks of 1,024 rows.
ISSUE_CASE = dict(counts=[6000] * 10, nodes=2, slots=2, capacity=16, chunk_rows=1024, batch=64)


def test_the_simulation_finds_the_deadlock_of_the_old_routing():
    frames_of = _old_contiguous_frames(ISSUE_CASE["counts"], 2, 1024)
    with pytest.raises(Deadlock, match="stuck at epoch 0"):
        simulate(**ISSUE_CASE, frames_of=frames_of)


@pytest.mark.parametrize("seed", range(3))
def test_the_job_of_the_issue_ends(seed):
    taken = simulate(**ISSUE_CASE, epochs=2, seed=seed)
    assert taken == [[30000, 30000]] * 2


@pytest.mark.parametrize("seed", range(500))
def test_random_shapes_always_end(seed):
    rng = random.Random(seed)
    nodes = rng.choice([1, 2, 2, 3, 4, 5])
    partitions = rng.randint(1, 14)
    counts = [rng.choice([0, 1, 2, 3, 7, 16, 40, 97]) for _ in range(partitions)]
    if sum(counts) < nodes:
        counts.append(nodes)
    order = list(range(len(counts)))
    if rng.random() < 0.5:
        rng.shuffle(order)  # locality-driven scheduling runs partitions out of order
    taken = simulate(counts, nodes, slots=rng.randint(1, 6), capacity=rng.randint(1, 4),
                     chunk_rows=rng.randint(1, 9), batch=rng.randint(1, 12), epochs=rng.randint(1, 3),
                     prefetch=rng.randint(0, 2), in_flight=rng.randint(1, 3), order=order, seed=seed,
                     eager=rng.choice([0.0, 0.5, 0.95]))
    quota = sum(counts) // nodes
    assert all(rows == [quota] * len(rows) for rows in taken)


def test_one_slot_many_nodes_tiny_queue():
    taken = simulate([50, 1, 0, 33, 2], nodes=6, slots=1, capacity=1, chunk_rows=1, batch=3, epochs=2)
    assert taken == [[14, 14]] * 6


def test_every_row_is_fed_once_per_epoch_to_one_node():
    counts = [13, 0, 5, 1, 1, 22]
    plan = make_plan(counts, 3)
    seen = collections.Counter()
    per_node = collections.Counter()
    for p, count in enumerate(counts):
        frames = list(plan.frames(p, chunk_rows=4))
        assert [f.start for f in frames] == [0, *(f.stop for f in frames[:-1])][:len(frames)]  # consecutive
        assert plan.fed_rows(p) == (frames[-1].stop if frames else 0) <= count
        for f in frames:
            seen.update((p, r) for r in range(f.start, f.stop))
            per_node[f.node] += f.rows
    assert set(seen.values()) == {1}
    assert per_node == {0: plan.quota, 1: plan.quota, 2: plan.quota}
    assert plan.dropped == sum(counts) % 3


def test_an_epoch_of_spill_rows_only():
    plan = make_plan([1, 1, 1, 1, 1], 2)  # every partition smaller than the number of nodes
    assert (plan.quota, plan.even, plan.dropped) == (2, 0, 1)
    assert [r.spill for r in plan.routes] == [(0,), (1,), (0,), (1,), ()]
    assert simulate([1, 1, 1, 1, 1], 2, slots=1, capacity=1, chunk_rows=1, batch=1, epochs=2) == [[2, 2]] * 2


def test_spill_rows_must_wait_for_the_even_rows():
    # One-row partitions are all spill. Run the even-numbered ones first (as locality may): node 0 gets every
    # row of them. Were spill rows queued like the others, node 0's queue would fill and hold the only slot
    # while node 1, which needs the odd partitions, waits: the simulation finds that deadlock...
    counts, order = [1] * 10, [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]
    plan = make_plan(counts, 2)
    as_even = lambda p: [Frame(f.node, f.start, f.stop) for f in plan.frames(p, 1)]  # noqa: E731
    shape = dict(nodes=2, slots=1, capacity=1, chunk_rows=1, batch=1, prefetch=0, order=order, eager=0.9)
    with pytest.raises(Deadlock):
        simulate(counts, frames_of=as_even, **shape)
    # ... which holding spill rows aside until the epoch's even rows are taken avoids.
    assert simulate(counts, **shape) == [[5], [5]]
