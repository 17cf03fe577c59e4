"""The TF side of the Spark feed: TensorFlowOnSpark's ``DataFeed`` API and a ``tf.data.Dataset`` view.

Rows arrive in chunks (an Arrow record batch from a DataFrame, a list of rows from an RDD). ``next_batch`` hands
out rows as TensorFlowOnSpark did; ``dataset()`` turns whole chunks into tensors without a Python loop per row
(for DataFrames) and yields exactly one epoch per iteration, so ``model.fit(feed.dataset(...), epochs=N)``
works with ``cluster.train(data, num_epochs=N)``. ``dataset(split="validation")`` replays the node's share of
``train(..., validation_data=val)`` from its disk (``tfos._feed.spool``) at every iteration.
"""

from __future__ import annotations

import queue
from typing import Any, Sequence

from ..errors import ConfigError, FeedDataError
from .intake import Chunk
from .server import POLL, FeedServer

# Seconds ``dataset(split="validation")`` waits for the node's validation share by default.
VALIDATION_WAIT_SECS = 600.0
_END = object()
_PARTITION_END = object()  # the end of an inference partition: a batch ends there


class DataFeed:
    """Reads the rows Spark feeds to this node (``ctx.get_data_feed()``).

    Args:
        mgr: the node's feed server (``ctx.mgr``).
        train_mode: True for ``cluster.train`` data, False for ``cluster.inference``.
        qname_in, qname_out: accepted for TensorFlowOnSpark compatibility.
        input_mapping: optional ``{column: name}``; ``next_batch`` then returns ``{name: [values]}``.
    """

    def __init__(self, mgr: FeedServer, train_mode: bool = True, qname_in: str = "input",
                 qname_out: str = "output", input_mapping: dict | None = None) -> None:
        self._server = mgr
        self.train_mode = train_mode
        self.input_mapping = input_mapping
        self._pending: list = []
        self._held: Chunk | None = None

    # ----- TensorFlowOnSpark API -------------------------------------------------------------------------
    def next_batch(self, batch_size: int) -> list | dict:
        """Returns up to ``batch_size`` rows; fewer at the end of the feed (or, for inference, of a partition)."""
        rows = self._pending
        self._pending = []
        while len(rows) < batch_size:
            item = self._next_chunk()
            if item is None:
                break
            rows.extend(_rows_of(item))
        rows, self._pending = rows[:batch_size], rows[batch_size:]
        if self.input_mapping:
            return {name: [_field(row, col) for row in rows] for col, name in self.input_mapping.items()}
        return rows

    def next_arrays(self, batch_size: int) -> dict:
        """Like ``next_batch``, but returns ``{column: numpy array}`` with no Python object per row.

        For DataFrame feeds, array columns become 2-D arrays; for RDD feeds, rows are stacked per field
        (tuple rows by position, dict rows by key, scalar rows under key 0). Empty at the end of the feed.
        Answer with ``batch_results(array)``: results then travel as arrays too.
        """
        import numpy as np

        if self._pending:
            raise RuntimeError("next_arrays() cannot follow a next_batch() that left rows pending")
        parts: list = []
        rows = 0
        while rows < batch_size:
            item = self._next_chunk()
            if item is None:
                break
            take = min(item.rows, batch_size - rows)
            if take < item.rows:  # keep the rest for the next call
                rest = Chunk(item.data.slice(take) if item.is_arrow else item.data[take:], item.rows - take,
                             item.epoch, item.quota, item.is_arrow)
                self._held = rest
                item = Chunk(item.data.slice(0, take) if item.is_arrow else item.data[:take], take,
                             item.epoch, item.quota, item.is_arrow)
            parts.append(_chunk_arrays(item))
            rows += take
        if not parts:
            return {}
        return {key: np.concatenate(_same_shapes(parts, key)) for key in parts[0]}

    def should_stop(self) -> bool:
        """True once the feed was terminated, or ended (``shutdown``) and everything was read."""
        if self._server.terminating.is_set():
            return True
        empty = self._server.train_empty() and self._server.infer_q.empty()
        return self._server.done.is_set() and empty and not self._pending and self._held is None

    def terminate(self) -> None:
        """Stops the feed: the Spark tasks still feeding stop early (without failing), queued rows are dropped."""
        self._pending = []
        self._held = None
        self._server.terminate()

    def batch_results(self, results: Sequence) -> None:
        """Returns inference results for the rows read so far, one per row, in their order."""
        self._server.add_results(list(results))

    # ----- tf.data -------------------------------------------------------------------------------------
    def dataset(self, output_signature: Any = None, label: str | int | None = None, split: str = "train",
                timeout: float = VALIDATION_WAIT_SECS, batch_size: int | None = None, drop_remainder: bool = False):
        """A ``tf.data.Dataset`` of this node's rows, one epoch per iteration, not auto-sharded.

        Args:
            output_signature: ``tf.TensorSpec`` structure of one row; by default it is derived from the
                DataFrame schema (list columns become vectors) or from the first RDD row.
            label: a DataFrame column (or RDD row element index) to return as the label: rows become
                ``(features, label)``, features being the single other column or a dict of them.
            split: ``"train"`` (the rows of ``cluster.train(data, ...)``), or ``"validation"``: this node's
                share of ``cluster.train(..., validation_data=val)``, the same rows in the same order at every
                iteration (Keras iterates ``validation_data`` again at every epoch).
            timeout: ``split="validation"`` only: seconds to wait for this node's validation share (the
                driver feeds it once, before the first training epoch).
            batch_size: yield batches of this many rows instead of single rows: the same elements as
                ``dataset(...).batch(batch_size, drop_remainder)``, made from whole fed chunks without a
                ``tf.data`` step per row (several times faster for wide rows: ``bench/feed_throughput.py``).
                Batches never span two epochs.
            drop_remainder: with ``batch_size``: drop each epoch's last batch when it is short (the batch
                dimension is then static, as with ``Dataset.batch(..., drop_remainder=True)``).

        Every node gets the same number of rows per epoch (see ``TFCluster.train``), and the same number of
        validation rows, so a plain ``model.fit(dataset.batch(global_batch), epochs=num_epochs,
        validation_data=val_dataset.batch(global_batch))`` takes equal steps on all workers.

        Raises:
            ConfigError: an unknown ``split``, or ``"validation"`` when ``train()`` was given no validation data;
                a ``batch_size`` below 1.
            FeedError: the validation share did not arrive within ``timeout`` seconds.
            FeedDataError: the feed ended before any row arrived.
        """
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ConfigError(f"feed.dataset(batch_size={batch_size!r}): the batch size is a whole number >= 1")
        batching = (batch_size, drop_remainder)
        if split == "train":
            first = self._peek()
            if first is None:
                raise FeedDataError("the feed ended before any row arrived: TFCluster.train() fed no data to this "
                                    "node")
            return _as_dataset(self._one_epoch, output_signature, label, first, *batching)
        if split == "validation":
            def replay():
                return self._server.validation(timeout).chunks()

            first = next(replay(), None)
            if first is None:
                raise FeedDataError("this node's validation share has no rows")
            return _as_dataset(replay, output_signature, label, first, *batching)
        raise ConfigError(f"feed.dataset(split={split!r}): split is 'train' or 'validation'")

    def _one_epoch(self):
        """This epoch's training chunks (a node gets its epoch's quota, then the next iteration starts)."""
        count, quota = 0, None
        while quota is None or count < quota:
            chunk = self._take()
            if chunk is _END or chunk is None:
                return
            quota = chunk.quota
            yield chunk
            count += chunk.rows

    # ----- internals -------------------------------------------------------------------------------------
    def _next_chunk(self) -> Chunk | None:
        """The next chunk, or None where a batch must end: the end of the feed or of an inference partition."""
        item = self._take()
        return None if item is _END else item

    def _take(self):
        if self._held is not None:
            chunk, self._held = self._held, None
            return chunk
        # Like TensorFlowOnSpark's one input queue, a DataFeed reads what the node is fed, training rows or
        # inference partitions, whatever its train_mode (its examples read training rows with train_mode=False);
        # train_mode says which to wait on first.
        server = self._server
        while True:
            first, second = (server.take, self._take_infer) if self.train_mode else (self._take_infer, server.take)
            item = first(POLL)
            if item is None:
                item = second(0)
            if item is not None:
                return None if item is _PARTITION_END else item
            if server.terminating.is_set() or (server.done.is_set() and server.train_empty()
                                               and server.infer_q.empty()):
                return _END

    def _take_infer(self, timeout: float):
        """The next inference chunk; ``_PARTITION_END`` at the end of a partition; None if none came."""
        try:
            item = self._server.infer_q.get(timeout=timeout) if timeout else self._server.infer_q.get_nowait()
        except queue.Empty:
            return None
        return _PARTITION_END if item is None else item

    def _peek(self) -> Chunk | None:
        if self._held is None:
            item = self._take()
            self._held = None if item is _END else item
        return self._held


