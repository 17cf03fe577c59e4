"""The Parquet fast path's pure parts (tfos._feed.parquet): equal shares, per-epoch shuffling, reading a share
from real Parquet files with pyarrow, and where the cache goes. No Spark, no TensorFlow."""

from __future__ import annotations

import json
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


def test_pieces_survive_their_wire_form():
    a, b = Piece("s3a://b/x.parquet", 2, 5, 9), Piece("s3a://b/y.parquet", 0, 0, 3)
    c = Piece("s3a://b/x.parquet", 1, 0, 7)
    wire = parquet.share_to_wire([[a, b], [c, a], []])
    assert wire["files"] == ["s3a://b/x.parquet", "s3a://b/y.parquet"]  # each path once
    assert parquet.share_from_wire(json.loads(json.dumps(wire))) == [[a, b], [c, a], []] and a.rows == 4


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


# Optimized plans as Spark 4.3 prints them (classic; Connect's "extended" explain has the same section).
PLAIN_PLANS = [
    "Relation [id#3L,f#4,v#5] parquet\n",
    "Project [v#5, id#3L]\n+- Relation [id#3L,f#4,v#5] parquet\n",
]
NOT_PLAIN_PLANS = [
    "Filter (isnotnull(id#3L) AND (id#3L > 3))\n+- Relation [id#3L,f#4,v#5] parquet\n",
    "Project [(id#3L + 1) AS id#7L]\n+- Relation [id#3L,f#4,v#5] parquet\n",
    "Project [id#3L AS x#8L]\n+- Relation [id#3L,f#4,v#5] parquet\n",
    "GlobalLimit 5\n+- LocalLimit 5\n   +- Relation [id#3L,f#4,v#5] parquet\n",
    "InMemoryRelation [id#3L, f#4, v#5], StorageLevel(disk, memory, deserialized, 1 replicas)\n"
    "   +- *(1) ColumnarToRow\n      +- FileScan parquet [id#3L,f#4,v#5] Batched: true\n",
    "Relation [id#0L,x#1] orc\n",
    "Range (0, 100, step=1, splits=Some(2))\n",
    "",
]


@pytest.mark.parametrize("plan", PLAIN_PLANS)
def test_a_parquet_relation_or_a_projection_of_its_columns_is_a_plain_scan(plan):
    assert parquet.is_plain_scan(plan)


@pytest.mark.parametrize("plan", NOT_PLAIN_PLANS)
def test_filters_expressions_aliases_limits_caches_and_other_sources_are_not(plan):
    assert not parquet.is_plain_scan(plan)


def test_a_file_is_read_as_the_dataframe_only_when_its_columns_have_the_dataframes_types():
    expected = pa.schema([("id", pa.int64()), ("v", pa.list_(pa.float32()))])
    spark_written = pa.schema([pa.field("id", pa.int64(), nullable=False), ("f", pa.float32()),
                               ("v", pa.list_(pa.field("element", pa.float32(), nullable=False)))])
    assert parquet.schema_problem(spark_written, expected) is None
    assert "no single column 'v'" in parquet.schema_problem(pa.schema([("id", pa.int64())]), expected)
    unsigned = pa.schema([("id", pa.uint32()), ("v", pa.list_(pa.float32()))])
    assert "'id' is uint32 in the file, int64" in parquet.schema_problem(unsigned, expected)
    doubles = pa.schema([("id", pa.int64()), ("v", pa.list_(pa.float64()))])
    assert "'v'" in parquet.schema_problem(doubles, expected)


def test_a_share_read_with_columns_has_only_those_in_that_order(tmp_path):
    path = str(tmp_path / "f.parquet")
    pq.write_table(pa.table({"a": list(range(10)), "b": [float(x) for x in range(10)], "c": ["x"] * 10}), path)
    batches = list(parquet.read_pieces([Piece(path, 0, 2, 7)], 100, None, columns=["c", "a"]))
    assert batches[0].schema.names == ["c", "a"] and batches[0].column(1).to_pylist() == [2, 3, 4, 5, 6]


def test_a_dataframe_file_this_node_cannot_read_says_it_is_read_directly(tmp_path):
    with pytest.raises(FeedError, match=r"own Parquet file .*feed_path=spark"):
        list(parquet.read_pieces([Piece(str(tmp_path / "gone.parquet"), 0, 0, 1)], 10, None, columns=["a"]))


class _JobCluster:
    """A FeedBackend whose feed jobs are recorded and answered with one footer row (no Spark)."""

    def __init__(self):
        self.jobs = []

    def _run_feed_job(self, action, description):
        self.jobs.append(description)

        class Row(dict):
            def asDict(self):
                return dict(self)

        return [Row(path="job", row_group=0, rows=1, problem=None)]


class _Session:
    def createDataFrame(self, data, schema):
        return None


def test_the_driver_reads_local_footers_itself_and_a_job_reads_the_rest(tmp_path):
    from tfos._feed.driver import _footer_rows

    path = str(tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": list(range(250))}), path, row_group_size=100)
    cluster = _JobCluster()
    rows = _footer_rows(cluster, _Session(), ["file://" + path], None, local=True)
    assert [(r["row_group"], r["rows"]) for r in rows] == [(0, 100), (1, 100), (2, 50)] and cluster.jobs == []
    # a Connect client (not Spark's driver), remote files, or a file the driver cannot read: a Spark job
    for files, local in ([path], False), (["s3://b/k.parquet"], True), ([str(tmp_path / "gone.parquet")], True):
        assert [r["path"] for r in _footer_rows(cluster, _Session(), files, None, local)] == ["job"]
    assert len(cluster.jobs) == 3
