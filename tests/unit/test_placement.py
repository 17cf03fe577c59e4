"""The placement check and other driver-side logic, with a fake SparkContext (pure logic, no Spark)."""

import pytest

from tfos import TFParallel
from tfos._driver import spark as _spark
from tfos._node.spec import LaunchSpec
from tfos.cluster import _shared_executors
from tfos.errors import PlacementError


class FakeConf(dict):
    def get(self, key, default=None):
        return super().get(key, default)


class FakeSC:
    master = "spark://fake:7077"

    def __init__(self, conf=None, slots=(2,)):
        self._conf = FakeConf(conf or {})
        self._slots = list(slots)

    def getConf(self):
        return self._conf


@pytest.fixture
def slots(monkeypatch):
    def fake_slots(sc):
        return sc._slots.pop(0) if len(sc._slots) > 1 else sc._slots[0]

    monkeypatch.setattr(_spark, "task_slots", fake_slots)
    monkeypatch.setattr(_spark, "executor_summary", lambda sc: "executors: 1, spark.task.cpus: 1")


def test_dynamic_allocation_is_refused_with_the_fix(slots):
    sc = FakeSC({"spark.dynamicAllocation.enabled": "true"})
    with pytest.raises(PlacementError, match=r"dynamic allocation is on.*spark.dynamicAllocation.enabled=false.*"
                       r"--num-executors 2"):
        _spark.check_placement(sc, 2, wait=0)


def test_waits_for_executors_that_are_still_starting(slots):
    assert _spark.check_placement(FakeSC(slots=(0, 1, 3)), 3, wait=5, poll=0.01) == 3


def test_too_few_slots_names_the_numbers(slots):
    with pytest.raises(PlacementError, match=r"Spark can run 1 task\(s\) at once but the TF cluster needs 4 nodes.*"
                       r"executors: 1.*TFOS_SLOT_WAIT_TIMEOUT"):
        _spark.check_placement(FakeSC(slots=(1,)), 4, wait=0.05, poll=0.01)


def test_too_few_slots_for_tfparallel_names_instances_and_use_barrier(slots):
    with pytest.raises(PlacementError, match=r"Spark can run 1 task\(s\) at once but TFParallel needs 4 instances "
                       r"running together \(use_barrier=True\).*executors: 1.*lower num_executors \(the number of "
                       r"instances\), or pass use_barrier=False.*TFOS_SLOT_WAIT_TIMEOUT") as info:
        _spark.check_placement(FakeSC(slots=(1,)), 4, wait=0.05, poll=0.01, parallel=True)
    assert "TF cluster" not in str(info.value) and "--num-executors" not in str(info.value)


def test_dynamic_allocation_for_tfparallel_offers_use_barrier_false(slots):
    sc = FakeSC({"spark.dynamicAllocation.enabled": "true"})
    with pytest.raises(PlacementError, match=r"dynamic allocation is on, but TFParallel with use_barrier=True "
                       r"needs its 3 instances.*spark.dynamicAllocation.enabled=false.*use_barrier=False") as info:
        _spark.check_placement(sc, 3, wait=0, parallel=True)
    assert "TF cluster" not in str(info.value)


def _instance(args, ctx):
    return ctx.worker_num


# Arguments are checked before Spark is touched: with valid ones, run() gets as far as refusing the fake context.
NOT_SPARK = r"expected a SparkContext or SparkSession, got object"


@pytest.mark.parametrize("call", [
    lambda: TFParallel.run(object(), _instance, {}, 2),  # TensorFlowOnSpark's positional call
    lambda: TFParallel.run(object(), map_fn=_instance, tf_args={}, num_executors=2),
    lambda: TFParallel.run(object(), map_fun=_instance, tf_args={}, num_executors=2),
    lambda: TFParallel.run(object(), tf_args={}, num_executors=2, use_barrier=False, map_fun=_instance),
])
def test_tfparallel_takes_map_fn_or_map_fun(call):
    from tfos.errors import ConfigError

    with pytest.raises(ConfigError, match=NOT_SPARK):
        call()


def test_tfparallel_function_argument_errors():
    from tfos.errors import ConfigError

    with pytest.raises(ConfigError, match="got both map_fn and map_fun"):
        TFParallel.run(object(), _instance, {}, 2, map_fun=_instance)
    with pytest.raises(ConfigError, match=r"needs the function to run: TFParallel.run\(sc, map_fun"):
        TFParallel.run(object(), tf_args={}, num_executors=2)
    with pytest.raises(ConfigError, match="map_fun must be callable, got str"):
        TFParallel.run(object(), map_fun="f", tf_args={}, num_executors=2)
    with pytest.raises(ConfigError, match="map_fn must be callable, got str"):
        TFParallel.run(object(), "f", {}, 2)
    with pytest.raises(ConfigError, match="num_executors must be an int >= 1, got None"):
        TFParallel.run(object(), map_fun=_instance, tf_args={})


def test_secret_and_payload_stay_out_of_repr():
    spec = LaunchSpec("id", "h:1", secret="TOPSECRET", fn=b"F" * 100, args=b"A")
    assert "TOPSECRET" not in repr(spec) and "FFFF" not in repr(spec)


def test_shared_executors():
    rows = [{"worker_num": 0, "host": "h", "spark_executor_id": "1"},
            {"worker_num": 1, "host": "h", "spark_executor_id": "1"},
            {"worker_num": 2, "host": "h", "spark_executor_id": "2"},
            {"worker_num": 3, "host": "d", "spark_executor_id": "driver"}]
    assert _shared_executors(rows) == {"h/1": [0, 1]}
