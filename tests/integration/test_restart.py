"""Automatic restarts (max_restarts) on a local-cluster master: a SIGKILLed worker, a user error, InputMode.SPARK."""

import json
import os
import signal
import time

import cloudpickle
import psutil
import pytest

import nodefns
import nodefns_reliability as fns
from tfos import ClusterFailedError, ConfigError, TFCluster

cloudpickle.register_pickle_by_value(fns)
cloudpickle.register_pickle_by_value(nodefns)

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_sigkilled_worker_resumes_from_the_last_epoch_and_saves_once(spark_local_cluster, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    args = {"out": str(out), "export": str(tmp_path / "model"), "epochs": 6, "steps": 10, "batch_sleep": 0.1}
    cluster = TFCluster.run(spark_local_cluster.sparkContext, fns.keras_resumable, args, 2, max_restarts=1,
                            stop_grace_secs=2, log_dir=str(tmp_path / "logs"), progress="off")
    try:
        # Kill worker 1's TF process once epoch 2 (index 1) is checkpointed: BackupAndRestore saves at epoch end,
        # before the callback after it records the epoch.
        wait_for(lambda: any(e["node"] == 1 and e["epoch"] >= 1 for e in read_jsonl(out / "epochs.jsonl")), 180,
                 "worker 1 to finish its second epoch")
        os.kill(int((out / "pid1_0").read_text()), signal.SIGKILL)
        done_before = max(e["epoch"] for e in read_jsonl(out / "epochs.jsonl") if e["attempt"] == 0)
    finally:
        cluster.shutdown(timeout=300)
    assert cluster.attempt == 1 and len(cluster.restarts) == 1
    assert "node 1, worker:1" in cluster.restarts[0] and "signal 9 (SIGKILL)" in cluster.restarts[0]
    resumed = min(e["epoch"] for e in read_jsonl(out / "begin.jsonl") if e["attempt"] == 1)
    assert resumed == done_before + 1  # from the last completed epoch, not from scratch
    finished = {(e["node"], e["epoch"]) for e in read_jsonl(out / "epochs.jsonl") if e["attempt"] == 1}
    assert {(0, 5), (1, 5)} <= finished
    saves = read_jsonl(out / "saved.jsonl")
    assert [(s["node"], s["attempt"]) for s in saves] == [(0, 1)]
    assert os.path.exists(os.path.join(saves[0]["path"], "saved_model.pb"))
    assert (out / "pid0_1").exists() and (out / "pid1_1").exists()


def test_an_exception_in_main_fun_is_not_restarted(spark_local_cluster):
    cluster = TFCluster.run(spark_local_cluster.sparkContext, nodefns.raise_on, {"fail": 1, "others_sleep": 30}, 2,
                            max_restarts=2, stop_grace_secs=2, progress="off")
    with pytest.raises(ClusterFailedError, match=r"(?s)Not restarted again: not restarted: node 1.*ValueError "
                                                 r"raised in main_fun; a restart would most likely fail the same "
                                                 r"way.*ValueError: boom on node 1"):
        cluster.shutdown(timeout=120)
    assert cluster.attempt == 0 and cluster.restarts == []


def test_restarts_with_the_spark_feed_are_refused(spark_local_cluster):
    with pytest.raises(ConfigError, match=r"max_restarts=1 needs InputMode.TENSORFLOW.*TFOS_MAX_RESTARTS=0"):
        TFCluster.run(spark_local_cluster.sparkContext, nodefns.feed_count, {}, 2, max_restarts=1,
                      input_mode=TFCluster.InputMode.SPARK)


def test_a_lost_supervisor_restarts_the_cluster(spark_local_cluster, tmp_path):
    """Worker 1's Spark task (its Python worker, the node's supervisor) dies: its TF process goes with it and
    the cluster starts again."""
    stop = tmp_path / "stop"
    cluster = TFCluster.run(spark_local_cluster.sparkContext, fns.write_pid_and_wait,
                            {"out": str(tmp_path), "stop": str(stop)}, 2, max_restarts=1, stop_grace_secs=2,
                            progress="off")
    try:
        pid = int(wait_for(lambda: (tmp_path / "pid1_0").exists() and (tmp_path / "pid1_0").read_text(), 60,
                           "worker 1's TF process"))
        child = psutil.Process(pid)
        supervisor = child.parent()
        assert "tfos._node.child" in " ".join(child.cmdline()) and "tfos._node" not in " ".join(supervisor.cmdline())
        supervisor.kill()
        wait_for(lambda: (tmp_path / "pid1_1").exists() and (tmp_path / "pid0_1").exists(), 180,
                 "the restarted cluster")
        stop.touch()
    finally:
        stop.touch()
        cluster.shutdown(timeout=300)
    assert cluster.attempt == 1 and len(cluster.restarts) == 1, cluster.restarts
    assert "the Spark stage running the TF nodes failed" in cluster.restarts[0]  # Spark fails the barrier stage
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
