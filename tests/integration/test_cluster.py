"""TFCluster on a real Spark standalone cluster (master + 2 workers on 127.0.0.1), real TF processes."""

import json
import os
import signal
import threading
import time

import cloudpickle
import psutil
import pytest

import nodefns
from tfos import TFCluster
from tfos.errors import ClusterFailedError, ConfigError, PlacementError, ShutdownTimeoutError

cloudpickle.register_pickle_by_value(nodefns)

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def wait_for_pid(path, timeout=60):
    """The pid a node's main_fun wrote to ``path``, once it is there."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return int(path.read_text())


def read_nodes(out, n, prefix="node"):
    return [json.load(open(os.path.join(out, f"{prefix}{i}.json"))) for i in range(n)]


def test_mwms_training_on_two_nodes(spark_standalone, tmp_path):
    cluster = TFCluster.run(spark_standalone.sparkContext, nodefns.mwms_train, {"out": str(tmp_path)}, 2,
                            master_node="chief")
    cluster.shutdown(timeout=300)
    steps = read_nodes(tmp_path, 2, "steps")
    assert [s["job_name"] for s in steps] == ["chief", "worker"]
    assert steps[0]["steps"] == steps[1]["steps"] == 10  # both nodes took part in every step
    assert steps[0]["keras"].startswith("tf_keras")  # TF_USE_LEGACY_KERAS=1 reached the TF process


def test_node_exception_reaches_driver_with_traceback(spark_standalone):
    start = time.monotonic()
    cluster = TFCluster.run(spark_standalone.sparkContext, nodefns.raise_on, {"fail": 1, "others_sleep": 60}, 2)
    with pytest.raises(ClusterFailedError, match=r"(?s)Root cause \(first observed failure\): node 1, worker:1, "
                       r"host 127\.0\.0\.1, executor \d+.*exit code 1.*ValueError: boom on node 1.*"
                       r"Traceback.*nodefns\.py.*in raise_on") as info:
        cluster.shutdown(timeout=120)
    assert time.monotonic() - start < 30
    assert info.value.root_cause.worker_num == 1
    assert "[node 0]: stopped because the cluster failed" in str(info.value)


def test_sigkilled_node_fails_fast_and_leaves_nothing(spark_standalone, tmp_path):
    cluster = TFCluster.run(spark_standalone.sparkContext, nodefns.sleep_and_mark,
                            {"out": str(tmp_path), "sleep": 120}, 2)
    victim = wait_for_pid(tmp_path / "pid1")
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    with pytest.raises(ClusterFailedError, match=r"(?s)node 1, worker:1.*signal 9 \(SIGKILL\)"):
        cluster.shutdown(timeout=120)
    assert time.monotonic() - killed_at < 30
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    other = wait_for_pid(tmp_path / "pid0")
    time.sleep(0.5)
    assert not psutil.pid_exists(other) or psutil.Process(other).status() == psutil.STATUS_ZOMBIE


def test_too_few_slots_is_an_early_actionable_error(spark_standalone):
    start = time.monotonic()
    with pytest.raises(PlacementError, match=r"Spark can run 2 task\(s\) at once but the TF cluster needs 3 nodes "
                       r"running together.*spark.task.cpus.*lower num_executors"):
        TFCluster.run(spark_standalone.sparkContext, nodefns.raise_on, {"fail": -1}, 3, slot_wait_timeout=2)
    assert time.monotonic() - start < 20


def test_unpicklable_main_fun_is_a_clear_error(spark_standalone):
    lock = threading.Lock()

    def main_fun(args, ctx):
        with lock:
            pass

    with pytest.raises(ConfigError, match="main_fun cannot be pickled"):
        TFCluster.run(spark_standalone.sparkContext, main_fun, None, 2)


def test_shutdown_timeout_stops_everything(spark_standalone, tmp_path):
    cluster = TFCluster.run(spark_standalone.sparkContext, nodefns.sleep_and_mark,
                            {"out": str(tmp_path), "sleep": 600}, 2, stop_grace_secs=2)
    with pytest.raises(ShutdownTimeoutError, match=r"did not finish within timeout=3s.*Still running"):
        cluster.shutdown(timeout=3)


def test_feeding_a_tensorflow_mode_cluster_is_refused(spark_standalone, tmp_path):
    sc = spark_standalone.sparkContext
    cluster = TFCluster.run(sc, nodefns.sleep_and_mark, {"out": str(tmp_path), "sleep": 0}, 2)
    with pytest.raises(ConfigError, match=r"train\(\) needs a cluster started with input_mode=InputMode.SPARK"):
        cluster.train(sc.parallelize(range(4)))
    cluster.shutdown(timeout=60)
    with pytest.raises(ConfigError, match="driver_ps_nodes=True is only supported with InputMode.TENSORFLOW"):
        TFCluster.run(sc, nodefns.raise_on, {}, 2, num_ps=1, driver_ps_nodes=True,
                      input_mode=TFCluster.InputMode.SPARK)


def test_killed_supervisor_takes_its_tf_process_along(spark_standalone, tmp_path):
    cluster = TFCluster.run(spark_standalone.sparkContext, nodefns.sleep_and_mark,
                            {"out": str(tmp_path), "sleep": 120}, 2)
    child = psutil.Process(wait_for_pid(tmp_path / "pid1"))
    supervisor = next(n["pid"] for n in cluster.cluster_info if n["worker_num"] == 1)
    os.kill(supervisor, signal.SIGKILL)  # the PySpark worker running node 1's supervisor
    killed_at = time.monotonic()
    child.wait(timeout=10)  # PR_SET_PDEATHSIG: the TF process does not outlive its supervisor
    with pytest.raises(ClusterFailedError, match=r"(?s)Root cause \(first observed failure\): spark job.*"
                       r"the Spark stage running the TF nodes failed"):
        cluster.shutdown(timeout=120)
    assert time.monotonic() - killed_at < 30
