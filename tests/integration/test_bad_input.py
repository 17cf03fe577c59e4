"""Bad input through real cluster runs: each ends in a clear error on the driver, and nothing is left behind.

Covered elsewhere (not repeated here): num_executors larger than the cluster and spark.task.cpus that leaves too
few slots (test_cluster.py::test_too_few_slots_is_an_early_actionable_error, test_tfparallel.py), dynamic allocation
(tests/unit/test_placement.py), an unpicklable main_fun (test_cluster.py::test_unpicklable_main_fun_is_a_clear_error),
a DataFrame row of the wrong shape in feed.dataset() (test_spark_feed.py::test_row_of_wrong_shape_names_the_column),
an empty partition (test_spark_feed.py::test_dataframe_fit_with_uneven_partitions_and_epochs), wrong shapes in
next_arrays (tests/unit/test_datafeed_shapes.py).

spark.task.cpus below spark.executor.cores (several nodes in one executor) is not refused: the nodes work, with
a warning that names the fix (test_nodes_sharing_an_executor_get_a_warning_that_names_the_fix).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid

import cloudpickle
import pytest

import nodefns
from tfos import TFCluster
from tfos._data.tfrecord import write_records
from tfos.errors import ClusterFailedError, ConfigError

cloudpickle.register_pickle_by_value(nodefns)
cloudpickle.register_pickle_by_value(sys.modules[__name__])
SPARK = TFCluster.InputMode.SPARK

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def use_tf_keras(args, ctx):
    """Builds a tf.keras model in a Python where tf_keras is not installed (a shim dir shadows the real one)."""
    sys.path.insert(0, args["shim"])
    import tensorflow as tf

    tf.keras.Sequential([tf.keras.Input(shape=(2,)), tf.keras.layers.Dense(1)])


def read_tfrecords(args, ctx):
    from tfos import data

    for _ in data.tfrecord_dataset(args["path"], shard=False):
        pass


def _run_and_fail(sc, fn, args, num_executors=1, **kwargs) -> str:
    """Runs a cluster that must fail; returns the driver's error text (checked to hold no cluster secret)."""
    made = []
    with pytest.raises(ClusterFailedError) as info:
        made.append(TFCluster.run(sc, fn, args, num_executors, **kwargs))
        made[0].shutdown(timeout=180)
    text = str(info.value)
    if made:
        assert made[0]._config.spec.secret not in text
    return text


def test_missing_tf_keras_says_how_to_install_it(spark_local_cluster, tmp_path):
    shim = tmp_path / "no_tf_keras"
    shim.mkdir()
    (shim / "tf_keras.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'tf_keras'\", name='tf_keras')\n")
    text = _run_and_fail(spark_local_cluster.sparkContext, use_tf_keras, {"shim": str(shim)})
    assert "Root cause" in text and "ImportError" in text
    assert "pip install tf-keras" in text and "TFOS_LEGACY_KERAS=0" in text


def test_exception_while_importing_main_funs_module(spark_local_cluster, tmp_path):
    sc = spark_local_cluster.sparkContext
    name = f"tfos_badmod_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(
        "import os\n"
        "if 'TF_CONFIG' in os.environ:  # only in the TF process: the driver imports it fine\n"
        "    raise RuntimeError('cannot open /etc/model.yaml at import time')\n"
        "def main(args, ctx):\n"
        "    pass\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        module = __import__(name)
        sc.addPyFile(str(path))  # executors can import it: main_fun is pickled by reference
        text = _run_and_fail(sc, module.main, {})
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
    assert "RuntimeError: cannot open /etc/model.yaml at import time" in text
    assert "while loading main_fun in the TF process" in text and f"{name}.py" in text


def test_empty_rdd_and_too_few_rows_are_refused_and_the_cluster_goes_on(spark_local_cluster, tmp_path):
    sc = spark_local_cluster.sparkContext
    cluster = TFCluster.run(sc, nodefns.feed_count, {"out": str(tmp_path)}, 2, input_mode=SPARK)
    try:
        with pytest.raises(ConfigError, match=r"train\(\) got 0 rows for 2 training nodes: each node needs at "
                                              r"least one row per epoch"):
            cluster.train(sc.parallelize([], 3), num_epochs=1)
        with pytest.raises(ConfigError, match=r"train\(\) got 1 rows for 2 training nodes"):
            cluster.train(sc.parallelize([7], 2), num_epochs=1)
        cluster.train(sc.parallelize(range(4), 7), num_epochs=1)  # most of the 7 partitions are empty
    finally:
        cluster.shutdown(timeout=120)
    counts = [json.load(open(tmp_path / f"count{i}.json"))["rows"] for i in range(2)]
    assert counts == [2, 2]


