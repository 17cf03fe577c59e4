"""A node's decoded copy of its Parquet-path share, for the later epochs of one ``train()`` call.

Decoding Parquet is the largest cost a node pays on the fast path (``list<float>`` columns decode at about 4.5 us
a row of 784 floats here, against about 1.3 us to shuffle the decoded rows: ``bench/results/feed_throughput.md``).
With ``feed_local_cache`` (the default), every node keeps the same pieces for every epoch of a call
(``tfos._feed.parquet.epoch_shares``), so it can decode each piece once: the first time it reads a piece that it
reads again later in the call, it keeps the decoded batches, in memory up to :data:`MEMORY_BYTES` (they are
held, not copied), beyond that in an Arrow IPC file on its local disk that later epochs map into memory (no
decoding, no copy). The last read of a piece drops it, and the directory goes when the call's read ends (or the
TF process exits; the supervisor removes the node's work directory even if it is killed).

Memory: at most :data:`MEMORY_BYTES` per node. Disk: the rest of the node's decoded share (about the
uncompressed size of its rows), for the length of the call. A piece goes to disk only while the disk keeps
:data:`FREE_RESERVE_BYTES` and a tenth of its size free after it; otherwise it is decoded again next epoch
(logged once). Writing to disk costs about as much as one decoding here, so the disk copy pays from the third
read of a piece on.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import tempfile
from typing import Any, Hashable, Iterable, Iterator

logger = logging.getLogger(__name__)

# Decoded batches a node holds in memory for later epochs; more go to its local disk.
MEMORY_BYTES = 256 << 20
# Room a kept piece must leave on the disk (and a tenth of the disk besides).
FREE_RESERVE_BYTES = 1 << 30


class LocalCopy:
    """Decoded pieces kept for a later read: held in memory, or as memory-mapped Arrow IPC files in one directory.

    Args:
        reads: every read this node will make in the call, in order (a piece key per read: the same piece
            twice means it is read twice); only pieces with a read still to come are kept.
        parent: where the directory is made (the node's work directory; the temp directory if None).
    """

    def __init__(self, reads: Iterable[Hashable], parent: str | None = None) -> None:
        self._left = collections.Counter(reads)
        self._files: dict[Hashable, str] = {}
        self._held: dict[Hashable, list] = {}  # pieces kept in memory: their batches
        self._held_bytes = 0
        self._parent = parent
        self._dir: str | None = None
        self._full = False
        self._serial = 0
        self.kept = self.reused = 0  # pieces kept (held or written), pieces read back (for the log and the tests)

    def take(self, piece: Hashable) -> Iterator | None:
        """The piece's decoded rows, as the record batches it was kept in, if a copy is kept (its last read then
        removes the file), else None; counts a read of the piece either way."""
        self._left[piece] -= 1
        last = self._left[piece] <= 0
        if piece not in self._held and piece not in self._files:
            return None
        self.reused += 1
        if piece in self._held:
            batches = self._held.pop(piece) if last else self._held[piece]
            if last:
                self._held_bytes -= sum(b.nbytes for b in batches)
            return iter(batches)
        path = self._files.pop(piece) if last else self._files[piece]
        return self._read(path, remove=last)

    @staticmethod
    def _read(path: str, remove: bool) -> Iterator:
        import pyarrow as pa

        with pa.memory_map(path) as source:
            reader = pa.ipc.open_file(source)
            batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]  # views of the mapping
        if remove:
            try:
                os.unlink(path)  # the mapping stays valid while its batches are in use
            except OSError as exc:
                logger.debug("could not remove %s: %s", path, exc)
        yield from batches

    def offer(self, piece: Hashable, blocks: Iterable) -> Iterator:
        """Passes the piece's decoded ``blocks`` on, keeping them if the piece is read again: held in memory while
        :data:`MEMORY_BYTES` allows, else written to disk while the disk has room (a copy cut short, by the disk
        or by the reader stopping, is dropped)."""
        if self._left[piece] <= 0 or piece in self._files or piece in self._held:
            yield from blocks
            return
        held: list = []
        size = 0
        copy: _Copy | None = None
        keeping = True
        try:
            for block in blocks:
                if keeping and copy is None and self._held_bytes + size + block.nbytes <= MEMORY_BYTES:
                    held.append(block)
                    size += block.nbytes
                elif keeping:
                    if copy is None:  # over the memory budget: this piece goes to disk, what is held too
                        copy, pending, held = self._disk_copy(), held, []
                        keeping = copy is not None and all(self._write(copy, b) for b in pending)
                    keeping = keeping and self._write(copy, block)
                yield block
            if not keeping:
                return
            if copy is None:
                self._held[piece] = held
                self._held_bytes += size
                self.kept += 1
            elif copy.finish():
                self._files[piece] = copy.path
                self.kept += 1
        finally:
            if copy is not None:
                copy.drop()  # unless finished: a copy cut short is not kept

    def _disk_copy(self) -> _Copy | None:
        """A new file for a piece's copy; None once nothing more is to be kept on disk."""
        if self._full:
            return None
        try:
            directory = self._directory()
        except OSError as exc:
            self._give_up(f"cannot make a directory in {self._parent}: {exc}")
            return None
        self._serial += 1
        return _Copy(os.path.join(directory, f"piece-{self._serial}.arrow"))

    def _write(self, copy: _Copy | None, block) -> bool:
        """Appends ``block`` to ``copy``; False (the copy dropped) when the disk has no room or the write fails."""
        if copy is None or not copy.open:
            return False
        if not self._room_for(os.path.dirname(copy.path), block.nbytes):
            copy.drop()
            return False
        try:
            copy.write(block)
            return True
        except OSError as exc:  # the copy is an optimization: the read goes on without it
            self._give_up(f"writing {copy.path} failed: {exc}")
            copy.drop()
            return False

    def _room_for(self, directory: str, nbytes: int) -> bool:
        """Whether ``nbytes`` more leave the disk its reserve; once not, nothing more is kept (logged once)."""
        if self._full:
            return False
        usage = shutil.disk_usage(directory)
        if usage.free - nbytes >= max(FREE_RESERVE_BYTES, usage.total // 10):
            return True
        self._give_up(f"{usage.free >> 20} MiB free in {directory}")
        return False

    def _give_up(self, why: str) -> None:
        """Keeps nothing more: the rest of the share is decoded again every epoch."""
        if not self._full:
            self._full = True
            logger.warning("not keeping more decoded Parquet pieces (%s); the rest of this node's share is decoded "
                           "again every epoch (feed_local_cache)", why)

    def close(self) -> None:
        """Drops every held piece and removes every kept file and the directory."""
        self._held.clear()
        self._held_bytes = 0
        self._files.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _directory(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="tfos-feed-local-", dir=self._parent)
        return self._dir


class _Copy:
    """One piece's IPC file while it is written: open until :meth:`finish` (kept) or :meth:`drop` (removed)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.open = True
        self._sink: Any = None
        self._writer: Any = None

    def write(self, block) -> None:
        if not self.open:
            return
        import pyarrow as pa

        if self._writer is None:
            self._sink = pa.OSFile(self.path, "wb")
            self._writer = pa.ipc.new_file(self._sink, block.schema)
        self._writer.write_batch(block)

    def finish(self) -> bool:
        """Closes the file; True if it holds the whole piece."""
        if not self.open or self._writer is None:
            return False
        self._close()
        self.open = False
        return True

    def drop(self) -> None:
        if not self.open:
            return
        self.open = False
        if self._writer is not None:
            self._close()
            os.unlink(self.path)

    def _close(self) -> None:
        self._writer.close()
        self._sink.close()
