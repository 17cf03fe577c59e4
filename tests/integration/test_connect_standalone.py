"""tfos from a Spark Connect session whose server runs on the standalone test cluster (2 workers x 1 core):
the deployment the README describes (a Connect server started on a standalone cluster, clients with
``--remote``/``SPARK_REMOTE``).

One Connect server for the module: InputMode.TENSORFLOW, inference and training through the Spark feed (Keras,
MultiWorkerMirroredStrategy on 2 nodes), and a node failure that comes back with its traceback. The local
Connect tests (test_connect.py) cover the rest on a local-cluster master.
"""

import json

import cloudpickle
import pytest

import nodefns
import nodefns_connect
from connect_server import connect_session
from conftest import DRIVER_CONF, STANDALONE_CONF
from tfos import TFCluster
from tfos.errors import ClusterFailedError

# The Connect client needs pyspark[connect]'s extras (the test extra lists them); say so instead of an ImportError.
for _module in ("google.rpc.status_pb2", "grpc_status", "zstandard"):
    pytest.importorskip(_module, reason="Spark Connect client dependencies missing: pip install 'pyspark[connect]'")
cloudpickle.register_pickle_by_value(nodefns)
cloudpickle.register_pickle_by_value(nodefns_connect)

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


@pytest.fixture(scope="module")
def connect_standalone(spark_sessions, standalone_cluster, tmp_path_factory):
    spark_sessions.stop()  # the standalone cluster's 2 cores go to the Connect server's application
    log = tmp_path_factory.mktemp("connect-standalone") / "server.log"
    with connect_session(standalone_cluster.master_url, {**DRIVER_CONF, **STANDALONE_CONF}, str(log)) as spark:
        yield spark


def test_tensorflow_mode_and_inference_on_standalone(connect_standalone, tmp_path):
    spark = connect_standalone
    assert spark.conf.get("spark.master").startswith("spark://")
    cluster = TFCluster.run(spark, nodefns.record_ctx, {"out": str(tmp_path)}, 2, master_node="chief")
    cluster.shutdown(timeout=300)
    chief, worker = (json.load(open(tmp_path / f"node{i}.json")) for i in range(2))
    assert chief["tf_config"]["task"] == {"type": "chief", "index": 0}
    assert worker["tf_config"]["cluster"] == chief["cluster_spec"] and worker["legacy"] == "1"
    assert {chief["spark_executor_id"], worker["spark_executor_id"]} == {"0", "1"}  # one node per executor
    assert [n["job_name"] for n in cluster.cluster_info] == ["chief", "worker"]

    cluster = TFCluster.run(spark, nodefns.feed_double_arrays, {}, 2, input_mode=TFCluster.InputMode.SPARK)
    try:
        out = cluster.inference(spark.range(0, 40, 1, 4).toDF("id"), schema="doubled long").collect()
        assert [r.doubled for r in out] == [2 * i for i in range(40)]
    finally:
        cluster.shutdown(timeout=120)


def test_spark_feed_training_and_a_node_failure_on_standalone(connect_standalone, tmp_path):
    spark = connect_standalone
    rows = [(p, [float(i % 7)] * 4, i % 2) for p, n in enumerate([50, 3, 27]) for i in range(n)]
    df = spark.createDataFrame(rows, "p int, x array<float>, label long").repartition(3, "p").drop("p")
    cluster = TFCluster.run(spark, nodefns.feed_fit, {"out": str(tmp_path), "epochs": 1}, 2,
                            input_mode=TFCluster.InputMode.SPARK, master_node="chief")
    assert [n["job_name"] for n in cluster.cluster_info] == ["chief", "worker"]
    assert {n["spark_executor_id"] for n in cluster.cluster_info} == {"0", "1"}
    cluster.train(df, num_epochs=1)
    cluster.shutdown(timeout=300)
    nodefns.assert_full_equal_epochs([json.load(open(tmp_path / f"fit{i}.json")) for i in range(2)], 1)

    cluster = TFCluster.run(spark, nodefns_connect.fail_on, {"fail": 1, "others_sleep": 120}, 2, stop_grace_secs=2)
    with pytest.raises(ClusterFailedError, match=(
            r"(?s)Root cause \(first observed failure\): node 1, worker:1.*exit code 1.*"
            r"ValueError: connect boom on node 1.*Traceback.*nodefns_connect.py.*Other nodes:.*"
            r"\[node 0\]: stopped because the cluster failed")) as info:
        cluster.shutdown(timeout=120)
    assert "marker line before the failure" in info.value.root_cause.log_tail
