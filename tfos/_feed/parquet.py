"""The feed's fast path for DataFrames: Spark writes the data once as Parquet, the TF nodes read it with pyarrow.

Why: on the Spark path (``tfos._feed.client``) every row crosses Spark's JVM row-to-Arrow conversion, which
handles array columns one element at a time; for wide float rows that conversion, not the feed, is the limit
(``bench/results/feed_throughput.md``). Spark's Parquet writer is vectorized, and pyarrow's reader decodes
columns at memory speed, so a ``train()`` call writes the DataFrame once to a cache directory and every epoch is
read from there.

How it keeps the feed's guarantees:

- **Equal rows, no counting pass.** The row counts come from the Parquet footers (one small Spark job reads them
  where the files are). Each epoch, :func:`shares` cuts the row groups (shuffled per epoch, when shuffling is on)
  into one contiguous share of exactly ``quota = total // nodes`` rows per node.
- **One consumer path.** A node reads its share itself, in its feed server's connection thread, into the same
  bounded queue the Spark path fills (``tfos._feed.server``): ``feed.dataset()``, ``next_batch`` and
  ``terminate()`` see no difference. A full queue blocks the reading thread; there is no task slot to hold, so no
  node ever waits for another node's feeding task.
- **One feeding task per epoch**, holding one connection per node (threads), tells each node its pieces and waits
  until every node has queued them, with the same stall check as the Spark path (``feed_stall_timeout``).

Where the cache lives (:func:`cache_root`): ``feed_cache_dir`` if set; else the local temp directory when the
driver and every node share one host; else ``<fs.defaultFS>/tmp/tfos-feed-cache`` when the cluster's default
file system is not the local disk. Without one of those, ``feed_path=auto`` uses the Spark path.
The cache is removed when ``train()`` ends, whether it succeeded or failed.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import random
import socket
import tempfile
import uuid
from typing import Iterable, Iterator, Sequence

from .. import fs
from ..errors import ConfigError, FeedError

logger = logging.getLogger(__name__)

# Parquet row group size Spark writes the cache with: the unit of per-epoch shuffling and of a node's reads.
ROW_GROUP_BYTES = 8 << 20
CACHE_DIR_NAME = "tfos-feed-cache"


@dataclasses.dataclass(frozen=True)
class RowGroup:
    """One row group of a cache file."""

    path: str
    index: int
    rows: int


@dataclasses.dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of row group ``index`` of ``path``: part of one node's share of an epoch."""

    path: str
    index: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def to_json(self) -> list:
        return [self.path, self.index, self.start, self.stop]

    @classmethod
    def from_json(cls, data: Sequence) -> Piece:
        path, index, start, stop = data
        return cls(str(path), int(index), int(start), int(stop))


def epoch_rng(seed: int, *parts: object) -> random.Random:
    """The random generator of one epoch (and node, or partition): the same seed gives the same order."""
    return random.Random(":".join(str(x) for x in (seed, *parts)))


def shares(groups: Sequence[RowGroup], nodes: int, epoch: int, seed: int | None) -> tuple[int, list[list[Piece]]]:
    """Each node's pieces for ``epoch``: ``quota = total // nodes`` rows each, from consecutive row groups.

    With a ``seed`` the row groups are taken in an order shuffled per epoch (so each node's share changes from
    epoch to epoch); without one, in file order. The last ``total % nodes`` rows of the order are not fed.
    """
    if nodes < 1:
        raise ValueError(f"need at least one training node, got {nodes}")
    total = sum(g.rows for g in groups)
    quota = total // nodes
    order = list(groups)
    if seed is not None:
        epoch_rng(seed, "groups", epoch).shuffle(order)
    out: list[list[Piece]] = [[] for _ in range(nodes)]
    node, need = 0, quota
    for group in order:
        start = 0
        while start < group.rows and node < nodes and quota:
            take = min(group.rows - start, need)
            out[node].append(Piece(group.path, group.index, start, start + take))
            start += take
            need -= take
            if need == 0:
                node, need = node + 1, quota
    return quota, out


# ------------------------------------------------------------------------------------------------- driver

def cache_root(configured: str, default_fs: str, master: str, driver_host: str, node_hosts: Iterable[str]) -> str:
    """Where ``train()`` writes its cache directories; ``""`` when there is no place every node can read."""
    if configured:
        return configured.rstrip("/")
    hosts = {h for h in node_hosts}
    if master.startswith("local") or (hosts and all(_same_host(h, driver_host) for h in hosts)):
        return posixpath.join(tempfile.gettempdir(), CACHE_DIR_NAME)
    if default_fs and fs.scheme(default_fs) != "file":
        return default_fs.rstrip("/") + "/tmp/" + CACHE_DIR_NAME
    return ""


def _same_host(a: str, b: str) -> bool:
    if not a or not b:
        return False
    if a == b:
        return True
    try:
        return socket.gethostbyname(a) == socket.gethostbyname(b)
    except OSError:
        return False


def new_cache_dir(root: str) -> str:
    return f"{root}/{uuid.uuid4().hex[:16]}"


