"""The feed's fast path for DataFrames: the TF nodes read Parquet with pyarrow, either the DataFrame's own files
(a plain Parquet scan: :func:`is_plain_scan`, checked by :func:`schema_problem`) or a cache Spark writes once.

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
- **One feeding task for all epochs**, holding one connection per node (threads), tells each node its pieces of
  every epoch and waits until every node has queued them, with the same stall check as the Spark path
  (``feed_stall_timeout``). A node reads one epoch after the other, so no epoch waits for a Spark job to be
  scheduled; a retried task finds the node's read under way and does not start it again.

Where the cache lives (:func:`cache_root`): ``feed_cache_dir`` if set; else the local temp directory when the
driver and every node share one host; else ``<fs.defaultFS>/tmp/tfos-feed-cache`` when the cluster's default
file system is not the local disk. Without one of those, ``feed_path=auto`` uses the Spark path.
The cache is removed when ``train()`` ends, whether it succeeded or failed. A DataFrame read from its own
files needs no cache, and its files are never touched.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import random
import re
import socket
import tempfile
import uuid
from typing import Any, Iterable, Iterator, Sequence

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


def share_to_wire(epochs: Sequence[Sequence[Piece]]) -> dict:
    """One node's pieces of each epoch as JSON data for its hello: ``files`` (each path once) and ``epochs`` (per
    epoch, ``[file index, row group, start, stop]`` per piece). :func:`share_from_wire` reads it back."""
    files: dict[str, int] = {}
    return {"epochs": [[[files.setdefault(p.path, len(files)), p.index, p.start, p.stop] for p in pieces]
                       for pieces in epochs],
            "files": list(files)}


def share_from_wire(wire: dict) -> list[list[Piece]]:
    """The pieces of each epoch that :func:`share_to_wire` wrote."""
    files = wire["files"]
    return [[Piece(str(files[f]), int(index), int(start), int(stop)) for f, index, start, stop in pieces]
            for pieces in wire["epochs"]]


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


def epoch_shares(groups: Sequence[RowGroup], nodes: int, first: int, count: int, seed: int | None,
                 fixed: bool) -> list[list[list[Piece]]]:
    """``out[node][i]``: the node's pieces of epoch ``first + i``, each node ``total // nodes`` rows per epoch.

    ``fixed`` (``feed_local_cache``): every node keeps, for every epoch, the share :func:`shares` gives it for
    epoch 0, its pieces in an order shuffled per epoch (with a ``seed``), so that it reads the same pieces each
    epoch and can keep them decoded. Otherwise the row groups are dealt anew each epoch (:func:`shares`).
    """
    out: list[list[list[Piece]]] = [[] for _ in range(nodes)]
    base = shares(groups, nodes, 0, seed)[1] if fixed else None
    for epoch in range(first, first + count):
        dealt = shares(groups, nodes, epoch, seed)[1] if base is None else base
        for node, pieces in enumerate(dealt):
            if base is not None and seed is not None:
                pieces = list(pieces)
                epoch_rng(seed, "pieces", epoch, node).shuffle(pieces)
            out[node].append(list(pieces))
    return out


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


FOOTER_SCHEMA = "path string, row_group int, rows long, problem string"


def footers(expected_schema: bytes | None, batches: Iterable) -> Iterator:
    """``mapInArrow`` body (bound to ``expected_schema``) over a DataFrame of file paths: each file's row groups
    and their row counts.

    With an ``expected_schema`` (an Arrow schema, serialized by :func:`schema_bytes`), each file is also checked to
    hold those columns with those types; a file that does not gets one row whose ``problem`` says why.
    """
    import pyarrow as pa

    expected = pa.ipc.read_schema(pa.py_buffer(expected_schema)) if expected_schema else None
    out: dict[str, list] = {"path": [], "row_group": [], "rows": [], "problem": []}

    def add(path, index, rows, problem=None):
        for key, value in zip(out, (path, index, rows, problem)):
            out[key].append(value)

    for batch in batches:
        for path in batch.column(0).to_pylist():
            handle = _open(path)
            problem = schema_problem(handle.schema_arrow, expected) if expected is not None else None
            if problem:
                add(path, -1, 0, problem)
                continue
            meta = handle.metadata
            for i in range(meta.num_row_groups):
                add(path, i, meta.row_group(i).num_rows)
    yield pa.RecordBatch.from_pydict(out, schema=pa.schema([
        ("path", pa.string()), ("row_group", pa.int32()), ("rows", pa.int64()), ("problem", pa.string())]))


# ------------------------------------------------------------------------------------------------- direct read

_RELATION = re.compile(r"^Relation \[[^\]]*\] parquet$")
_PROJECT = re.compile(r"^Project \[([^\]]*)\]$")
_COLUMN_REF = re.compile(r"^[^\s()#,]+#\d+L?$")


def is_plain_scan(optimized_plan: str) -> bool:
    """Whether Spark's optimized logical plan (its text) only reads Parquet files, whole or some of their columns
    unchanged: ``Relation [..] parquet``, possibly under one ``Project`` of plain column references. Anything
    else (a filter, a limit, an expression, an alias, a join, a cached relation) is not, and is written to the
    cache like any other DataFrame."""
    lines = [line.rstrip() for line in optimized_plan.strip().splitlines()]
    if len(lines) == 1:
        return bool(_RELATION.match(lines[0]))
    if len(lines) != 2 or not lines[1].startswith("+- "):
        return False
    project = _PROJECT.match(lines[0])
    if not project or not _RELATION.match(lines[1][3:]):
        return False
    refs = [ref.strip() for ref in project.group(1).split(",")]
    return bool(refs) and all(_COLUMN_REF.match(ref) for ref in refs)


def optimized_plan(df) -> str:
    """The text of ``df``'s optimized logical plan, on a classic or a Spark Connect session; ``""`` when the
    session does not say."""
    try:
        if hasattr(df, "_jdf"):
            return str(df._jdf.queryExecution().optimizedPlan().toString())
        text = df._explain_string(mode="extended")
    except Exception:  # noqa: BLE001 - no plan: not a plain scan
        return ""
    _, _, rest = text.partition("== Optimized Logical Plan ==")
    return rest.split("== Physical Plan ==")[0]


def schema_bytes(df, columns: Sequence[str]) -> bytes:
    """The Arrow schema Spark gives ``columns`` of ``df`` (what the Spark path would send), serialized."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    full = to_arrow_schema(df.schema)
    schema = pa.schema([full.field(name) for name in columns])
    return schema.serialize().to_pybytes()


