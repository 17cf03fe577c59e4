"""``feed.dataset()`` in a real TensorFlow: ``batch_size=B`` gives the same batches as ``.batch(B)`` over single
rows, for DataFrame chunks (Arrow) and RDD chunks (rows), with a label, dict features and ``drop_remainder`` (no
Spark: chunks go straight into a feed server's queue, as a feeding connection puts them)."""

import socket

import numpy as np
import pyarrow as pa
import pytest

from tfos._feed.datafeed import DataFeed
from tfos._feed.intake import Chunk
from tfos._feed.server import FeedServer
from tfos.errors import ConfigError

SIZES = [300, 7, 1024, 0, 90]  # uneven chunks; 1,421 rows


def feed_of(chunks):
    server = FeedServer(socket.socket(), "unused", max_chunks=len(chunks) + 1)
    quota = sum(c.rows for c in chunks)
    for chunk in chunks:
        chunk.quota, chunk.key = quota, ("f", 0)
        assert server._put(chunk, feed="f")
    server.done.set()
    return DataFeed(server)


def arrow_chunks(extra=False):
    out, start = [], 0
    for size in SIZES:
        ids = np.arange(start, start + size)
        columns = {"x": pa.FixedSizeListArray.from_arrays(pa.array(np.repeat(ids, 4).astype(np.float32)), 4)
                   if size else pa.array([], pa.list_(pa.float32())), "label": pa.array(ids % 3)}
        if extra:
            columns["w"] = pa.array(ids.astype(np.float64))
        batch = pa.record_batch(columns)
        out.append(Chunk(batch, size, is_arrow=True))
        start += size
    return [c for c in out if c.rows]


def row_chunks():
    out, start = [], 0
    for size in SIZES:
        if size:
            out.append(Chunk([([float(i)] * 4, i % 3) for i in range(start, start + size)], size))
        start += size
    return out


def as_lists(ds):
    import tensorflow as tf

    return [tf.nest.map_structure(lambda t: t.numpy().tolist(), b) for b in ds]


@pytest.mark.parametrize("make, label", [(arrow_chunks, "label"), (row_chunks, 1), (lambda: arrow_chunks(True),
                                                                                      "label")])
@pytest.mark.parametrize("batch, drop", [(64, False), (100, True), (1, False), (5000, False)])
def test_batch_size_gives_the_batches_of_batching_single_rows(make, label, batch, drop):
    want = as_lists(feed_of(make()).dataset(label=label).batch(batch, drop_remainder=drop))
    ds = feed_of(make()).dataset(label=label, batch_size=batch, drop_remainder=drop)
    assert as_lists(ds) == want and len(want) == (1421 // batch if drop else -(-1421 // batch))
    features = ds.element_spec[0]
    first = features if not isinstance(features, dict) else features["x"]
    assert first.shape.as_list() == [batch if drop else None, 4]


def test_a_bad_batch_size_is_a_config_error():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="batch_size"):
            feed_of(row_chunks()).dataset(batch_size=bad)