def _as_dataset(chunks, output_signature, label, first: Chunk, batch_size: int | None = None,
                drop_remainder: bool = False):
    """The tf.data view of ``chunks()`` (called anew at each iteration), its signature given or read off ``first``:
    single rows, or batches of ``batch_size`` rows (:func:`rebatched`)."""
    import tensorflow as tf

    spec = output_signature or _infer_signature(first, label)
    if batch_size is None:
        outer: list = [None]  # each chunk's rows, unbatched into single rows

        def tensors():
            for chunk in chunks():
                yield _to_tensors(chunk, spec, label)
    else:
        outer = [None, batch_size if drop_remainder else None]  # [batches, rows]: unbatched into batches

        def tensors():
            flat = (tf.nest.flatten(_to_tensors(chunk, spec, label)) for chunk in chunks())
            for block in rebatched(flat, batch_size, drop_remainder):
                yield tf.nest.pack_sequence_as(spec, block)

    signature = tf.nest.map_structure(lambda s: tf.TensorSpec([*outer, *s.shape], s.dtype), spec)
    ds = tf.data.Dataset.from_generator(tensors, output_signature=signature).unbatch()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def rebatched(chunks, batch_size: int, drop_remainder: bool = False):
    """Regroups a stream of chunks (each a list of numpy arrays with one row per element of their first axis,
    all of equal length) into blocks of whole batches: lists of arrays shaped ``[k, batch_size, ...]``, and
    at the end a short batch ``[1, r, ...]`` unless ``drop_remainder``.

    Rows are copied only to complete a batch that spans two chunks; the full batches inside a chunk are a
    reshaped view of it (no copy), so a ``tf.data`` step is taken per batch, not per row.
    """
    import numpy as np

    held: list | None = None  # fewer than batch_size rows carried over from the previous chunks
    for arrays in chunks:
        rows = len(arrays[0]) if arrays else 0
        if not rows:
            continue
        start = 0
        if held is not None:
            start = min(batch_size - len(held[0]), rows)
            held = [np.concatenate([h, a[:start]]) for h, a in zip(held, arrays)]
            if len(held[0]) < batch_size:
                continue
            yield [h.reshape(1, batch_size, *h.shape[1:]) for h in held]
            held = None
        full = (rows - start) // batch_size
        if full:
            stop = start + full * batch_size
            yield [np.ascontiguousarray(a[start:stop]).reshape(full, batch_size, *a.shape[1:]) for a in arrays]
            start = stop
        if start < rows:
            held = [a[start:] for a in arrays]
    if held is not None and not drop_remainder:
        yield [h.reshape(1, *h.shape) for h in held]