def schema_problem(found, expected) -> str | None:
    """Why a file with Arrow schema ``found`` cannot be read as ``expected``; None when it can."""
    names = found.names
    for field in expected:
        if names.count(field.name) != 1:
            return f"the file has no single column {field.name!r} (it has {', '.join(names[:20])})"
        have = found.field(field.name).type
        if not _same_type(have, field.type):
            return f"column {field.name!r} is {have} in the file, {field.type} in the DataFrame"
    return None


def _same_type(a, b) -> bool:
    """Arrow types equal up to nullability and the names of list items."""
    import pyarrow as pa

    lists = (pa.types.is_list, pa.types.is_large_list)
    for is_kind in lists:
        if is_kind(a) or is_kind(b):
            return is_kind(a) and is_kind(b) and _same_type(a.value_type, b.value_type)
    if pa.types.is_struct(a) or pa.types.is_struct(b):
        return (pa.types.is_struct(a) and pa.types.is_struct(b) and a.num_fields == b.num_fields
                and all(a.field(i).name == b.field(i).name and _same_type(a.field(i).type, b.field(i).type)
                        for i in range(a.num_fields)))
    return a.equals(b)


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

# Rows of a piece are decoded, shuffled and queued in blocks of about this many bytes: the unit of the row shuffle
# (like Dataset.shuffle's buffer) and what a node holds decoded at a time, besides its queue.
BLOCK_BYTES = 32 << 20
# Read-ahead of a column chunk while decoding it (unbuffered, pyarrow would read the whole chunk first).
READ_BUFFER_BYTES = 8 << 20


