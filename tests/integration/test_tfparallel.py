"""TFParallel.run on a real Spark cluster: independent instances with and without barrier, too few slots,
a failing instance, and each instance's own GPUs (fake nvidia-smi, fake Spark GPU discovery script)."""

import os
import sys
import time

import pytest

import cloudpickle
import fake_nvidia_smi
import nodefns_more
from conftest import LOCAL_CLUSTER_MASTER
from tfos import TFParallel
from tfos._node import gpus
from tfos.errors import ClusterFailedError, ConfigError, PlacementError

cloudpickle.register_pickle_by_value(nodefns_more)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def test_barrier_instances_one_per_executor(spark_local_cluster):
    seen = TFParallel.run(spark_local_cluster, nodefns_more.parallel_record, {"tf": True}, 2)
    assert [s["worker_num"] for s in seen] == [0, 1] == [s["executor_id"] for s in seen]
    assert all(s["num_workers"] == 2 and s["default_fs"] == "file://" for s in seen)
    assert all(s["tf_config"] is None and s["legacy"] == "1" for s in seen)  # single-node: no TF cluster
    assert [s["sum"] for s in seen] == [0.0, 1.0]
    assert [s["is_chief"] for s in seen] == [True, False]
    assert {s["spark_executor_id"] for s in seen} == {"0", "1"}  # barrier + 2 slots: one per executor
    assert len({s["pid"] for s in seen}) == 2


def instance_environment(args, ctx):
    return {k: v for k, v in os.environ.items() if k in args["names"] or k.startswith(("PYTHON_UDF_", "PYTHON_DAEMON_"))}


def test_an_instance_gets_the_same_deliberate_environment_as_a_node(spark_local_cluster):
    names = ("PYTHON_WORKER_FACTORY_SECRET", "SPARK_REUSE_WORKER", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
             "TF_CONFIG", "TF_USE_LEGACY_KERAS", "SPARK_HOME")
    envs = TFParallel.run(spark_local_cluster, instance_environment, {"names": names}, 2, node_threads="2")
    for env in envs:
        assert env.pop("SPARK_HOME")
        assert env == {"OMP_NUM_THREADS": "2", "TF_NUM_INTRAOP_THREADS": "2", "TF_USE_LEGACY_KERAS": "1"}


def test_without_barrier_more_instances_than_slots_run_in_turn(spark_local_cluster):
    seen = TFParallel.run(spark_local_cluster.sparkContext, nodefns_more.parallel_record, {}, 3, use_barrier=False)
    assert [s["worker_num"] for s in seen] == [0, 1, 2]
    assert all(s["num_workers"] == 3 for s in seen)


def test_too_few_slots_with_barrier_is_an_actionable_error(spark_local_cluster):
    with pytest.raises(PlacementError, match=r"Spark can run 2 task\(s\) at once but TFParallel needs 3 instances "
                       r"running together \(use_barrier=True\), waited 1s.*lower num_executors \(the number of "
                       r"instances\), or pass use_barrier=False") as info:
        TFParallel.run(spark_local_cluster, nodefns_more.parallel_record, {}, 3, slot_wait_timeout=1)
    assert "TF cluster" not in str(info.value)


def test_failing_instance_reports_its_traceback(spark_local_cluster):
    with pytest.raises(ClusterFailedError, match=r"(?s)1 of 2 TFParallel instances failed.*Root cause.*"
                       r"instance:1.*ValueError: boom on instance 1") as info:
        TFParallel.run(spark_local_cluster, nodefns_more.parallel_record, {"fail": 1}, 2)
    assert [f.worker_num for f in info.value.failures] == [1]
    assert "about to fail" in info.value.failures[0].log_tail


def test_an_instance_past_its_timeout_is_stopped(spark_local_cluster):
    with pytest.raises(ClusterFailedError, match=r"did not finish within timeout=2s"):
        TFParallel.run(spark_local_cluster, nodefns_more.parallel_record, {"sleep": 60}, 1, timeout=2,
                       stop_grace_secs=1)


