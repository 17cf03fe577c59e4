"""The address a node advertises (TF_CONFIG, feed, TensorBoard): Spark's executor address, else the environment.

Kubernetes-like setups: Spark starts executors with the pod IP as their host, and pods may have SPARK_LOCAL_IP or
SPARK_EXECUTOR_POD_IP set; a hostname mapped to loopback must never reach TF_CONFIG when the driver is elsewhere.
"""

import pytest

from tfos._node.spark_task import node_host

DRIVER = "10.0.0.1:40001"


def never(address):
    raise AssertionError(f"should not probe towards {address}")


@pytest.mark.parametrize("task_address, expected", [
    ("10.244.1.7:35000", "10.244.1.7"),     # Kubernetes: the executor's pod IP
    ("[fd00::7]:35000", "fd00::7"),
    ("worker-3.example.com:35000", "worker-3.example.com"),
])
def test_sparks_executor_address_wins(task_address, expected):
    env = {"SPARK_LOCAL_IP": "10.9.9.9"}
    assert node_host(task_address, DRIVER, env, towards=never) == expected


@pytest.mark.parametrize("env, expected", [
    ({"SPARK_LOCAL_IP": "10.244.1.8"}, "10.244.1.8"),
    ({"SPARK_EXECUTOR_POD_IP": "10.244.1.9"}, "10.244.1.9"),
    ({"SPARK_LOCAL_IP": "0.0.0.0", "SPARK_EXECUTOR_POD_IP": "10.244.1.9"}, "10.244.1.9"),
    ({"SPARK_LOCAL_IP": "10.244.1.8", "SPARK_EXECUTOR_POD_IP": "10.244.1.9"}, "10.244.1.8"),
])
def test_without_a_task_address_the_pod_ip_from_the_environment(env, expected):
    assert node_host(None, DRIVER, env, towards=never) == expected


def test_a_loopback_address_is_replaced_when_the_driver_is_on_another_host():
    probe = lambda address: "10.0.0.5" if address == DRIVER else "?"  # noqa: E731
    assert node_host("127.0.1.1:35000", DRIVER, {}, towards=probe) == "10.0.0.5"
    assert node_host("localhost:35000", DRIVER, {"SPARK_LOCAL_IP": "127.0.0.1"}, towards=probe) == "10.0.0.5"
    assert node_host("localhost:35000", DRIVER, {"SPARK_EXECUTOR_POD_IP": "10.244.2.2"}, towards=probe) == "10.244.2.2"
    assert node_host(None, DRIVER, {}, towards=probe) == "10.0.0.5"


def test_loopback_is_fine_when_the_driver_is_local_too():
    assert node_host("127.0.0.1:35000", "127.0.0.1:40001", {}, towards=never) == "127.0.0.1"
    assert node_host(None, "127.0.0.1:40001", {"SPARK_LOCAL_IP": "127.0.0.1"}, towards=never) == "127.0.0.1"