def write(df, url: str) -> None:
    """Spark writes ``df`` to ``url`` as Parquet (its own vectorized writer, small row groups)."""
    try:
        # Uncompressed, without dictionary pages: the cache is read a few times and then removed, and on wide
        # float rows these write 1.4x faster than Spark's defaults, for the same size (measured here).
        (df.write.mode("overwrite").option("parquet.block.size", str(ROW_GROUP_BYTES))
         .option("compression", "none").option("parquet.enable.dictionary", "false").parquet(url))
    except Exception as exc:
        raise ConfigError(
            f"the feed's Parquet fast path could not write its cache to {url}: {_short(exc)}. Set feed_cache_dir "
            "(TFOS_FEED_CACHE_DIR) to a directory Spark's executors can write and every TF node can read (HDFS, "
            "S3, or local disk on a one-host cluster), or feed_path=spark (TFOS_FEED_PATH) for the Spark path."
        ) from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


def footers(batches: Iterable) -> Iterator:
    """``mapInArrow`` body over a DataFrame of file paths: each file's row groups and their row counts."""
    import pyarrow as pa

    paths, indexes, rows = [], [], []
    for batch in batches:
        for path in batch.column(0).to_pylist():
            meta = _open(path).metadata
            for i in range(meta.num_row_groups):
                paths.append(path)
                indexes.append(i)
                rows.append(meta.row_group(i).num_rows)
    yield pa.RecordBatch.from_pydict({"path": paths, "row_group": indexes, "rows": rows},
                                     schema=pa.schema([("path", pa.string()), ("row_group", pa.int32()),
                                                       ("rows", pa.int64())]))


def remove(batches: Iterable) -> Iterator:
    """``mapInArrow`` body over a one-row DataFrame holding a cache directory: removes it where the data is."""
    import pyarrow as pa

    for batch in batches:
        for url in batch.column(0).to_pylist():
            fsys, path = fs.filesystem(url)
            with fs.translated(url):
                if fsys.exists(path):
                    fsys.rm(path, recursive=True)
    yield pa.RecordBatch.from_pydict({"done": [True]}, schema=pa.schema([("done", pa.bool_())]))


# ------------------------------------------------------------------------------------------------- node side

def _open(url: str):
    import pyarrow.parquet as pq

    if fs.scheme(url) == "file":
        return pq.ParquetFile(url[len("file:"):] if url.startswith("file:") else url)
    fsys, path = fs.filesystem(url)
    with fs.translated(url):
        return pq.ParquetFile(fsys.open(path, "rb"))


def read_pieces(pieces: Sequence[Piece], chunk_rows: int, seed: int | None, *stream: object) -> Iterator:
    """A node's share as record batches of at most ``chunk_rows`` rows, one row group read at a time.

    With a ``seed``, the rows of each piece come in an order shuffled with ``epoch_rng(seed, *stream)``.

    Raises:
        FeedError: a cache file cannot be read from this node (with the setting that fixes it).
    """

    rng = epoch_rng(seed, "rows", *stream) if seed is not None else None
    current, handle = None, None
    for piece in pieces:
        try:
            if piece.path != current:
                handle, current = _open(piece.path), piece.path
            assert handle is not None
            table = handle.read_row_group(piece.index).slice(piece.start, piece.rows)
        except (OSError, ValueError) as exc:
            raise FeedError(
                f"this TF node cannot read the feed cache file {piece.path} (row group {piece.index}): "
                f"{type(exc).__name__}: {exc}. The cache directory must be readable from every node: set "
                "feed_cache_dir (TFOS_FEED_CACHE_DIR) to shared storage (HDFS, S3), or feed_path=spark "
                "(TFOS_FEED_PATH).") from None
        yield from _shuffled_with(rng, table.combine_chunks(), True).to_batches(max_chunksize=chunk_rows)


def permuted(data, order):
    """``data.take(order)`` for a Table or RecordBatch, faster for list columns of equal-length numbers (one
    numpy gather of the values instead of Arrow's per-list take: measured 112k vs over 1M rows/s of 784 float32
    here)."""
    import numpy as np
    import pyarrow as pa

    columns = []
    for column in data.columns:
        array = column if not isinstance(column, pa.ChunkedArray) else (
            column.chunk(0) if column.num_chunks == 1 else column.combine_chunks())
        columns.append(_permuted_vectors(array, order, np, pa) or array.take(order))
    return type(data).from_arrays(columns, schema=data.schema)


def _permuted_vectors(array, order, np, pa):
    """A list column whose rows all hold the same number of non-null numbers, permuted; None for any other."""
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)) or array.null_count or not len(array):
        return None
    values = array.flatten()
    if values.null_count or not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        return None
    lengths = np.diff(np.asarray(array.offsets))
    width = int(lengths[0])
    if width == 0 or (lengths != width).any():
        return None
    rows = values.to_numpy().reshape(len(array), width)[order]
    offsets = np.arange(0, (len(array) + 1) * width, width,
                        dtype=np.int64 if pa.types.is_large_list(array.type) else np.int32)
    return type(array).from_arrays(pa.array(offsets), pa.array(rows.ravel()), type=array.type)


def shuffled(data, is_arrow: bool, seed: int | None, *stream: object):
    """A Spark-path chunk's rows in an order shuffled with ``epoch_rng(seed, *stream)`` (unchanged without a seed)."""
    return _shuffled_with(epoch_rng(seed, "rows", *stream) if seed is not None else None, data, is_arrow)


def _shuffled_with(rng: random.Random | None, data, is_arrow: bool):
    """``data`` (Arrow rows or a list of rows) in an order drawn from ``rng``; unchanged without one. Both
    paths shuffle through here."""
    import numpy as np

    rows = data.num_rows if is_arrow else len(data)
    if rng is None or rows < 2:
        return data
    order = np.arange(rows)
    np.random.default_rng(rng.getrandbits(63)).shuffle(order)
    return permuted(data, order) if is_arrow else [data[i] for i in order]
