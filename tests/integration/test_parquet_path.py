"""The feed's Parquet fast path (tfos._feed.parquet) on a real local-cluster: Spark writes the DataFrame once, the
TF nodes read their equal shares with pyarrow into the same bounded queues the Spark path fills. Partitions
outnumber the task slots and are larger than a node's queue; each test ends in bounded time and leaves no
process and no cache directory behind."""

import datetime
import json
import os
import time

import cloudpickle
import pytest

import nodefns
from tfos import TFCluster
from tfos.errors import ClusterFailedError, ConfigError

cloudpickle.register_pickle_by_value(nodefns)
SPARK = TFCluster.InputMode.SPARK
SMALL_QUEUE = {"feed_queue_chunks": 2, "feed_chunk_rows": 64}

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def typed_df(spark, rows=3_000, partitions=10):
    """Uneven partitions of several column types, each value a function of ``id``."""
    from pyspark.sql import functions as F

    return (spark.range(0, rows, 1, partitions)
            .withColumn("p", F.spark_partition_id())
            .where(F.col("id") % 10 < 4 + F.col("p") % 7)
            .select("id", (F.col("id") % 100).cast("int").alias("i"), (F.col("id") / 4).cast("float").alias("f"),
                    (F.col("id") / 8).cast("double").alias("d"), (F.col("id") % 2 == 0).alias("b"),
                    F.concat(F.lit("s"), F.col("id").cast("string")).alias("s"),
                    F.array(*[(F.col("id") + k).cast("float") for k in range(5)]).alias("v"),
                    F.date_add(F.lit(datetime.date(2026, 1, 1)), (F.col("id") % 300).cast("int")).alias("day")))


def check_row(row):
    n = row["id"]
    assert row["i"] == n % 100 and row["f"] == pytest.approx(n / 4) and row["d"] == pytest.approx(n / 8)
    assert row["b"] == (n % 2 == 0) and row["s"] == f"s{n}" and row["v"] == [float(n + k) for k in range(5)]
    assert row["day"] == str(datetime.date(2026, 1, 1) + datetime.timedelta(days=n % 300))


def test_typed_rows_arrive_whole_in_equal_shuffled_shares_every_epoch(spark_local_cluster, tmp_path):
    spark = spark_local_cluster
    df = typed_df(spark)
    ids = sorted(r.id for r in df.select("id").collect())
    cache = tmp_path / "cache"
    epochs, nodes = 3, 2
    quota = len(ids) // nodes
    cluster = TFCluster.run(spark.sparkContext, nodefns.read_typed_rows, {"out": str(tmp_path)}, nodes,
                            input_mode=SPARK, feed_path="parquet", feed_cache_dir=str(cache), feed_seed=11,
                            **SMALL_QUEUE)
    start = time.monotonic()
    cluster.train(df, epochs)
    assert os.listdir(cache) == []  # train() removed its cache directory
    cluster.shutdown(timeout=120)
    assert time.monotonic() - start < 150
    results = [json.load(open(tmp_path / f"typed{n}.json")) for n in range(nodes)]
    assert results[0]["dtypes"]["v"] == "float32" and results[0]["dtypes"]["f"] == "float32"
    per_epoch = []
    for r in results:
        got = r["rows"]
        assert len(got) == epochs * quota  # exactly the node's share, every epoch
        for row in got[::97]:
            check_row(row)
        per_epoch.append([[row["id"] for row in got[e * quota:(e + 1) * quota]] for e in range(epochs)])
    for e in range(epochs):
        fed = [i for node in per_epoch for i in node[e]]
        assert len(set(fed)) == len(fed) == quota * nodes and set(fed) <= set(ids)  # no row twice
    orders = [per_epoch[0][e] for e in range(epochs)]
    assert orders[0] != orders[1] != orders[2]  # shuffled per epoch (feed_seed)
    assert orders[0] != sorted(orders[0])
    # feed_local_cache (default): each node keeps its rows for the whole call, decoded once
    assert all(sorted(node[e]) == sorted(node[0]) for node in per_epoch for e in range(epochs))


@pytest.mark.parametrize("feed_path", ["parquet", "spark"])
def test_terminate_mid_epoch_ends_train_early_on_either_path(spark_local_cluster, tmp_path, feed_path):
    spark = spark_local_cluster
    df = spark.range(0, 20_000, 1, 8).selectExpr("id", "id * 2 as x")
    cluster = TFCluster.run(spark.sparkContext, nodefns.feed_count, {"out": str(tmp_path), "terminate_after": 700},
                            2, input_mode=SPARK, feed_path=feed_path, **SMALL_QUEUE)
    start = time.monotonic()
    cluster.train(df, 5)  # each node stops reading after 700 of its 10,000 rows of the first epoch
    assert time.monotonic() - start < 90
    cluster.shutdown(timeout=60)
    counts = [json.load(open(tmp_path / f"count{n}.json")) for n in range(2)]
    assert all(700 <= c["rows"] < 10_000 for c in counts), counts


