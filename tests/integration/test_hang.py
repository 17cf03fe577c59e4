"""Hang detection and progress reporting on a local-cluster master, with real TF processes."""

import os
import time

import cloudpickle
import pytest

import nodefns_reliability as fns
from tfos import ClusterFailedError, TFCluster

cloudpickle.register_pickle_by_value(fns)

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def test_a_node_blocked_without_output_fails_the_run_naming_it(spark_local_cluster):
    cluster = TFCluster.run(spark_local_cluster.sparkContext, fns.silent_on_one, {"silent": 1}, 2,
                            hang_timeout=10, stop_grace_secs=2)
    # A ClusterFailedError, not the ShutdownTimeoutError that a hang without detection would end in.
    with pytest.raises(ClusterFailedError, match=r"(?s)Root cause.*node 1, worker:1.*no progress for \d+s "
                                                 r"\(hang_timeout=10s\).*no output.*TFOS_HANG_TIMEOUT") as info:
        cluster.shutdown(timeout=600)
    assert info.value.root_cause.worker_num == 1


def test_steps_and_epochs_reach_the_driver(spark_local_cluster, tmp_path):
    stop = tmp_path / "stop"
    cluster = TFCluster.run(spark_local_cluster.sparkContext, fns.report_until_stopped, {"stop": str(stop)}, 2,
                            stop_grace_secs=2, progress="off")
    try:
        deadline = time.monotonic() + 60
        rows = cluster.progress()
        while time.monotonic() < deadline:
            rows = cluster.progress()
            if rows[0].get("step", 0) >= 3 and rows[1].get("step", 0) >= 3:
                break
            time.sleep(0.5)
    finally:
        stop.touch()
        cluster.shutdown(timeout=120)
    chief, other = rows
    assert chief["role"] == "worker:0" and chief["epoch"] == 1 and chief["loss"] == 0.5 and chief["reports"] >= 3
    assert other["role"] == "worker:1" and other["epoch"] == 2 and other["epochs"] == 4 and other["steps"] == 20
    assert other["last_line"] == "Epoch 2/4" and other["activity"] >= 3
    assert os.path.exists(stop)
