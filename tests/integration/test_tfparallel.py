"""TFParallel.run on a real Spark cluster: independent instances with and without barrier, too few slots,
a failing instance."""

import pytest

import cloudpickle
import nodefns_more
from tfos import TFParallel
from tfos.errors import ClusterFailedError, ConfigError, PlacementError

cloudpickle.register_pickle_by_value(nodefns_more)

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


def test_without_barrier_more_instances_than_slots_run_in_turn(spark_local_cluster):
    seen = TFParallel.run(spark_local_cluster.sparkContext, nodefns_more.parallel_record, {}, 3, use_barrier=False)
    assert [s["worker_num"] for s in seen] == [0, 1, 2]
    assert all(s["num_workers"] == 3 for s in seen)


def test_too_few_slots_with_barrier_is_an_actionable_error(spark_local_cluster):
    with pytest.raises(PlacementError, match=r"Spark can run 2 task\(s\) at once but the TF cluster needs 3 nodes"
                       r".*lower num_executors"):
        TFParallel.run(spark_local_cluster, nodefns_more.parallel_record, {}, 3, slot_wait_timeout=1)


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
    import threading

    with pytest.raises(ConfigError, match="tf_args cannot be pickled"):
        TFParallel.run(spark_local_cluster, nodefns_more.parallel_record, {"lock": threading.Lock()}, 1)