def test_a_node_killed_mid_epoch_fails_fast_and_the_cache_is_removed(spark_local_cluster, tmp_path):
    spark = spark_local_cluster
    cache = tmp_path / "cache"
    df = spark.range(0, 40_000, 1, 8).selectExpr("id", "array_repeat(cast(id as float), 64) as x",
                                                 "id % 10 as label")
    cluster = TFCluster.run(spark.sparkContext, nodefns.feed_slowly, {"out": str(tmp_path)}, 2, input_mode=SPARK,
                            feed_path="parquet", feed_cache_dir=str(cache), **SMALL_QUEUE)
    killed = nodefns.kill_when_feeding(tmp_path / "pid1")
    with pytest.raises(ClusterFailedError, match=r"(?s)Root cause \(first observed failure\): node 1.*signal 9"):
        cluster.train(df, num_epochs=3)
    assert time.monotonic() - killed["at"] < 30
    assert not cache.exists() or os.listdir(cache) == []
    with pytest.raises(ClusterFailedError):
        cluster.shutdown(timeout=60)


def test_a_cache_directory_that_cannot_be_written_fails_early_and_says_what_to_set(spark_local_cluster, tmp_path):
    spark = spark_local_cluster
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cluster = TFCluster.run(spark.sparkContext, nodefns.feed_count, {"out": str(tmp_path)}, 2, input_mode=SPARK,
                            feed_path="parquet", feed_cache_dir=str(blocker / "cache"))
    try:
        start = time.monotonic()
        with pytest.raises(ConfigError, match=r"could not write its cache to .*a-file/cache.*feed_cache_dir"):
            cluster.train(spark.range(0, 100, 1, 2), 1)
        assert time.monotonic() - start < 60
    finally:
        cluster.shutdown(timeout=60)


def test_a_plain_parquet_scan_is_read_from_its_own_files_and_no_cache_is_written(spark_local_cluster, tmp_path):
    spark = spark_local_cluster
    src = str(tmp_path / "src")
    typed_df(spark).write.option("parquet.block.size", str(32 << 10)).parquet(src)  # many small row groups
    files_before = sorted(os.listdir(src))
    columns = ["day", "v", "s", "b", "d", "f", "i", "id"]  # a projection, in another order than the files'
    df = spark.read.parquet(src).select(*columns)
    ids = sorted(r.id for r in df.select("id").collect())
    cache = tmp_path / "cache"
    epochs, nodes = 2, 2
    quota = len(ids) // nodes
    cluster = TFCluster.run(spark.sparkContext, nodefns.read_typed_rows, {"out": str(tmp_path)}, nodes,
                            input_mode=SPARK, feed_cache_dir=str(cache), feed_seed=5, **SMALL_QUEUE)
    cluster.train(df, epochs)
    cluster.shutdown(timeout=120)
    assert not cache.exists()  # nothing was written: the nodes read the DataFrame's files
    assert sorted(os.listdir(src)) == files_before  # and the DataFrame's files are left as they were
    for n in range(nodes):
        result = json.load(open(tmp_path / f"typed{n}.json"))
        assert list(result["dtypes"]) == columns  # only the DataFrame's columns, in its order
        got = result["rows"]
        assert len(got) == epochs * quota
        for row in got[::53]:
            check_row(row)
        for e in range(epochs):
            epoch_ids = [row["id"] for row in got[e * quota:(e + 1) * quota]]
            assert len(set(epoch_ids)) == quota and set(epoch_ids) <= set(ids)


def test_parquet_scans_that_are_not_plain_or_whose_types_spark_converts_go_through_the_cache(
        spark_local_cluster, tmp_path, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    spark = spark_local_cluster
    src = tmp_path / "unsigned"
    src.mkdir()
    for k in range(3):  # written by pyarrow: Spark reads uint32 as bigint, so the files are not the DataFrame
        pq.write_table(pa.table({"id": pa.array(range(k * 1000, (k + 1) * 1000), pa.int64()),
                                 "u": pa.array(range(1000), pa.uint32())}), str(src / f"part-{k}.parquet"))
    cache = tmp_path / "cache"
    caplog.set_level("INFO", logger="tfos._feed.driver")
    cluster = TFCluster.run(spark.sparkContext, nodefns.feed_count, {"out": str(tmp_path)}, 2, input_mode=SPARK,
                            feed_cache_dir=str(cache), **SMALL_QUEUE)
    cluster.train(spark.read.parquet(str(src)), 1)
    cluster.shutdown(timeout=120)
    assert "column 'u' is uint32 in the file, int64 in the DataFrame" in caplog.text
    assert cache.exists() and os.listdir(cache) == []  # written, read, removed
    counts = [json.load(open(tmp_path / f"count{n}.json")) for n in range(2)]
    fed = [i for c in counts for i in c["ids"]]
    assert all(c["rows"] == 1500 for c in counts) and sorted(fed) == list(range(3000))


def test_auto_feeds_a_short_call_of_a_computed_dataframe_through_spark_tasks(spark_local_cluster, tmp_path, caplog):
    spark = spark_local_cluster
    caplog.set_level("INFO", logger="tfos._feed.driver")
    cluster = TFCluster.run(spark.sparkContext, nodefns.feed_count, {"out": str(tmp_path)}, 2, input_mode=SPARK,
                            **SMALL_QUEUE)
    cluster.train(spark.range(0, 2_000, 1, 4).selectExpr("id", "id * 2 as x"), 2)  # not a Parquet scan
    cluster.shutdown(timeout=120)
    assert "writing it to the cache pays off from 10 epochs" in caplog.text and "(spark path)" in caplog.text
    counts = [json.load(open(tmp_path / f"count{n}.json")) for n in range(2)]
    assert all(c["rows"] == 2_000 for c in counts)  # 1,000 rows per node per epoch, 2 epochs
