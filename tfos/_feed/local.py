"""A node's decoded copy of its Parquet-path share, on its local disk, for the later epochs of one ``train()`` call.

Decoding Parquet is the largest cost a node pays on the fast path (``list<float>`` columns decode at about 5 us a
row of 784 floats here, against about 1 us to shuffle the decoded rows: ``bench/results/feed_throughput.md``).
With ``feed_local_cache`` (the default), every node keeps the same pieces for every epoch of a call
(``tfos._feed.parquet.epoch_shares``), so it can decode each piece once: the first time it reads a piece that it
reads again later in the call, it writes the decoded rows to an Arrow IPC file; later epochs map that file into
memory, which costs no decoding and no copy. The last read of a piece removes its file, and the directory goes
when the call's read ends (or the TF process exits; the supervisor removes the node's work directory even if it
is killed).

Disk: at most the node's decoded share (about the uncompressed size of its rows), for the length of the call.
A piece is kept only while the disk keeps :data:`FREE_RESERVE_BYTES` and a tenth of its size free after it;
otherwise it is decoded again next epoch (logged once).
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import tempfile
from typing import Hashable, Iterable

logger = logging.getLogger(__name__)

# Room a kept piece must leave on the disk (and a tenth of the disk besides).
FREE_RESERVE_BYTES = 1 << 30


class LocalCopy:
    """Decoded pieces kept for a later read, as memory-mapped Arrow IPC files in one directory.

    Args:
        reads: every read this node will make in the call, in order (a piece key per read: the same piece
            twice means it is read twice); only pieces with a read still to come are kept.
        parent: where the directory is made (the node's work directory; the temp directory if None).
    """

    def __init__(self, reads: Iterable[Hashable], parent: str | None = None) -> None:
        self._left = collections.Counter(reads)
        self._files: dict[Hashable, str] = {}
        self._parent = parent
        self._dir: str | None = None
        self._full = False
        self.kept = self.reused = 0  # pieces written, pieces read back (for the log and the tests)

    def take(self, piece: Hashable):
        """The piece's decoded rows if a copy is kept (its last read removes the file), else None; counts a
        read of the piece either way."""
        import pyarrow as pa

        self._left[piece] -= 1
        path = self._files.get(piece)
        if path is None:
            return None
        with pa.memory_map(path) as source:
            table = pa.ipc.open_file(source).read_all()  # a view of the mapping: no copy, no decoding
        if self._left[piece] <= 0:
            del self._files[piece]
            os.unlink(path)  # the mapping stays valid until its buffers are gone
        self.reused += 1
        return table

    def offer(self, piece: Hashable, table) -> None:
        """Keeps ``table`` (the piece's decoded rows) if the piece is read again and the disk has room."""
        if self._left[piece] <= 0 or piece in self._files or self._full:
            return
        import pyarrow as pa

        directory = self._directory()
        usage = shutil.disk_usage(directory)
        if usage.free - table.nbytes < max(FREE_RESERVE_BYTES, usage.total // 10):
            self._full = True
            logger.info("not keeping more decoded Parquet pieces in %s: %d MiB free; the rest of this node's share "
                        "is decoded again every epoch (feed_local_cache)", directory, usage.free >> 20)
            return
        path = os.path.join(directory, f"piece-{len(self._files) + self.kept}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        self._files[piece] = path
        self.kept += 1

    def close(self) -> None:
        """Removes every kept file and the directory."""
        self._files.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _directory(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="tfos-feed-local-", dir=self._parent)
        return self._dir