def _where(key) -> str:
    return f"column {key!r}" if isinstance(key, str) else f"field {key!r}"


def _same_shapes(parts: list, key) -> list:
    """The arrays of ``key`` from each part, checked to agree on the shape of one row."""
    try:
        arrays = [part[key] for part in parts]
    except KeyError:
        raise FeedDataError(f"fed rows differ in their fields: {sorted(map(str, parts[0]))} in one batch, "
                            f"{next(sorted(map(str, p)) for p in parts if key not in p)} in another") from None
    shapes = {arr.shape[1:] for arr in arrays}
    if len(shapes) > 1:
        raise FeedDataError(f"{_where(key)}: fed rows have shapes {sorted(shapes)} in one next_arrays() batch; "
                            "every row must have the same shape (pad or cut them before feeding)")
    return arrays


def _chunk_arrays(chunk: Chunk) -> dict:

    if chunk.is_arrow:
        batch = chunk.data
        return {name: _arrow_array(batch.column(i), name, None) for i, name in enumerate(batch.schema.names)}
    first = chunk.data[0]
    if not isinstance(first, (dict, tuple, list)):
        return {0: _stack(chunk.data, 0)}  # scalar rows
    keys = list(first) if isinstance(first, dict) else list(range(len(first)))
    out = {}
    for key in keys:
        try:
            values = [_field(row, key) for row in chunk.data]
        except (KeyError, IndexError):
            bad = next(i for i, row in enumerate(chunk.data) if not _has_field(row, key))
            raise FeedDataError(f"fed row {bad} of a batch has no {_where(key)}; every row must have the fields "
                                f"of the first one ({keys})") from None
        out[key] = _stack(values, key)
    return out


