"""tfos from a Spark Connect session: a real Connect server (local-cluster master, 2 executors) in its own
process; this test process is only a Connect client, with no SparkContext.

Covers InputMode.TENSORFLOW training, a node failure with its traceback, the Spark feed (DataFrame train and
inference back to a DataFrame), a failure while feeding, node 0's own task dying, TFParallel, and the errors
for what Connect cannot do.
"""

import contextlib
import json
import logging
import os
import threading

import cloudpickle
import psutil
import pytest

import nodefns
import nodefns_connect
import nodefns_more
from connect_server import connect_session
from conftest import DRIVER_CONF, LOCAL_CLUSTER_MASTER
from tfos import TFCluster, TFParallel, fs
from tfos.errors import ClusterFailedError, ConfigError, PlacementError
from tfos.pipeline import TFEstimator, TFModel

# The Connect client needs pyspark[connect]'s extras (the test extra lists them); say so instead of an ImportError.
for _module in ("google.rpc.status_pb2", "grpc_status", "zstandard"):
    pytest.importorskip(_module, reason="Spark Connect client dependencies missing: pip install 'pyspark[connect]'")
cloudpickle.register_pickle_by_value(nodefns)
cloudpickle.register_pickle_by_value(nodefns_connect)
cloudpickle.register_pickle_by_value(nodefns_more)
SPARK = TFCluster.InputMode.SPARK

pytestmark = pytest.mark.usefixtures("no_leftover_processes")
# S3A settings reach the client through spark.conf (no JVM) and the TF processes as AWS_* variables, except
# secrets, which a Connect server never shows its clients: those come from spark.executorEnv.
S3A_CONF = {"spark.hadoop.fs.s3a.access.key": "hidden-from-clients", "spark.hadoop.fs.s3a.endpoint": "127.0.0.1:9",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
            "spark.executorEnv.AWS_ACCESS_KEY_ID": "from-executor-env"}


