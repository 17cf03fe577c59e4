"""InputMode.SPARK at the sizes and shapes users feed: partitions outnumber the task slots (one per executor)
at least 5 to 1, and every partition is larger than a node's queue (``feed_queue_chunks`` x
``feed_chunk_rows`` rows, made small here so that the tests stay fast). Each test states the time it must
end in; none leaves a process behind.
"""

import json
import os
import time

import cloudpickle
import pytest

import nodefns
from tfos import TFCluster
from tfos.errors import ClusterFailedError, ConfigError, FeedStallError

cloudpickle.register_pickle_by_value(nodefns)
SPARK = TFCluster.InputMode.SPARK
# A node queues 2 messages of 64 rows: 128 rows, against partitions of 1,000 rows (about 2 MB pickled).
SMALL_QUEUE = {"feed_queue_chunks": 2, "feed_chunk_rows": 64}

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def mnist_like_rdd(sc, partitions, rows_per_partition):
    """TensorFlowOnSpark's MNIST CSV rows as its example parses them: ([784 ints], label), made on the executors."""
    def rows(p):
        return [([(p + i + j) % 256 for j in range(784)], (p + i) % 10) for i in range(rows_per_partition)]

    return sc.parallelize(range(partitions), partitions).flatMap(rows)


def read(out, prefix, n):
    return [json.load(open(os.path.join(out, f"{prefix}{i}.json"))) for i in range(n)]


def test_tensorflowonspark_loop_with_many_large_partitions_on_two_slots(spark_local_cluster, tmp_path):
    sc = spark_local_cluster.sparkContext
    assert sc.defaultParallelism == 2  # two executors with one task slot each
    rdd = mnist_like_rdd(sc, 12, 1000)  # 12 partitions for 2 slots, each 8x a node's queue
    args = {"out": str(tmp_path), "batch": 32, "rows": 12_000, "epochs": 2}
    start = time.monotonic()
    cluster = TFCluster.run(sc, nodefns.tfos_loop_fit, args, 2, input_mode=SPARK, master_node="chief",
                            **SMALL_QUEUE)
    cluster.train(rdd, args["epochs"])  # fit stops at 90% of the 2nd epoch and terminates the feed mid-epoch
    cluster.shutdown(timeout=240)
    assert time.monotonic() - start < 240
    results = read(tmp_path, "loop", 2)
    assert all(r["steps"] == 2 * r["expected"] == 2 * 168 for r in results)


@pytest.mark.parametrize("feed_path", ["parquet", "spark"])
def test_dataframe_dataset_fit_on_three_nodes_over_several_epochs(spark_local_cluster3, tmp_path, feed_path):
    from pyspark.sql import functions as F

    spark = spark_local_cluster3
    # 15 partitions of 400 to 1,100 rows of 784 floats (uneven), for 3 slots
    df = (spark.range(0, 11_250, 1, 15)
          .withColumn("p", F.spark_partition_id())
          .where(F.col("id") % 15 < 6 + F.col("p") % 10)
          .select(F.array_repeat((F.col("id") % 7).cast("float"), 784).alias("x"), (F.col("id") % 10).alias("label")))
    sizes = df.rdd.glom().map(len).collect()
    assert len(sizes) == 15 and min(sizes) > 128 and len(set(sizes)) > 3
    args = {"out": str(tmp_path), "batch": 16, "epochs": 3}
    start = time.monotonic()
    cluster = TFCluster.run(spark.sparkContext, nodefns.feed_fit_images, args, 3, input_mode=SPARK,
                            master_node="chief", feed_path=feed_path, **SMALL_QUEUE)
    cluster.train(df, num_epochs=3)
    cluster.shutdown(timeout=300)
    assert time.monotonic() - start < 300
    quota = sum(sizes) // 3
    results = read(tmp_path, "images", 3)
    steps = {r["steps"] for r in results}
    assert len(steps) == 1 and all(r["epochs"] == 3 for r in results)  # equal steps on every node
    # MWMS re-batches each node's (un-sharded) dataset to the global batch / 3 = 16 rows a step
    assert steps.pop() in range(3 * (quota // 16), 3 * (quota // 16 + 2) + 1)


def test_a_node_that_stops_reading_fails_train_with_a_stall_report(spark_local_cluster, tmp_path):
    sc = spark_local_cluster.sparkContext
    cluster = TFCluster.run(sc, nodefns.read_a_little_then_stop, {"sleep": 600}, 2, input_mode=SPARK,
                            feed_stall_timeout=5, **SMALL_QUEUE)
    start = time.monotonic()
    with pytest.raises(FeedStallError) as stalled:
        cluster.train(mnist_like_rdd(sc, 10, 1000), 1)
    assert time.monotonic() - start < 45  # the stall timeout, then every task ends at once: no Spark retries
    text = str(stalled.value)
    assert "The Spark feed stalled in epoch 1/1" in text and "feed_stall_timeout=5s" in text
    assert "node 0: received" in text and "node 1: received" in text and "the TF process answers" in text
    assert "alive, last heartbeat" in text and "read 10 rows and stops reading" in text
    assert "feed.terminate()" in text
    with pytest.raises(ConfigError, match="after shutdown"):  # the nodes were stopped
        cluster.train(mnist_like_rdd(sc, 2, 10), 1)
    with pytest.raises(ClusterFailedError, match="the Spark feed stalled"):  # and shutdown says why
        cluster.shutdown(timeout=60)


def test_a_node_killed_mid_feed_fails_fast_with_its_root_cause(spark_local_cluster, tmp_path):
    sc = spark_local_cluster.sparkContext
    cluster = TFCluster.run(sc, nodefns.feed_slowly, {"out": str(tmp_path)}, 2, input_mode=SPARK, **SMALL_QUEUE)
    killed = nodefns.kill_when_feeding(tmp_path / "pid1")
    with pytest.raises(ClusterFailedError, match=r"(?s)Root cause \(first observed failure\): node 1.*signal 9"):
        cluster.train(mnist_like_rdd(sc, 12, 1000), num_epochs=3)
    assert time.monotonic() - killed["at"] < 30
    with pytest.raises(ClusterFailedError):
        cluster.shutdown(timeout=60)


def test_inference_over_many_partitions_on_few_slots(spark_local_cluster):
    spark = spark_local_cluster
    sc = spark.sparkContext
    cluster = TFCluster.run(sc, nodefns.feed_double, {}, 2, input_mode=SPARK, **SMALL_QUEUE)
    try:
        start = time.monotonic()
        data = list(range(24_000))
        assert cluster.inference(sc.parallelize(data, 24)).collect() == [2 * x for x in data]
        out = cluster.inference(spark.range(0, 24_000, 1, 24).toDF("id"), schema="doubled long").collect()
        assert [r.doubled for r in out] == [2 * i for i in range(24_000)]
        assert time.monotonic() - start < 120
    finally:
        cluster.shutdown(timeout=120)
