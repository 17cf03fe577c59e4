"""A node's validation share on its own disk: written once as it arrives, read from the start at every pass.

``train(data, validation_data=val)`` feeds the validation rows once, before the training epochs. The node's feed
server never queues them: each frame is appended to a :class:`Spool` file as it arrives, so a feeding task
never waits for the node's reader (memory stays bounded by one frame per connection; the disk holds the share).
``feed.dataset(split="validation")`` then replays the file from its first record each time it is iterated,
which is what Keras does at every epoch's validation.

The file holds the frames as they came over the wire (``kind``, ``length``, payload; see
``tfos._feed.protocol``). A connection's frames count only once it ended cleanly (its END), and only the first
complete connection of each partition counts: a Spark task that failed half-way and was retried does not
duplicate rows. The split is complete once the committed rows reach the node's share (the hello's ``quota``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Iterator

from . import protocol as p
from .intake import Chunk


class Spool:
    """One ``train()`` call's validation rows on this node, in one file.

    Args:
        path: the file (created, truncated).
        quota: validation rows this node gets.

    Thread-safe: feed connections append and commit from their own threads while readers replay.
    """

    def __init__(self, path: str, quota: int) -> None:
        self.path, self.quota = path, quota
        self.rows = 0  # committed rows
        self.received = 0  # rows written, committed or not
        self.last_write = time.monotonic()
        self._lock = threading.Lock()
        self._file = open(path, "wb")
        self._size = 0
        self._records: list[tuple[int, int, bytes]] = []  # committed (offset, size, kind), in commit order
        self._pending: dict[object, list[tuple[int, int, bytes, int]]] = {}  # per open connection
        self._partitions: set[int] = set()  # partitions whose rows are committed

    @property
    def complete(self) -> bool:
        return self.rows >= self.quota

    def append(self, conn: object, kind: bytes, payload, rows: int) -> None:
        """Writes one frame of connection ``conn`` (any hashable token); it counts once ``commit``ted."""
        kind = p.ARROW if kind in (p.ARROW, p.SPILL_ARROW) else p.ROWS  # the spill order means nothing here
        with self._lock:
            if self._file.closed:
                raise ValueError(f"the validation split file {self.path} is closed")
            self._file.write(p.frame_header(kind, len(payload)))
            self._file.write(payload)
            offset = self._size + len(p.frame_header(kind, 0))
            self._size = offset + len(payload)
            self._pending.setdefault(conn, []).append((offset, len(payload), kind, rows))
            self.received += rows
            self.last_write = time.monotonic()

    def commit(self, conn: object, partition: int) -> int:
        """Counts ``conn``'s frames (its END came); returns their rows, 0 if ``partition`` was committed already
        (a retried task's second copy) or is unknown (-1 never matches)."""
        with self._lock:
            frames = self._pending.pop(conn, [])
            if partition >= 0 and partition in self._partitions:
                self.received -= sum(f[3] for f in frames)
                return 0
            if partition >= 0:
                self._partitions.add(partition)
            self._file.flush()
            self._records.extend((offset, size, kind) for offset, size, kind, _ in frames)
            rows = sum(f[3] for f in frames)
            self.rows += rows
            if self.complete:
                self._file.close()
            return rows

    def discard(self, conn: object) -> None:
        """Forgets ``conn``'s frames: the connection broke before its END."""
        with self._lock:
            self.received -= sum(f[3] for f in self._pending.pop(conn, []))

    def chunks(self) -> Iterator[Chunk]:
        """The committed rows, from the first, one frame at a time (the same every time)."""
        with self._lock:
            records = list(self._records)
        with open(self.path, "rb") as f:
            for offset, size, kind in records:
                f.seek(offset)
                payload = f.read(size)
                if len(payload) != size:
                    raise OSError(f"the validation split file {self.path} is cut short: {len(payload)} of {size} "
                                  f"bytes at offset {offset}")
                data, rows, is_arrow = p.decode(kind, payload)
                yield Chunk(data, rows, is_arrow=is_arrow)

    def remove(self) -> None:
        """Closes and deletes the file (a reader still replaying it keeps its open copy)."""
        with self._lock:
            self._file.close()
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