def test_bad_arguments(spark_local_cluster):
    with pytest.raises(ConfigError, match="num_executors must be an int >= 1"):
        TFParallel.run(spark_local_cluster, nodefns_more.parallel_record, {}, 0)
    with pytest.raises(ConfigError, match="map_fn must be callable"):
        TFParallel.run(spark_local_cluster, "not a function", {}, 1)
    assert TFParallel.run(spark_local_cluster, map_fun=nodefns_more.parallel_record, tf_args={},
                          num_executors=1)[0]["worker_num"] == 0  # map_fun, TFCluster.run's name, works too
    import threading

    with pytest.raises(ConfigError, match="tf_args cannot be pickled"):
        TFParallel.run(spark_local_cluster, nodefns_more.parallel_record, {"lock": threading.Lock()}, 1)


# ----- GPUs (last in this module: each test starts its own Spark session) --------------------------------------
def record_gpus(args, ctx):
    """Returns this instance's GPU environment, after waiting (up to args["wait"] s) for the other instances, so
    that their GPU claims overlap."""
    open(os.path.join(args["out"], f"started{ctx.worker_num}"), "w").close()
    deadline = time.monotonic() + args.get("wait", 120)
    while len(os.listdir(args["out"])) < ctx.num_workers and time.monotonic() < deadline:
        time.sleep(0.1)
    return {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "order": os.environ.get("CUDA_DEVICE_ORDER")}


@pytest.fixture
def fresh_session(spark_sessions):
    """A local-cluster session with extra Spark settings, stopped afterwards so that they reach no other test."""
    spark_sessions.stop()
    yield lambda conf: spark_sessions.get(LOCAL_CLUSTER_MASTER, conf)
    spark_sessions.stop()


def test_without_spark_gpu_scheduling_instances_on_one_host_take_different_gpus(fresh_session, tmp_path):
    smi = fake_nvidia_smi.install(tmp_path / "bin", [("0", "GPU-0000", 10), ("1", "GPU-1111", 900),
                                                     ("2", "GPU-2222", 100)], apps=[("GPU-0000", os.getpid())])
    spark = fresh_session({"spark.executorEnv.PATH": f"{os.path.dirname(smi)}:{os.environ['PATH']}"})
    locks = tmp_path / "locks"
    (tmp_path / "out").mkdir()
    seen = TFParallel.run(spark, record_gpus, {"out": str(tmp_path / "out")}, 2, gpu_lock_dir=str(locks))
    # Both executors are on this host: one GPU each, never the same, free ones (1, 2) before busy 0.
    assert sorted(s["visible"] for s in seen) == ["1", "2"]
    assert [s["order"] for s in seen] == ["PCI_BUS_ID", "PCI_BUS_ID"]
    assert gpus._read_claims(str(locks / gpus.CLAIMS_NAME)) == {}  # every claim was released

    # tf_args.num_gpus (TensorFlowOnSpark's) sets gpus_per_node: 2 + 2 GPUs do not fit in 3, and that is said
    # (the instance that got two GPUs waits 5 s for the other, which never starts, then ends normally).
    (tmp_path / "out2").mkdir()
    with pytest.raises(ClusterFailedError, match=r"(?s)1 of 2 TFParallel instances failed.*TFParallel instance \d on "
                       r"host .* needs 2 GPU\(s\) but only 1 of the 3 GPU\(s\).*TFOS_GPUS_PER_NODE"):
        TFParallel.run(spark, record_gpus, {"out": str(tmp_path / "out2"), "num_gpus": 2, "wait": 5}, 2,
                       gpu_lock_dir=str(locks))
    assert gpus._read_claims(str(locks / gpus.CLAIMS_NAME)) == {}


def test_spark_scheduled_gpus_win_over_nvidia_smi(fresh_session, tmp_path):
    spark = fresh_session(fake_nvidia_smi.spark_gpu_conf(tmp_path))
    (tmp_path / "out").mkdir()
    seen = TFParallel.run(spark, record_gpus, {"out": str(tmp_path / "out")}, 2, gpu_lock_dir=str(tmp_path / "locks"))
    assert [s["visible"] for s in seen] == ["6", "6"]
    assert [s["order"] for s in seen] == [None, None]
