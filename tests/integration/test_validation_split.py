"""``cluster.train(data, num_epochs, validation_data=val)`` with ``feed.dataset(split="validation")``.

Two one-slot executors, more partitions than slots, and validation data far larger than a node's training queue
(``feed_queue_chunks`` x ``feed_chunk_rows`` = 128 rows here): each node writes its share to its disk as it
arrives, and Keras replays it at every epoch. The row ids the nodes' datasets yielded show that every node saw
exactly its equal share each epoch, the same rows in the same order, and no validation row in training.
"""

import json
import math

import cloudpickle
import pytest

import nodefns
from tfos import TFCluster
from tfos.errors import ClusterFailedError, ConfigError

cloudpickle.register_pickle_by_value(nodefns)
SPARK = TFCluster.InputMode.SPARK
SMALL_QUEUE = {"feed_queue_chunks": 2, "feed_chunk_rows": 64}
VAL_BASE = 100_000  # validation row ids start here; training ids are below
TRAIN_SIZES = [150] * 6
VAL_SIZES = [601, 400, 333, 250, 17]  # 1,601 rows for 2 nodes: 800 each, one not fed

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def rows_rdd(sc, sizes, base):
    """Partitions of ``sizes[p]`` rows ``([id, 1, 2, 3], id % 2)``, ids counting up from ``base``."""
    starts = [base + sum(sizes[:p]) for p in range(len(sizes))]

    def rows(p):
        return [([float(starts[p] + i), 1.0, 2.0, 3.0], (starts[p] + i) % 2) for i in range(sizes[p])]

    return sc.parallelize(range(len(sizes)), len(sizes)).flatMap(rows)


def range_df(spark, rows, partitions, base):
    """The same rows as a DataFrame (``x array<float>, label long``), made by ``spark.range``."""
    from pyspark.sql import functions as F

    return spark.range(base, base + rows, 1, partitions).select(
        F.array(F.col("id").cast("float"), *[F.lit(float(v)).cast("float") for v in (1, 2, 3)]).alias("x"),
        (F.col("id") % 2).alias("label"))


def check_shares(out, train_rows, val_rows, epochs):
    """Every node saw ``val_rows // 2`` validation rows each epoch, the same in the same order, disjoint from the
    other node's, and ``train_rows // 2`` training rows, none of them a validation row."""
    nodes = [json.load(open(out / f"validation{i}.json")) for i in range(2)]
    shares = []
    for seen in nodes:
        assert len(seen) == epochs
        assert all(e["val"] == seen[0]["val"] for e in seen)  # replayed from the first row, identically
        assert len(seen[0]["val"]) == val_rows // 2 and all(i >= VAL_BASE for i in seen[0]["val"])
        assert all(len(e["train"]) == train_rows // 2 and max(e["train"]) < VAL_BASE for e in seen)
        assert all(math.isfinite(e["val_loss"]) for e in seen)
        shares.append(set(seen[0]["val"]))
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == 2 * (val_rows // 2)


@pytest.mark.parametrize("kind", ["rdd", "dataframe", "dataframe-spark-path"])
def test_fit_with_validation_data_replays_each_nodes_equal_share_every_epoch(spark_local_cluster, tmp_path, kind):
    spark = spark_local_cluster
    sc = spark.sparkContext
    path = {"dataframe": {"feed_path": "parquet"}, "dataframe-spark-path": {"feed_path": "spark"}}.get(kind, {})
    if kind == "rdd":
        data, val, label = rows_rdd(sc, TRAIN_SIZES, 0), rows_rdd(sc, VAL_SIZES, VAL_BASE), 1
    else:
        data, val, label = range_df(spark, 900, 6, 0), range_df(spark, 1601, 5, VAL_BASE), "label"
    # The Parquet-path run reads both splits with feed.dataset(batch_size=...), the others with .batch().
    args = {"out": str(tmp_path), "batch": 16, "epochs": 2, "label": label, "batched": kind == "dataframe"}
    cluster = TFCluster.run(sc, nodefns.fit_with_validation, args, 2, input_mode=SPARK, master_node="chief",
                            **SMALL_QUEUE, **path)
    try:
        cluster.train(data, num_epochs=2, validation_data=val)
    finally:
        cluster.shutdown(timeout=120)
    check_shares(tmp_path, 900, 1601, 2)


def test_a_too_small_validation_set_and_a_split_without_validation_data_are_clear_errors(spark_local_cluster):
    sc = spark_local_cluster.sparkContext
    cluster = TFCluster.run(sc, nodefns.validation_split_only, {}, 2, input_mode=SPARK, stop_grace_secs=2,
                            **SMALL_QUEUE)
    data = rows_rdd(sc, [100, 100], 0)
    with pytest.raises(ConfigError, match="got 1 validation rows for 2 training nodes: each node needs at least one "
                                          "validation row"):
        cluster.train(data, 1, validation_data=rows_rdd(sc, [1, 0], VAL_BASE))
    message = r"(?s)Root cause.*this train\(\) call has no validation data.*validation_data=val_data"
    with pytest.raises(ClusterFailedError, match=message):
        cluster.train(data, 1)  # raises here if the nodes failed before the feed job ended,
        cluster.shutdown(timeout=60)  # else here
    with pytest.raises(ClusterFailedError, match=message):
        cluster.shutdown(timeout=60)


@pytest.fixture(scope="module")
def connect(spark_sessions, tmp_path_factory):
    """A Connect client session on a Connect server whose application runs on ``local-cluster[2,1,1024]``."""
    pytest.importorskip("grpc", reason="Spark Connect client dependencies missing: pip install 'pyspark[connect]'")
    from conftest import DRIVER_CONF, LOCAL_CLUSTER_MASTER
    from connect_server import connect_session

    spark_sessions.stop()  # no classic session beside the Connect client
    with connect_session(LOCAL_CLUSTER_MASTER, DRIVER_CONF, str(tmp_path_factory.mktemp("connect") / "server.log")) \
            as spark:
        yield spark


def test_validation_data_under_spark_connect(connect, tmp_path):
    args = {"out": str(tmp_path), "batch": 16, "epochs": 2, "label": "label"}
    cluster = TFCluster.run(connect, nodefns.fit_with_validation, args, 2, input_mode=SPARK, master_node="chief",
                            **SMALL_QUEUE)
    try:
        with pytest.raises(ConfigError, match="under Spark Connect there is no SparkContext"):
            cluster.train(range_df(connect, 900, 6, 0), 2, validation_data=[1, 2])
        cluster.train(range_df(connect, 300, 3, 0), num_epochs=2,
                      validation_data=range_df(connect, 601, 3, VAL_BASE))
    finally:
        cluster.shutdown(timeout=120)
    check_shares(tmp_path, 300, 601, 2)
