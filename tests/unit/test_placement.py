"""The placement check and other driver-side logic, with a fake SparkContext (pure logic, no Spark)."""

import pytest

from tfos import _spark
from tfos._node.supervisor import LaunchSpec
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


def test_secret_and_payload_stay_out_of_repr():
    spec = LaunchSpec("id", "h:1", secret="TOPSECRET", fn=b"F" * 100, args=b"A")
    assert "TOPSECRET" not in repr(spec) and "FFFF" not in repr(spec)


def test_shared_executors():
    rows = [{"worker_num": 0, "host": "h", "spark_executor_id": "1"},
            {"worker_num": 1, "host": "h", "spark_executor_id": "1"},
            {"worker_num": 2, "host": "h", "spark_executor_id": "2"},
            {"worker_num": 3, "host": "d", "spark_executor_id": "driver"}]
    assert _shared_executors(rows) == {"h/1": [0, 1]}
