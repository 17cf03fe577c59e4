"""InputMode.SPARK on a real Spark cluster: RDD and DataFrame feeds, epochs, terminate, inference, bad rows."""

import json
import os
import time

import cloudpickle
import pytest

import nodefns
from tfos import TFCluster
from tfos.errors import ClusterFailedError

cloudpickle.register_pickle_by_value(nodefns)
SPARK = TFCluster.InputMode.SPARK

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def uneven_df(spark, sizes, width=4, bad_row=None):
    """A DataFrame whose partitions hold ``sizes`` rows: x (array<float> of ``width``), label (long)."""
    rows = []
    for p, n in enumerate(sizes):
        for i in range(n):
            w = width - 1 if bad_row == (p, i) else width
            rows.append((p, [float(i % 7)] * w, i % 2))
    df = spark.createDataFrame(rows, "p int, x array<float>, label long")
    return df.repartition(len(sizes), "p").sortWithinPartitions("p").drop("p")


def read(out, prefix, n):
    return [json.load(open(os.path.join(out, f"{prefix}{i}.json"))) for i in range(n)]


def test_dataframe_fit_with_uneven_partitions_and_epochs(spark_local_cluster, tmp_path):
    spark = spark_local_cluster
    df = uneven_df(spark, [50, 3, 0, 27])
    sizes = df.rdd.glom().map(len).collect()
    assert sorted(sizes) != [20, 20, 20, 20]  # really uneven
    cluster = TFCluster.run(spark.sparkContext, nodefns.feed_fit, {"out": str(tmp_path), "epochs": 2}, 2,
                            input_mode=SPARK, master_node="chief")
    cluster.train(df, num_epochs=2)
    cluster.shutdown(timeout=300)
    nodefns.assert_full_equal_epochs(read(tmp_path, "fit", 2), 2)


def test_rdd_epochs_with_the_tensorflowonspark_loop(spark_local_cluster, tmp_path):
    sc = spark_local_cluster.sparkContext
    rdd = sc.parallelize([(i, [i] * 3) for i in range(101)], 5)
    cluster = TFCluster.run(sc, nodefns.feed_count, {"out": str(tmp_path)}, 2, input_mode=SPARK)
    cluster.train(rdd, num_epochs=3)
    cluster.shutdown(timeout=120)
    counts = read(tmp_path, "count", 2)
    assert [c["rows"] for c in counts] == [150, 150]  # 101 // 2 = 50 rows per node per epoch; 1 row not fed
    # Every partition (20, 20, 20, 20 and 21 rows) feeds both nodes: its first half goes to node 0, the second
    # to node 1 (rounds of feed_chunk_rows = 1024 rows per node); the last partition's odd row is not fed.
    assert counts[0]["ids"] == [i for p in range(5) for i in range(20 * p, 20 * p + 10)]
    assert counts[1]["ids"] == [i for p in range(5) for i in range(20 * p + 10, 20 * p + 20)]
    assert counts[0]["sample"][1] == [counts[0]["sample"][0]] * 3


def test_terminate_stops_the_feed_early_without_failing(spark_local_cluster, tmp_path):
    sc = spark_local_cluster.sparkContext
    rdd = sc.parallelize(range(20000), 4)
    cluster = TFCluster.run(sc, nodefns.feed_count, {"out": str(tmp_path), "terminate_after": 30}, 2,
                            input_mode=SPARK)
    start = time.monotonic()
    cluster.train(rdd, num_epochs=50)
    assert time.monotonic() - start < 60
    cluster.shutdown(timeout=120)
    assert all(30 <= c["rows"] < 20000 for c in read(tmp_path, "count", 2))


def test_inference_keeps_count_and_order(spark_local_cluster):
    spark = spark_local_cluster
    sc = spark.sparkContext
    cluster = TFCluster.run(sc, nodefns.feed_double, {}, 2, input_mode=SPARK)
    try:
        data = list(range(103))
        assert cluster.inference(sc.parallelize(data, 4)).collect() == [2 * x for x in data]
        assert cluster.inference(sc.parallelize([], 3)).collect() == []
        df = spark.range(0, 57, 1, 3).toDF("id")
        out = cluster.inference(df, schema="doubled long").collect()
        assert [r.doubled for r in out] == [2 * i for i in range(57)]
    finally:
        cluster.shutdown(timeout=120)


def test_inference_through_arrays(spark_local_cluster):
    spark = spark_local_cluster
    sc = spark.sparkContext
    cluster = TFCluster.run(sc, nodefns.feed_double_arrays, {}, 2, input_mode=SPARK)
    try:
        out = cluster.inference(spark.range(0, 61, 1, 3).toDF("id"), schema="doubled long").collect()
        assert [r.doubled for r in out] == [2 * i for i in range(61)]
        assert cluster.inference(sc.parallelize(range(30), 2)).collect() == [2 * i for i in range(30)]
    finally:
        cluster.shutdown(timeout=120)


def test_row_of_wrong_shape_names_the_column(spark_local_cluster, tmp_path):
    spark = spark_local_cluster
    df = uneven_df(spark, [10, 10], bad_row=(1, 4))
    cluster = TFCluster.run(spark.sparkContext, nodefns.feed_fit, {"out": str(tmp_path), "epochs": 1}, 2,
                            input_mode=SPARK, master_node="chief")
    with pytest.raises(ClusterFailedError, match=r"(?s)column 'x'.*expected shape \(4,\)"):
        cluster.train(df, num_epochs=1)
        cluster.shutdown(timeout=120)


# A node killed mid-feed: tests/integration/test_feed_at_scale.py (at the sizes users feed).


def _python_workers() -> set[int]:
    import psutil

    return {p.pid for p in psutil.process_iter(["cmdline"]) if "pyspark.worker" in " ".join(p.info["cmdline"] or ())}


def test_feeding_tasks_leave_their_python_workers_for_the_next_task(spark_local_cluster, tmp_path):
    # A PySpark task that does not read its input to the end (to the iterator's StopIteration) loses its Python
    # worker: feeding tasks used to return once the plan's last frame was sent, and every partition of every
    # epoch paid for a new worker (a fork, tfos and pyarrow imported again).
    spark = spark_local_cluster
    df = spark.range(124, numPartitions=4).selectExpr("id", "array(float(id), 1.0f) AS x").cache()
    rdd = spark.sparkContext.parallelize(range(124), 4).cache()
    cluster = TFCluster.run(spark.sparkContext, nodefns.feed_count, {"out": str(tmp_path)}, 2, input_mode=SPARK,
                            feed_path="spark")
    try:
        df.mapInArrow(lambda batches: batches, df.schema).collect()  # the feed's kind of task: it starts workers
        rdd.mapPartitions(lambda rows: rows).collect()
        before = _python_workers()
        cluster.train(df, num_epochs=2)
        cluster.train(rdd, num_epochs=2)
        after = _python_workers()
    finally:
        cluster.shutdown(timeout=120)
    assert sum(c["rows"] for c in read(tmp_path, "count", 2)) == 2 * 2 * 124
    assert before and before <= after, f"workers gone: {sorted(before - after)}; new: {sorted(after - before)}"
