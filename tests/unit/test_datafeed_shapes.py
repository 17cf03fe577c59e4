"""DataFeed.next_arrays on rows of the wrong shape: a FeedDataError naming the column, never a numpy message.

The feed server here has no socket traffic: chunks go straight into its intake (no Spark, no TF).
"""

import socket

import pyarrow as pa
import pytest

from tfos._feed.datafeed import DataFeed, FeedDataError
from tfos._feed.server import Chunk, FeedServer
from tfos.errors import DataError


def feed_of(*chunks):
    server = FeedServer(socket.socket(), "unused")
    for chunk in chunks:
        assert server._put(chunk, feed="")  # what a feed connection does with a frame
    server.done.set()  # end of feed: next_arrays returns what is queued
    return DataFeed(server)


def rows(*data):
    return Chunk(list(data), len(data))


def arrow(**columns):
    batch = pa.record_batch({name: pa.array(values) for name, values in columns.items()})
    return Chunk(batch, batch.num_rows, is_arrow=True)


def test_good_rows_stack():
    got = feed_of(rows((1, [1.0, 2.0]), (2, [3.0, 4.0])), rows((3, [5.0, 6.0]))).next_arrays(10)
    assert got[0].tolist() == [1, 2, 3] and got[1].shape == (3, 2)


@pytest.mark.parametrize("feed, message", [
    (lambda: feed_of(rows((1, [1.0, 2.0]), (2, [1.0]))),
     r"field 1: fed rows have shapes \[\(1,\), \(2,\)\] in one batch; every row must have the same shape"),
    (lambda: feed_of(rows((1, [1.0, 2.0])), rows((2, [1.0, 2.0, 3.0]))),
     r"field 1: fed rows have shapes \[\(2,\), \(3,\)\] in one next_arrays\(\) batch"),
    (lambda: feed_of(rows({"x": [1.0], "y": 1}, {"x": [2.0]})),
     r"fed row 1 of a batch has no column 'y'; every row must have the fields of the first one"),
    (lambda: feed_of(rows((1, 2)), rows((3,))),
     r"fed rows differ in their fields: \['0', '1'\] in one batch, \['0'\] in another"),
    (lambda: feed_of(arrow(x=[[1.0, 2.0], [3.0]])),
     r"column 'x': row 1 of a fed batch has 1 values, expected shape \(2,\)"),
    (lambda: feed_of(arrow(x=[[1.0, 2.0]]), arrow(x=[[1.0, 2.0, 3.0]])),
     r"column 'x': fed rows have shapes \[\(2,\), \(3,\)\] in one next_arrays\(\) batch"),
])
def test_wrong_shapes_name_the_column(feed, message):
    with pytest.raises(FeedDataError, match=message) as info:
        feed().next_arrays(10)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)
