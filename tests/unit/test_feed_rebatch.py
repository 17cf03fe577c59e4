"""``feed.dataset(batch_size=B)`` regroups fed chunks into whole batches (``tfos._feed.datafeed.rebatched``): the
same rows, in the same order, in the same batches as ``Dataset.batch(B)`` over single rows (pure numpy here)."""

import numpy as np
import pytest

from tfos._feed.datafeed import rebatched


def chunks_of(sizes, width=3):
    """Chunks of consecutive rows: a feature matrix (row i holds i, i, i) and a label vector (i)."""
    start = 0
    for size in sizes:
        ids = np.arange(start, start + size)
        yield [np.repeat(ids[:, None], width, axis=1).astype(np.float32), ids.astype(np.int64)]
        start += size


def batches(blocks):
    """The blocks as a list of batches (each a list of arrays), the way ``unbatch()`` splits them."""
    out = []
    for block in blocks:
        assert len({a.shape[:2] for a in block}) == 1
        for i in range(block[0].shape[0]):
            out.append([a[i] for a in block])
    return out


@pytest.mark.parametrize("sizes, batch", [
    ([1024, 1024, 1024], 256),   # chunks hold whole batches: views only
    ([1024, 1024, 17], 100),     # batches span chunks, a short last batch
    ([5, 3, 0, 7, 1, 200], 8),   # chunks smaller than a batch, an empty one
    ([10], 64),                  # fewer rows than one batch
    ([64, 64], 64),
    ([1], 1),
])
@pytest.mark.parametrize("drop", [False, True])
def test_same_batches_as_batching_single_rows(sizes, batch, drop):
    total = sum(sizes)
    got = batches(rebatched(chunks_of(sizes), batch, drop))
    want = [list(range(i, min(i + batch, total))) for i in range(0, total, batch)]
    if drop and want and len(want[-1]) < batch:
        want.pop()
    assert [b[1].tolist() for b in got] == want
    for features, labels in got:
        assert features.shape == (len(labels), 3) and features.dtype == np.float32
        assert (features == labels[:, None]).all()


def test_full_batches_inside_a_chunk_are_not_copied():
    chunk = [np.zeros((1024, 4), np.float32)]
    (block,) = list(rebatched(iter([chunk]), 256))
    assert block[0].shape == (4, 256, 4) and np.shares_memory(block[0], chunk[0])


def test_string_columns_and_empty_stream():
    words = [np.array(["a", "b", "c"], dtype=object)]
    assert [b[0].tolist() for b in batches(rebatched(iter([words, words]), 4))] == [
        ["a", "b", "c", "a"], ["b", "c"]]
    assert list(rebatched(iter([]), 4)) == []
