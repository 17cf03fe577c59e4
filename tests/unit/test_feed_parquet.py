"""The Parquet fast path's pure parts (tfos._feed.parquet): equal shares, per-epoch shuffling, reading a share
from real Parquet files with pyarrow, and where the cache goes. No Spark, no TensorFlow."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfos._feed import parquet
from tfos._feed.parquet import Piece, RowGroup
from tfos.errors import FeedError


def _groups(sizes):
    return [RowGroup(f"f{i // 3}", i % 3, n) for i, n in enumerate(sizes)]


def _rows_of(pieces):
    return [(p.path, p.index, r) for p in pieces for r in range(p.start, p.stop)]


@pytest.mark.parametrize("seed", [None, 0, 7])
def test_every_node_gets_exactly_quota_distinct_rows_every_epoch(seed):
    rnd = random.Random(3)
    for _ in range(200):
        sizes = [rnd.choice([0, 1, 2, 5, 17, 100]) for _ in range(rnd.randint(1, 12))]
        nodes = rnd.randint(1, 5)
        for epoch in range(3):
            quota, pieces = parquet.shares(_groups(sizes), nodes, epoch, seed)
            assert quota == sum(sizes) // nodes
            assert [sum(p.rows for p in node) for node in pieces] == [quota] * nodes
            rows = [r for node in pieces for r in _rows_of(node)]
            assert len(rows) == len(set(rows)) == quota * nodes  # no row twice, at most nodes - 1 left out
            size = {(g.path, g.index): g.rows for g in _groups(sizes)}
            assert all(0 <= p.start < p.stop <= size[p.path, p.index] for node in pieces for p in node)


def test_the_order_changes_per_epoch_with_a_seed_and_repeats_with_the_same_seed():
    groups = _groups([10] * 12)
    first = [parquet.shares(groups, 2, e, 5)[1] for e in range(4)]
    assert first == [parquet.shares(groups, 2, e, 5)[1] for e in range(4)]  # seeded: reproducible
    assert len({str(s) for s in first}) > 1  # each epoch's shares differ
    assert parquet.shares(groups, 2, 0, None) == parquet.shares(groups, 2, 3, None)  # no seed: file order


def test_fewer_rows_than_nodes_gives_no_share():
    quota, pieces = parquet.shares(_groups([1, 1]), 3, 0, 1)
    assert quota == 0 and pieces == [[], [], []]


def test_pieces_survive_their_json_form():
    piece = Piece("s3a://b/x.parquet", 2, 5, 9)
    assert Piece.from_json(piece.to_json()) == piece and piece.rows == 4


def _write(path, n, row_group_rows):
    table = pa.table({"x": pa.array(range(n), pa.int64()),
                      "v": pa.array([[float(i)] * 3 for i in range(n)], pa.list_(pa.float32()))})
    pq.write_table(table, path, row_group_size=row_group_rows)
    return str(path)


def test_a_share_is_read_in_bounded_batches_in_order_without_a_seed(tmp_path):
    path = _write(tmp_path / "a.parquet", 100, 30)
    pieces = [Piece(path, 1, 5, 30), Piece(path, 3, 0, 10)]
    batches = list(parquet.read_pieces(pieces, 8, None))
    assert max(b.num_rows for b in batches) <= 8
    xs = [x for b in batches for x in b.column("x").to_pylist()]
    assert xs == list(range(35, 60)) + list(range(90, 100))
    assert batches[0].column("v").to_pylist()[0] == [35.0] * 3


def test_a_seeded_share_has_the_same_rows_in_another_order(tmp_path):
    path = _write(tmp_path / "a.parquet", 100, 50)
    pieces = [Piece(path, 0, 0, 50), Piece(path, 1, 0, 50)]
    xs = [x for b in parquet.read_pieces(pieces, 16, 3, 0, 1) for x in b.column("x").to_pylist()]
    again = [x for b in parquet.read_pieces(pieces, 16, 3, 0, 1) for x in b.column("x").to_pylist()]
    assert sorted(xs) == list(range(100)) and xs != list(range(100)) and xs == again
    assert sorted(xs[:50]) == list(range(50))  # shuffled within a row group: a bounded buffer


def test_a_cache_file_this_node_cannot_read_names_it_and_the_setting(tmp_path):
    with pytest.raises(FeedError, match=r"cannot read the feed cache file .*missing.parquet.*feed_cache_dir"):
        list(parquet.read_pieces([Piece(str(tmp_path / "missing.parquet"), 0, 0, 1)], 8, None))


def test_spark_path_chunks_shuffle_only_with_a_seed():
    rows = list(range(50))
    assert parquet.shuffled(rows, False, None, 0) is rows
    mixed = parquet.shuffled(rows, False, 1, 0, 2)
    assert sorted(mixed) == rows and mixed != rows and mixed == parquet.shuffled(rows, False, 1, 0, 2)
    batch = pa.RecordBatch.from_pydict({"x": rows})
    assert sorted(parquet.shuffled(batch, True, 1, 0).column("x").to_pylist()) == rows


@pytest.mark.parametrize("configured, default_fs, master, driver, nodes, expected", [
    ("s3a://b/cache/", "file://", "spark://m:7077", "d", ["a", "b"], "s3a://b/cache"),
    ("", "file://", "local-cluster[2,1,1024]", "d", ["d"], "TMP"),
    ("", "file://", "spark://m:7077", "127.0.0.1", ["127.0.0.1", "127.0.0.1"], "TMP"),
    ("", "hdfs://nn:8020", "yarn", "10.0.0.1", ["10.0.0.2", "10.0.0.3"], "hdfs://nn:8020/tmp/tfos-feed-cache"),
    ("", "file://", "yarn", "10.0.0.1", ["10.0.0.2", "10.0.0.3"], ""),
])
def test_the_cache_goes_where_every_node_can_read_it(configured, default_fs, master, driver, nodes, expected):
    import tempfile

    root = parquet.cache_root(configured, default_fs, master, driver, nodes)
    assert root == (f"{tempfile.gettempdir()}/tfos-feed-cache" if expected == "TMP" else expected)


def test_the_fast_permutation_equals_arrow_take_for_every_column_kind():
    import numpy as np

    n = 40
    table = pa.table({
        "vec": pa.array([[float(i), float(i) + 0.5] for i in range(n)], pa.list_(pa.float32())),
        "ints": pa.array([[i] * 3 for i in range(n)], pa.large_list(pa.int64())),
        "ragged": pa.array([[i] * (i % 3) for i in range(n)], pa.list_(pa.int32())),
        "nulls": pa.array([None if i % 5 == 0 else [i] for i in range(n)], pa.list_(pa.int32())),
        "inner_null": pa.array([[None] if i == 3 else [i] for i in range(n)], pa.list_(pa.int32())),
        "words": pa.array([f"w{i}" for i in range(n)]),
    }).slice(3, 30)  # a slice: offsets that do not start at 0
    order = np.random.default_rng(0).permutation(table.num_rows)
    assert parquet.permuted(table, order).equals(table.take(order))
