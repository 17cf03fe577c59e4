"""GPUs on a local-cluster master, with a fake nvidia-smi and a fake Spark GPU discovery script.

No GPU is needed: the TF processes only report the ``CUDA_VISIBLE_DEVICES`` tfos gave them.
"""

import json
import os
import sys
import time

import cloudpickle
import pytest

import fake_nvidia_smi
from conftest import LOCAL_CLUSTER_MASTER
from tfos import TFCluster
from tfos._node import gpus

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def record_gpus(args, ctx):
    """Writes this node's GPU environment; training nodes then wait for each other, so their claims overlap."""
    with open(os.path.join(args["out"], f"{ctx.job_name}{ctx.task_index}.json"), "w") as f:
        json.dump({"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "order": os.environ.get("CUDA_DEVICE_ORDER")}, f)
    if ctx.job_name == "ps":
        time.sleep(3600)  # like server.join(): runs until the driver stops it
    deadline = time.monotonic() + 120
    while len([n for n in os.listdir(args["out"]) if n.startswith("worker")]) < args["workers"]:
        if time.monotonic() > deadline:
            raise TimeoutError("the other worker never started")
        time.sleep(0.1)


@pytest.fixture
def fresh_session(spark_sessions):
    """A local-cluster session with extra Spark settings, stopped afterwards so that they reach no other test."""
    spark_sessions.stop()
    yield lambda conf: spark_sessions.get(LOCAL_CLUSTER_MASTER, conf)
    spark_sessions.stop()


def test_without_spark_gpu_scheduling_nodes_on_one_host_take_different_free_gpus(fresh_session, tmp_path):
    busy_pid = os.getpid()  # some process computing on GPU 0
    smi = fake_nvidia_smi.install(tmp_path / "bin", [("0", "GPU-0000", 10), ("1", "GPU-1111", 900),
                                                     ("2", "GPU-2222", 100)], apps=[("GPU-0000", busy_pid)])
    spark = fresh_session({"spark.executorEnv.PATH": f"{os.path.dirname(smi)}:{os.environ['PATH']}"})
    out, locks = tmp_path / "out", tmp_path / "locks"
    out.mkdir()
    cluster = TFCluster.run(spark.sparkContext, record_gpus, {"out": str(out), "workers": 2}, 3, num_ps=1,
                            driver_ps_nodes=True, gpu_lock_dir=str(locks), stop_grace_secs=2)
    cluster.shutdown(timeout=180)
    seen = {name[:-5]: json.load(open(out / name)) for name in os.listdir(out)}
    # Both executors are on this host: each worker took one GPU, never the same, free ones (1, 2) before busy 0.
    assert sorted(seen[w]["visible"] for w in ("worker0", "worker1")) == ["1", "2"]
    assert seen["worker0"]["order"] == seen["worker1"]["order"] == "PCI_BUS_ID"
    assert seen["ps0"]["visible"] == ""  # parameter servers get no GPU
    assert gpus._read_claims(str(locks / gpus.CLAIMS_NAME)) == {}  # every claim was released


def test_spark_scheduled_gpus_come_from_task_resources(fresh_session, tmp_path):
    spark = fresh_session(fake_nvidia_smi.spark_gpu_conf(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    cluster = TFCluster.run(spark.sparkContext, record_gpus, {"out": str(out), "workers": 2}, 2,
                            gpu_lock_dir=str(tmp_path / "locks"))
    cluster.shutdown(timeout=180)
    seen = [json.load(open(out / f"worker{i}.json")) for i in range(2)]
    assert [s["visible"] for s in seen] == ["6", "6"]
    assert [s["order"] for s in seen] == [None, None]