def _has_field(row, key) -> bool:
    try:
        _field(row, key)
        return True
    except (KeyError, IndexError, TypeError):
        return False


def _stack(values: list, key):
    import numpy as np

    try:
        return np.asarray(values)
    except ValueError:
        shapes = sorted({np.shape(v) for v in values})
        raise FeedDataError(f"{_where(key)}: fed rows have shapes {shapes} in one batch; every row must have "
                            "the same shape (pad or cut them before feeding)") from None


def _rows_of(chunk: Chunk) -> list:
    if chunk.is_arrow:
        from pyspark.sql import Row

        names = chunk.data.schema.names
        return [Row(**dict(zip(names, values))) for values in zip(*chunk.data.to_pydict().values())]
    return list(chunk.data)


def _field(row, key):
    if isinstance(row, dict):
        return row[key]
    try:
        return getattr(row, key) if isinstance(key, str) else row[key]
    except AttributeError:
        return row[key]


def _split_label(names: list, label) -> tuple[list, Any]:
    if label is None:
        return names, None
    if label not in names:
        raise FeedDataError(f"label {label!r} is not among the fed columns {names}")
    return [n for n in names if n != label], label


def _infer_signature(chunk: Chunk, label):
    import tensorflow as tf

    if chunk.is_arrow:
        batch = chunk.data
        columns = {name: _arrow_array(batch.column(i), name, None) for i, name in enumerate(batch.schema.names)}
        specs = {name: tf.TensorSpec(arr.shape[1:], tf.as_dtype(_tf_dtype(arr))) for name, arr in columns.items()}
        features, lab = _split_label(list(specs), label)
    else:
        row = chunk.data[0]
        if isinstance(row, dict):
            specs = {k: _spec_of(v, k) for k, v in row.items()}
            features, lab = _split_label(list(specs), label)
        elif isinstance(row, (tuple, list)) and not _is_vector(row):
            specs = {i: _spec_of(v, f"element {i}") for i, v in enumerate(row)}
            features, lab = _split_label(list(specs), label)
            if label is None:
                return tuple(specs[i] for i in range(len(row)))
        else:
            if label is not None:
                raise FeedDataError("label= needs rows with several fields")
            return _spec_of(row, "row")
    feats = specs[features[0]] if len(features) == 1 else {str(k): specs[k] for k in features}
    return feats if lab is None else (feats, specs[lab])


def _is_vector(row) -> bool:
    return all(isinstance(v, (int, float)) for v in row) and len(row) > 0 and not isinstance(row, tuple)


def _tf_dtype(arr):
    import numpy as np

    return np.dtype("O") if arr.dtype.kind in "OUS" else arr.dtype


def _spec_of(value, where: str):
    import numpy as np
    import tensorflow as tf

    arr = np.asarray(value)
    if arr.dtype.kind in "OUS":
        return tf.TensorSpec(arr.shape, tf.string)
    return tf.TensorSpec(arr.shape, tf.as_dtype(arr.dtype))


