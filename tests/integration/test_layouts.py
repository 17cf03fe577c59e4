"""Role layouts on a local-cluster master: chief, worker, ps, evaluator, ps on the driver, TensorBoard."""

import json
import os
import sys
import time
import urllib.request

import cloudpickle
import psutil
import pytest

import nodefns
from tfos import TFCluster

cloudpickle.register_pickle_by_value(nodefns)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def nodes(out, n):
    return [json.load(open(os.path.join(out, f"node{i}.json"))) for i in range(n)]


def test_ps_and_worker_ps_stopped_at_shutdown(spark_local_cluster, tmp_path):
    cluster = TFCluster.run(spark_local_cluster.sparkContext, nodefns.record_ctx, {"out": str(tmp_path)}, 2,
                            num_ps=1, stop_grace_secs=2)
    assert [n["job_name"] for n in cluster.cluster_info] == ["ps", "worker"]
    cluster.shutdown(timeout=120)
    ps, worker = nodes(tmp_path, 2)
    assert (ps["job_name"], ps["task_index"], worker["job_name"], worker["task_index"]) == ("ps", 0, "worker", 0)
    assert worker["tf_config"]["cluster"] == {"ps": [ps["cluster_spec"]["ps"][0]], "worker": worker["cluster_spec"]["worker"]}
    assert worker["tf_config"]["task"] == {"type": "worker", "index": 0}
    assert worker["num_workers"] == 1 and worker["legacy"] == "1"
    assert worker["executor_id"] == 1 and worker["spark_executor_id"] in ("0", "1")
    assert worker["abs"] == "file://" + os.path.join(os.getcwd(), "data")
    assert not psutil.pid_exists(ps["pid"])


def test_chief_and_evaluator(spark_local_cluster, tmp_path):
    cluster = TFCluster.run(spark_local_cluster.sparkContext, nodefns.record_ctx, {"out": str(tmp_path)}, 2,
                            master_node="chief", eval_node=True, stop_grace_secs=2)
    cluster.shutdown(timeout=120)
    chief, evaluator = nodes(tmp_path, 2)
    assert chief["tf_config"]["task"] == {"type": "chief", "index": 0}
    assert evaluator["tf_config"]["task"] == {"type": "evaluator", "index": 0}
    # TensorFlow wants the evaluator outside the training cluster; ctx.cluster_spec still lists it (TFoS did).
    assert set(evaluator["tf_config"]["cluster"]) == set(chief["tf_config"]["cluster"]) == {"chief"}
    assert set(evaluator["cluster_spec"]) == {"chief", "evaluator"} and chief["num_workers"] == 1


def test_ps_nodes_on_the_driver(spark_local_cluster, tmp_path):
    cluster = TFCluster.run(spark_local_cluster.sparkContext, nodefns.record_ctx,
                            {"out": str(tmp_path), "chief_waits_for": 3}, 3,
                            num_ps=1, master_node="chief", driver_ps_nodes=True, stop_grace_secs=2)
    cluster.shutdown(timeout=120)
    ps, chief, worker = nodes(tmp_path, 3)
    assert ps["spark_executor_id"] == "driver" and ps["job_name"] == "ps"
    assert {chief["spark_executor_id"], worker["spark_executor_id"]} == {"0", "1"}
    assert chief["tf_config"]["cluster"]["ps"] == ps["cluster_spec"]["ps"]


def test_release_port_false_hands_the_socket_to_main_fun(spark_local_cluster, tmp_path):
    cluster = TFCluster.run(spark_local_cluster.sparkContext, nodefns.bind_after_release, {"out": str(tmp_path)}, 2,
                            release_port=False)
    cluster.shutdown(timeout=120)
    for i in range(2):
        result = json.load(open(tmp_path / f"bind{i}.json"))
        assert result == {"held": True, "bound_after_release": True}


def record_log_dir_and_sleep(args, ctx):
    """Writes what the node got as its log dir (``ctx.log_dir``, ``TFOS_LOG_DIR``), then sleeps."""
    with open(os.path.join(args["out"], f"logdir{ctx.worker_num}.json"), "w") as f:
        json.dump({"ctx": ctx.log_dir, "env": os.environ.get("TFOS_LOG_DIR"), "job_name": ctx.job_name}, f)
    time.sleep(args["sleep"])


def test_tensorboard_on_the_chief(spark_local_cluster, tmp_path, capfd):
    log_dir = str(tmp_path / "logs")
    cluster = TFCluster.run(spark_local_cluster.sparkContext, record_log_dir_and_sleep,
                            {"out": str(tmp_path), "sleep": 8}, 2, master_node="chief", tensorboard=True,
                            log_dir=log_dir)
    url = cluster.tensorboard_url()
    assert url and url.startswith("http://127.0.0.1:")
    assert f"tfos: TensorBoard running at {url}" in capfd.readouterr().err  # printed on the driver
    board_pid = next(n["tb_pid"] for n in cluster.cluster_info if n["job_name"] == "chief") or None
    body = b""
    for _ in range(60):
        try:
            body = urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            time.sleep(0.5)
    assert b"TensorBoard" in body or b"tensorboard" in body
    cluster.shutdown(timeout=120)
    if board_pid:
        assert not psutil.pid_exists(board_pid) or psutil.Process(board_pid).status() == psutil.STATUS_ZOMBIE
    seen = [json.load(open(tmp_path / f"logdir{i}.json")) for i in range(2)]
    assert [(s["job_name"], s["ctx"], s["env"]) for s in seen] == [("chief", log_dir, log_dir),
                                                                   ("worker", log_dir, log_dir)]


def test_node_output_reaches_the_driver_with_its_role(spark_local_cluster, capfd):
    cluster = TFCluster.run(spark_local_cluster.sparkContext, nodefns.say_hello, {}, 2, master_node="chief")
    cluster.shutdown(timeout=120)
    err = capfd.readouterr().err
    assert "[chief:0] hello from node 0" in err and "[worker:0] hello from node 1" in err
    assert "[worker:0] warning on stderr from node 1" in err
    cluster = TFCluster.run(spark_local_cluster.sparkContext, nodefns.say_hello, {}, 2, forward_logs=False)
    cluster.shutdown(timeout=120)
    assert "hello from node" not in capfd.readouterr().err