def _open(url: str):
    import pyarrow.parquet as pq

    if fs.scheme(url) == "file":
        return pq.ParquetFile(url[len("file:"):] if url.startswith("file:") else url, buffer_size=READ_BUFFER_BYTES)
    fsys, path = fs.filesystem(url)
    with fs.translated(url):
        return pq.ParquetFile(fsys.open(path, "rb"), buffer_size=READ_BUFFER_BYTES)


def read_pieces(pieces: Sequence[Piece], chunk_rows: int, seed: int | None, *stream: object,
                columns: Sequence[str] | None = None, keep=None) -> Iterator:
    """A node's share as record batches of at most ``chunk_rows`` rows.

    Each piece is decoded a batch of ``chunk_rows`` rows at a time; with a ``seed``, the rows of each block of
    :data:`BLOCK_BYTES` come in an order shuffled with ``epoch_rng(seed, *stream)``. With ``columns``, only those are read, in that order (a
    DataFrame read from its own files). With ``keep`` (a :class:`tfos._feed.local.LocalCopy`), a piece it holds
    decoded is read from it instead of the Parquet file, and a piece read from the file is given to it (it keeps
    those read again later).

    Raises:
        FeedError: a file cannot be read from this node (with the setting that fixes it).
    """

    rng = epoch_rng(seed, "rows", *stream) if seed is not None else None
    files = _Files(columns, chunk_rows)
    for piece in pieces:
        batches = keep.take(piece) if keep is not None else None
        if batches is None:
            batches = files.batches(piece)
            if keep is not None:
                batches = keep.offer(piece, batches)
        for block in _blocks(batches, BLOCK_BYTES):
            yield from _shuffled_with(rng, block, True).to_batches(max_chunksize=chunk_rows)


def _blocks(batches: Iterable, nbytes: int) -> Iterator:
    """Consecutive record batches grouped into tables of at least ``nbytes`` (the last may hold less): the unit
    of the row shuffle, the same whether the batches were just decoded or come from a node's local copy."""
    held: list = []
    size = 0
    for batch in batches:
        held.append(batch)
        size += batch.nbytes
        if size >= nbytes:
            yield _table(held)
            held, size = [], 0
    if held:
        yield _table(held)


def _table(batches: list):
    import pyarrow as pa

    return pa.Table.from_batches(batches)


class _Files:
    """Decodes pieces, keeping the last Parquet file open (a share's consecutive pieces often share a file)."""

    def __init__(self, columns: Sequence[str] | None, batch_rows: int) -> None:
        self.columns = list(columns) if columns is not None else None
        self.batch_rows = batch_rows
        self._path: str | None = None
        self._handle: Any = None  # a pyarrow ParquetFile

    def batches(self, piece: Piece) -> Iterator:
        """The piece's rows, decoded as record batches of at most ``batch_rows`` rows (the rows of its row group
        before ``piece.start`` are decoded and dropped).

        Raises:
            FeedError: the file cannot be read from this node (with the setting that fixes it).
        """
        try:
            if piece.path != self._path:
                self._handle, self._path = _open(piece.path), piece.path
            skip, left = piece.start, piece.rows
            for batch in self._handle.iter_batches(batch_size=self.batch_rows, row_groups=[piece.index],
                                                   columns=self.columns, use_threads=False):
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                batch = batch.slice(skip, left)
                skip, left = 0, left - batch.num_rows
                yield batch
                if left <= 0:
                    return
        except (OSError, ValueError) as exc:
            where = f"{piece.path} (row group {piece.index}): {type(exc).__name__}: {exc}"
            if self.columns is not None:
                raise FeedError(
                    f"this TF node cannot read the DataFrame's own Parquet file {where}. A DataFrame that is a "
                    "plain Parquet scan is read from its files, which every node must then reach as Spark's "
                    "executors do; set feed_path=spark (TFOS_FEED_PATH) to feed it through Spark tasks.") from None
            raise FeedError(
                f"this TF node cannot read the feed cache file {where}. The cache directory must be readable from "
                "every node: set feed_cache_dir (TFOS_FEED_CACHE_DIR) to shared storage (HDFS, S3), or "
                "feed_path=spark (TFOS_FEED_PATH).") from None


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
