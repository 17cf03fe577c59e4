"""The rows a TF node has received, in the order its reader takes them: plain state, no threads, no I/O.

The feed server wraps one :class:`Intake` in a lock (``tfos._feed.server``); the routing simulation in
``tests/unit/test_feed_routing.py`` drives the same class step by step. See ``tfos._feed.plan`` for why the
order matters: within an epoch a node's reader gets every even chunk before any spill chunk, and only even
chunks count against the capacity.
"""

from __future__ import annotations

import collections
from typing import Hashable


class Chunk:
    """Rows from one frame: a list of rows (RDD) or an Arrow record batch (DataFrame).

    Attributes:
        key: which epoch of which ``train()`` call the rows belong to (training rows only).
        quota: rows this node gets in that epoch.
        spill: True for a spill row (see ``tfos._feed.plan``).
    """

    __slots__ = ("data", "rows", "epoch", "quota", "is_arrow", "key", "spill")

    def __init__(self, data, rows: int, epoch: int = 0, quota: int = 0, is_arrow: bool = False,
                 key: Hashable = None, spill: bool = False) -> None:
        self.data, self.rows, self.epoch, self.quota, self.is_arrow = data, rows, epoch, quota, is_arrow
        self.key, self.spill = key, spill


class Intake:
    """Even chunks in a bounded FIFO, spill chunks held per epoch until the epoch's even rows are all taken.

    Args:
        capacity: even chunks held before :meth:`full` is True (the server then stops reading: back-pressure).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the feed queue needs room for at least one chunk, got {capacity}")
        self.capacity = capacity
        self._even: collections.deque[Chunk] = collections.deque()
        self._spill: dict[Hashable, collections.deque[Chunk]] = {}
        self._even_rows: dict[Hashable, int] = {}  # even rows this node gets per epoch key
        self._order: dict[Hashable, int] = {}  # epoch keys in the order they were first seen
        self.received: collections.Counter = collections.Counter()  # rows per epoch key
        self.taken: collections.Counter = collections.Counter()
        self._even_taken: collections.Counter = collections.Counter()

    def open(self, key: Hashable, even_rows: int) -> None:
        """Announces an epoch (a feeding task's hello): this node gets ``even_rows`` even rows in it."""
        if key not in self._order:
            self._order[key] = len(self._order)
            self._even_rows[key] = even_rows

    def full(self) -> bool:
        return len(self._even) >= self.capacity

    def put(self, chunk: Chunk) -> None:
        """Adds a chunk; an even chunk needs room (check :meth:`full` first), a spill chunk never waits."""
        self.open(chunk.key, 0)
        self.received[chunk.key] += chunk.rows
        if chunk.spill:
            self._spill.setdefault(chunk.key, collections.deque()).append(chunk)
        else:
            if self.full():
                raise RuntimeError("put() of an even chunk into a full intake")
            self._even.append(chunk)

    def take(self, ended: bool = False) -> Chunk | None:
        """The next chunk for the reader, or None if it must wait (``ended``: no more rows will come)."""
        for key, held in self._spill.items():
            if held and self._spill_due(key, ended):
                chunk = held.popleft()
                if not held:
                    del self._spill[key]
                self.taken[key] += chunk.rows
                return chunk
        if self._even:
            chunk = self._even.popleft()
            self.taken[chunk.key] += chunk.rows
            self._even_taken[chunk.key] += chunk.rows
            return chunk
        return None

    def _spill_due(self, key: Hashable, ended: bool) -> bool:
        """Whether ``key``'s spill rows may be taken: its even rows are, or a later epoch's rows came first."""
        if ended or self._even_taken[key] >= self._even_rows.get(key, 0):
            return True
        return bool(self._even) and self._order.get(self._even[0].key, 0) > self._order.get(key, 0)

    def empty(self) -> bool:
        return not self._even and not self._spill

    def queued(self) -> int:
        """Even chunks waiting (what counts against the capacity)."""
        return len(self._even)

    def clear(self) -> None:
        """Drops every queued row (``terminate``)."""
        self._even.clear()
        self._spill.clear()