def _listening() -> set:
    """This process's listening TCP sockets (address, port)."""
    return {tuple(c.laddr) for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


@contextlib.contextmanager
def _new_listeners():
    """Collects the TCP sockets this process starts listening on inside the block (sampled every 0.2 s)."""
    before, seen, stop = _listening(), set(), threading.Event()

    def watch():
        while not stop.wait(0.2):
            seen.update(_listening() - before)

    watcher = threading.Thread(target=watch, name="listen-watch", daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join(10)
        seen.update(_listening() - before)


@pytest.fixture(scope="module")
def connect(spark_sessions, tmp_path_factory):
    """A Connect client session on a Connect server whose application runs on ``local-cluster[2,1,1024]``."""
    spark_sessions.stop()  # no classic session beside the Connect client
    log = tmp_path_factory.mktemp("connect") / "server.log"
    with connect_session(LOCAL_CLUSTER_MASTER, {**DRIVER_CONF, **S3A_CONF}, str(log)) as spark:
        yield spark


def test_the_session_is_a_connect_client(connect):
    assert type(connect).__module__.startswith("pyspark.sql.connect")
    with pytest.raises(Exception):
        connect.sparkContext  # noqa: B018 - Connect has none


def test_mnist_like_training_with_input_mode_tensorflow(connect, tmp_path):
    with _new_listeners() as opened:  # the client opens no port for the nodes (they may be unable to reach it)
        cluster = TFCluster.run(connect, nodefns_connect.digits_train, {"out": str(tmp_path)}, 2,
                                master_node="chief")
        assert cluster.sc is None
        cluster.shutdown(timeout=300)
    assert not opened
    chief, worker = (json.load(open(tmp_path / f"digits{i}.json")) for i in range(2))
    assert (chief["job_name"], worker["job_name"]) == ("chief", "worker")
    assert chief["tf_config"]["cluster"] == worker["tf_config"]["cluster"]
    assert len(chief["tf_config"]["cluster"]["worker"]) == 1 and chief["num_workers"] == 2
    assert chief["steps"] == worker["steps"] == 60
    assert chief["accuracy"] > 0.5  # 10 classes: it learned
    assert chief["default_fs"] == "file://"
    assert chief["aws"] == worker["aws"] == ["from-executor-env", "http://127.0.0.1:9"]
    assert fs.spark_env(connect) == {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    assert [n["job_name"] for n in cluster.cluster_info] == ["chief", "worker"]
    assert {n["spark_executor_id"] for n in cluster.cluster_info} == {"0", "1"}
    assert [(p["role"], p["exited"]) for p in cluster.progress()] == [("chief:0", True), ("worker:0", True)]


def test_node_0_as_ps_hosts_the_control_server_and_stops_after_training(connect, tmp_path):
    # record_ctx: the ps blocks until it is told to stop; with no driver, node 0 stops it once training is done.
    cluster = TFCluster.run(connect, nodefns.record_ctx, {"out": str(tmp_path)}, 2, num_ps=1, stop_grace_secs=2)
    cluster.shutdown(timeout=120)
    ps, worker = (json.load(open(tmp_path / f"node{i}.json")) for i in range(2))
    assert (ps["job_name"], worker["job_name"]) == ("ps", "worker")
    assert worker["tf_config"]["cluster"] == {"ps": ps["cluster_spec"]["ps"], "worker": worker["cluster_spec"]["worker"]}
    assert not psutil.pid_exists(ps["pid"])


def test_node_failure_comes_back_with_its_traceback(connect):
    cluster = TFCluster.run(connect, nodefns_connect.fail_on, {"fail": 1, "others_sleep": 120}, 2,
                            stop_grace_secs=2)
    with pytest.raises(ClusterFailedError, match=(
            r"(?s)Root cause \(first observed failure\): node 1, worker:1.*exit code 1.*"
            r"ValueError: connect boom on node 1.*Traceback.*nodefns_connect.py.*Other nodes:.*"
            r"\[node 0\]: stopped because the cluster failed")) as info:
        cluster.shutdown(timeout=120)
    root = info.value.root_cause
    assert root.worker_num == 1 and "marker line before the failure" in root.log_tail
    with pytest.raises(ClusterFailedError, match="connect boom"):  # shutdown again reports it again
        cluster.shutdown()


def test_dataframe_feed_train_and_inference(connect, tmp_path, caplog):
    rows = [(p, [float(i % 7)] * 4, i % 2) for p, n in enumerate([50, 3, 27]) for i in range(n)]
    df = connect.createDataFrame(rows, "p int, x array<float>, label long").repartition(3, "p").drop("p")
    # The control server and the feeds listen on the executors; the client listens on nothing while the nodes
    # start, are fed, are asked for progress and stop (it need not be reachable from the cluster).
    with _new_listeners() as opened:
        cluster = TFCluster.run(connect, nodefns.feed_fit, {"out": str(tmp_path), "epochs": 2}, 2,
                                input_mode=SPARK, master_node="chief", feed_path="parquet")
        assert [n["job_name"] for n in cluster.cluster_info] == ["chief", "worker"]
        assert all(n["feed_addr"] for n in cluster.cluster_info) and cluster.cluster_meta["server_addr"]
        with pytest.raises(ConfigError, match=r"under Spark Connect there is no SparkContext.*pass a DataFrame"):
            cluster.train([(1, [1.0] * 4, 0)])
        with caplog.at_level(logging.INFO, logger="tfos._feed.driver"):
            cluster.train(df, num_epochs=2)
        assert "(parquet path)" in caplog.text  # the fast path works with a Connect session too
        assert [p["role"] for p in cluster.progress()] == ["chief:0", "worker:0"]  # asked from node 0
        cluster.shutdown(timeout=300)
    assert not opened
    nodefns.assert_full_equal_epochs([json.load(open(tmp_path / f"fit{i}.json")) for i in range(2)], 2)

    cluster = TFCluster.run(connect, nodefns.feed_double_arrays, {}, 2, input_mode=SPARK)
    try:
        out = cluster.inference(connect.range(0, 61, 1, 3).toDF("id"), schema="doubled long")
        assert [r.doubled for r in out.collect()] == [2 * i for i in range(61)]
        with pytest.raises(ConfigError, match="needs schema="):
            cluster.inference(connect.range(3))
    finally:
        cluster.shutdown(timeout=120)


def test_a_plain_parquet_scan_is_recognized_under_connect(connect, tmp_path):
    from tfos._feed.driver import _direct_read

    src = str(tmp_path / "src")
    connect.range(0, 100, 1, 2).selectExpr("id", "array(cast(id as float)) as x").write.parquet(src)
    direct = _direct_read(connect.read.parquet(src).select("x", "id"))  # read from its files: no cache written
    assert direct is not None and direct.columns == ("x", "id") and len(direct.files) == 2
    assert _direct_read(connect.read.parquet(src).where("id > 3")) is None  # a filter: written to the cache


def test_a_bad_row_while_feeding_fails_with_the_root_cause(connect, tmp_path):
    rows = [([1.0] * (3 if i == 7 else 4), i % 2) for i in range(20)]
    df = connect.createDataFrame(rows, "x array<float>, label long").coalesce(1)
    cluster = TFCluster.run(connect, nodefns.feed_fit, {"out": str(tmp_path), "epochs": 1}, 2, input_mode=SPARK,
                            master_node="chief", stop_grace_secs=2)
    with pytest.raises(ClusterFailedError, match=r"(?s)Root cause.*node 0, chief:0.*column 'x'.*expected shape \(4,\)"):
        cluster.train(df, num_epochs=1)  # raises here if node 0 failed before the feed job ended,
        cluster.shutdown(timeout=60)  # else here
    with pytest.raises(ClusterFailedError, match=r"column 'x'"):
        cluster.shutdown(timeout=60)


def test_node_0_losing_its_task_fails_the_cluster_clearly(connect):
    # Node 0's task hosts the control server; killing that Python worker fails the barrier stage.
    cluster = TFCluster.run(connect, nodefns_connect.kill_own_supervisor, {"others_sleep": 300}, 2,
                            stop_grace_secs=2)
    with pytest.raises(ClusterFailedError, match=(
            r"(?s)Root cause \(first observed failure\): node 0\n.*the Spark stage running the TF nodes failed "
            r"because the Spark task of node 0 ended unsuccessfully: .*Python worker exited unexpectedly.*"
            r"node 0 \(worker_num 0.*hosts the TF cluster's control server")):
        cluster.shutdown(timeout=300)


def test_tfparallel(connect):
    results = TFParallel.run(connect, nodefns_connect.parallel_square, {"x": 3}, 2)
    assert results == [{"worker_num": i, "num_workers": 2, "square": 9} for i in range(2)]
    with pytest.raises(ClusterFailedError, match=r"(?s)1 of 2 TFParallel instances failed.*connect boom on node 1"):
        TFParallel.run(connect, nodefns_connect.fail_on, {"fail": 1}, 2, use_barrier=False)


def test_tfestimator_fit_then_tfmodel_transform(connect, tmp_path):
    rows = [(i, [float((i * 7 + j) % 5) - 2 for j in range(4)], i % 2) for i in range(60)]
    df = connect.createDataFrame(rows, "id long, features array<float>, label long").repartition(2)
    export_dir = str(tmp_path / "export")
    estimator = (TFEstimator(nodefns_more.pipeline_train, {"lr": 0.05, "out": str(tmp_path), "epochs": 9})
                 .setInputMapping({"features": "features", "label": "label"})
                 .setOutputMapping({"logits": "prediction"})
                 .setClusterSize(2).setEpochs(1).setBatchSize(8).setExportDir(export_dir))
    model = estimator.fit(df)
    assert isinstance(model, TFModel) and model.getExportDir() == export_dir
    merged = [json.loads((tmp_path / f"merged{i}.json").read_text()) for i in range(2)]
    assert merged[0]["steps"] == merged[1]["steps"] > 0 and merged[0]["epochs"] == 1
    out = model.transform(df).collect()
    assert len(out) == 60 and all(len(r.prediction) == 2 for r in out)


def test_what_connect_cannot_do_is_refused_with_the_reason(connect):
    with pytest.raises(ConfigError, match=r"driver_ps_nodes=True is not supported with a Spark Connect session"):
        TFCluster.run(connect, nodefns.record_ctx, {}, 2, num_ps=1, driver_ps_nodes=True)
    with pytest.raises(ConfigError, match=r"max_restarts=1 is not supported with a Spark Connect session"):
        TFCluster.run(connect, nodefns.record_ctx, {}, 2, max_restarts=1)
    with pytest.raises(PlacementError, match=r"(?s)Spark did not run 3 tasks at once within 3s.*"
                                             r"spark.master: local-cluster.*lower num_executors"):
        TFCluster.run(connect, nodefns.record_ctx, {}, 3, slot_wait_timeout=3)
    with pytest.raises(PlacementError, match=r"(?s)Spark did not run 3 tasks at once within 3s.*TFParallel needs 3 "
                                             r"task slots.*use_barrier=False"):
        TFParallel.run(connect, nodefns_connect.parallel_square, {"x": 1}, 3, slot_wait_timeout=3)
    cluster = TFCluster.run(connect, nodefns_connect.parallel_square, {"x": 1}, 1)
    with pytest.raises(ConfigError, match=r"needs a cluster started with input_mode=InputMode.SPARK"):
        cluster.train(connect.range(3))
    with pytest.raises(ConfigError, match=r"progress reaches the client only when the node stage ends"):
        cluster.progress()
    cluster.shutdown(timeout=120)
    assert os.environ.get("SPARK_CONNECT_MODE_ENABLED") == "1"  # the client sets it; the fixture removes it


def _plaintext_state_call(address, secret):
    """Calls node 0's state service over a plaintext channel, with the right secret; returns the gRPC code."""
    import grpc

    from tfos._connect.control import STATE_SERVICE
    from tfos._control.server import decode, encode

    with grpc.insecure_channel(address) as channel:
        method = channel.unary_unary(f"/{STATE_SERVICE}/State", request_serializer=encode,
                                     response_deserializer=decode)
        try:
            method({}, timeout=5, metadata=(("authorization", f"Bearer {secret}"),))
        except grpc.RpcError as exc:
            return exc.code()
    return None


def test_control_plane_tls_under_connect(connect, tmp_path):
    # InputMode.SPARK: node 0's detached control server, the feed, progress and shutdown all run over TLS.
    rows = [([float(i % 7)] * 4, i % 2) for i in range(80)]
    df = connect.createDataFrame(rows, "x array<float>, label long").repartition(4)
    cluster = TFCluster.run(connect, nodefns.feed_fit, {"out": str(tmp_path), "epochs": 1}, 2, input_mode=SPARK,
                            master_node="chief", control_tls=True)
    try:
        import grpc

        # A client without TLS gets no connection at all, even holding the secret.
        assert _plaintext_state_call(cluster.control_address, cluster._config.spec.secret) == \
            grpc.StatusCode.UNAVAILABLE
        cluster.train(df, num_epochs=1)
        assert [p["role"] for p in cluster.progress()] == ["chief:0", "worker:0"]
    finally:
        cluster.shutdown(timeout=300)
    steps = [json.load(open(tmp_path / f"fit{i}.json"))["steps"] for i in range(2)]
    assert steps[0] == steps[1] > 0
    # InputMode.TENSORFLOW: node 0 serves TLS from its own task.
    cluster = TFCluster.run(connect, nodefns.mwms_train, {"out": str(tmp_path)}, 2, control_tls=True)
    cluster.shutdown(timeout=300)
    assert [json.load(open(tmp_path / f"steps{i}.json"))["steps"] for i in range(2)] == [10, 10]


def test_a_bad_tls_certificate_under_connect_is_a_config_error(connect, tmp_path):
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"control-plane TLS certificate .* is not PEM.*TFOS_CONTROL_TLS_CERT"):
        TFCluster.run(connect, nodefns.record_ctx, {"out": str(tmp_path)}, 2, control_tls_cert=str(bad),
                      control_tls_key=str(bad))