def test_corrupt_tfrecord_is_named_with_its_offset(spark_local_cluster, tmp_path):
    data_dir = tmp_path / "records"
    data_dir.mkdir()
    for i in range(2):
        with open(data_dir / f"part-{i:05d}.tfrecord", "wb") as f:
            write_records(f, (f"record {i}:{r}".encode() * 10 for r in range(20)))
    bad = data_dir / "part-00001.tfrecord"
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    text = _run_and_fail(spark_local_cluster.sparkContext, read_tfrecords, {"path": str(data_dir)})
    assert "Root cause" in text
    assert "[tfos.data]" in text and "part-00001.tfrecord: corrupted record" in text
    assert "at byte offset" in text


@pytest.fixture
def s3a_settings(spark_local_cluster, monkeypatch):
    """Sets Spark's Hadoop S3A settings (what the TF nodes get as AWS_*) for one test; unset afterwards."""
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    hadoop = spark_local_cluster.sparkContext._jsc.hadoopConfiguration()
    done = []

    def apply(**settings):
        for key, value in settings.items():
            hadoop.set(f"fs.s3a.{key}", value)
            done.append(f"fs.s3a.{key}")

    yield apply
    for key in done:
        hadoop.unset(key)


def test_missing_bucket_is_named(spark_local_cluster, s3_server, s3a_settings):
    s3a_settings(**{"endpoint": s3_server.endpoint, "path.style.access": "true",
                    "access.key": s3_server.access_key, "secret.key": s3_server.secret_key})
    text = _run_and_fail(spark_local_cluster.sparkContext, read_tfrecords,
                         {"path": "s3://no-such-bucket-tfos/train/*.tfrecord"})
    assert "StorageError" in text and "there is no bucket 'no-such-bucket-tfos'" in text
    assert s3_server.secret_key not in text


def test_unreachable_s3_endpoint_is_named(spark_local_cluster, s3a_settings):
    s3a_settings(**{"endpoint": "http://127.0.0.1:9", "path.style.access": "true",
                    "access.key": "AKIAEXAMPLE", "secret.key": "do-not-print-me"})
    text = _run_and_fail(spark_local_cluster.sparkContext, read_tfrecords, {"path": "s3://data/train"})
    assert "StorageError" in text and "S3 endpoint: http://127.0.0.1:9" in text
    assert "do-not-print-me" not in text


# One executor with 2 cores and 1 CPU per task: both nodes land in the same executor.
SHARED_EXECUTOR_MASTER = "local-cluster[1,2,1024]"


def test_nodes_sharing_an_executor_get_a_warning_that_names_the_fix(spark_sessions, tmp_path, caplog):
    # InputMode.SPARK, the mode that relies most on executors: the feed still reaches both nodes (it goes to each
    # node's own socket, not to an executor-wide queue as in TensorFlowOnSpark), so a warning is enough.
    spark_sessions.stop()
    try:
        conf = {"spark.executor.cores": "2", "spark.task.cpus": "1"}
        sc = spark_sessions.get(SHARED_EXECUTOR_MASTER, conf).sparkContext
        with caplog.at_level(logging.WARNING, logger="tfos.cluster"):
            cluster = TFCluster.run(sc, nodefns.feed_count, {"out": str(tmp_path)}, 2, input_mode=SPARK)
        try:
            cluster.train(sc.parallelize(range(4), 2), num_epochs=1)
        finally:
            cluster.shutdown(timeout=120)
    finally:
        spark_sessions.stop()  # this master's settings must not reach other tests
    assert {n["spark_executor_id"] for n in cluster.cluster_info} == {"0"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "tfos.cluster"]
    assert any("several TF nodes share a Spark executor" in w and "[0, 1]" in w and
               "spark.task.cpus = spark.executor.cores" in w for w in warnings), warnings
    assert [json.load(open(tmp_path / f"count{i}.json"))["rows"] for i in range(2)] == [2, 2]