def _arrow_array(column, name: str, shape):
    """An Arrow column as a numpy array: list columns become 2-D, checked for equal lengths."""
    import numpy as np
    import pyarrow as pa

    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type):
        n = len(column)
        values = column.flatten().to_numpy(zero_copy_only=False)
        if pa.types.is_fixed_size_list(column.type):
            width = column.type.list_size
        else:
            offsets = np.asarray(column.offsets)
            lengths = np.diff(offsets)
            # Without a given shape, the most common length is the expected one: rows may come shuffled, so the
            # first row is not more likely to be right than any other.
            # (A tie goes to the first row's length.)
            width = _common_length(lengths, np) if n else 0
            expected = shape[0] if shape else width
            bad = np.nonzero(lengths != expected)[0]
            if len(bad):
                raise FeedDataError(
                    f"column {name!r}: row {int(bad[0])} of a fed batch has {int(lengths[bad[0]])} values, "
                    f"expected shape ({expected},)"
                )
        return values.reshape(n, width)
    arr = column.to_numpy(zero_copy_only=False)
    return arr


def _common_length(lengths, np) -> int:
    counts = np.bincount(lengths)
    first = int(lengths[0])
    return first if counts[first] == counts.max() else int(counts.argmax())


def _cast(arr, spec, where: str):

    want = tuple(spec.shape)
    if tuple(arr.shape[1:]) != want and spec.shape.is_fully_defined():
        raise FeedDataError(f"{where}: fed rows have shape {tuple(arr.shape[1:])}, expected shape {want}")
    dtype = spec.dtype
    if dtype.is_floating or dtype.is_integer or dtype.is_bool:
        try:
            return arr.astype(dtype.as_numpy_dtype, copy=False)
        except (TypeError, ValueError) as exc:
            raise FeedDataError(f"{where}: cannot convert fed values to {dtype.name}: {exc}") from None
    return arr


def _to_tensors(chunk: Chunk, spec, label):
    """One chunk as a structure of batched numpy arrays matching ``spec``."""
    import numpy as np

    if chunk.is_arrow:
        batch = chunk.data
        names = batch.schema.names

        def column(name, s):
            if name not in names:
                raise FeedDataError(f"column {name!r} is not in the fed DataFrame (columns {names})")
            arr = _arrow_array(batch.column(names.index(name)), name, tuple(s.shape))
            return _cast(arr, s, f"column {name!r}")

        features, lab = _split_label(names, label)
        if isinstance(spec, tuple) and label is not None:
            fspec, lspec = spec
        else:
            fspec, lspec = spec, None
        if isinstance(fspec, dict):
            feats = {k: column(k, s) for k, s in fspec.items()}
        else:
            feats = column(features[0], fspec)
        return feats if lspec is None else (feats, column(lab, lspec))

    rows = chunk.data

    def stack(key, s, where):
        try:
            arr = np.asarray([_field(r, key) for r in rows] if key is not None else rows)
        except ValueError as exc:
            raise FeedDataError(f"{where}: rows of different shapes in one batch, expected shape "
                                f"{tuple(s.shape)} ({exc})") from None
        return _cast(arr, s, where)

    if isinstance(spec, tuple) and label is None:
        return tuple(stack(i, s, f"element {i} of the row") for i, s in enumerate(spec))
    if label is not None:
        fspec, lspec = spec
        first = rows[0]
        keys = list(first) if isinstance(first, dict) else list(range(len(first)))
        features = [k for k in keys if k != label]
        if isinstance(fspec, dict):
            feats = {str(k): stack(k, fspec[str(k)], f"field {k!r}") for k in features}
        else:
            feats = stack(features[0], fspec, f"field {features[0]!r}")
        return feats, stack(label, lspec, f"label {label!r}")
    if isinstance(spec, dict):
        return {k: stack(k, s, f"field {k!r}") for k, s in spec.items()}
    return stack(None, spec, "row")
