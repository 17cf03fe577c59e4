"""Node 0's control host under Spark Connect, over real gRPC on loopback with wall-clock deadlines (no Spark, no
TF), and the pure helpers of the Connect client (stage failure parsing, argument checks)."""

import time

import pytest

from tfos._connect.cluster import stage_failure
from tfos._connect.control import ConnectSpec, ControlHost, StateClient
from tfos._connect.session import is_connect, require_dataframe
from tfos._control.client import ControlClient
from tfos._control.reservation import ABORT, RUN, STOP, NodeInfo
from tfos._node.spec import LaunchSpec
from tfos.errors import ConfigError, ControlPlaneError, NodeFailure

SECRET = "s" * 64


def spec(template, reservation_timeout=30.0, hang_timeout=0.0):
    launch = LaunchSpec(cluster_id="c1", control_address="", secret=SECRET, template=template,
                        heartbeat_interval=0.1, reservation_timeout=reservation_timeout, stop_grace_secs=0.5)
    return ConnectSpec(launch, node_lost_timeout=5.0, hang_timeout=hang_timeout)


@pytest.fixture
def host_factory():
    hosts = []

    def make(template, **kw):
        host = ControlHost(spec(template, **kw), "127.0.0.1")
        host.start()
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.stop()


def register(address, nums):
    clients = {}
    for n in nums:
        client = ControlClient(address, SECRET, unavailable_timeout=5)
        client.register(NodeInfo(n, "127.0.0.1", 40000 + n))
        clients[n] = client
    return clients


def test_service_nodes_stop_once_training_is_done_without_a_driver(host_factory):
    host = host_factory({"ps": [0], "worker": [1]})
    clients = register(host.address, [0, 1])
    assert clients[1].wait_for_spec(5) == {"ps": ["127.0.0.1:40000"], "worker": ["127.0.0.1:40001"]}
    assert clients[0].heartbeat(0)[0] == RUN
    clients[1].report_exit(1, None)
    deadline = time.monotonic() + 5
    while clients[0].heartbeat(0)[0] != STOP and time.monotonic() < deadline:
        time.sleep(0.05)
    assert clients[0].heartbeat(0)[0] == STOP  # node 0's watch asked the ps to stop
    clients[0].report_exit(0, None)
    assert host.wait_ended(5)
    with StateClient(host.address, SECRET) as state:
        final = state.call("State")
    assert final["phase"] == "done" and final["failures"] == [] and final["all_exited"]
    assert [n["job_name"] for n in final["nodes"]] == ["ps", "worker"]
    for client in clients.values():
        client.close()


def test_a_failure_aborts_the_others_and_is_in_the_state(host_factory):
    host = host_factory({"worker": [0, 1]})
    clients = register(host.address, [0, 1])
    clients[1].report_exit(1, NodeFailure(1, "worker:1", "127.0.0.1", message="ValueError: boom",
                                          traceback="Traceback ...", time=time.time()))
    assert clients[0].heartbeat(0) == (ABORT, "node 1, worker:1, host 127.0.0.1 failed: ValueError: boom")
    clients[0].report_exit(0, NodeFailure(0, "worker:0", message="stopped", secondary=True, time=time.time()))
    assert host.wait_ended(5)
    with StateClient(host.address, SECRET) as state:
        final = state.call("Close")
    assert host.closed.is_set()
    assert final["phase"] == "failed"
    assert [(f["worker_num"], f["message"], f["secondary"]) for f in final["failures"]] == [
        (1, "ValueError: boom", False), (0, "stopped", True)]
    for client in clients.values():
        client.close()


def test_abort_from_the_client_and_stop(host_factory):
    host = host_factory({"worker": [0]})
    clients = register(host.address, [0])
    with StateClient(host.address, SECRET) as state:
        assert state.call("Stop")["phase"] == "stopping"
        after = state.call("Abort", {"who": "client", "reason": "shutdown timeout of 5s expired"})
    assert after["phase"] == "failed" and after["abort_reason"] == "client failed: shutdown timeout of 5s expired"
    assert clients[0].heartbeat(0)[0] == ABORT
    clients[0].close()


def test_nodes_that_never_register_fail_the_cluster_after_reservation_timeout(host_factory):
    host = host_factory({"worker": [0, 1]}, reservation_timeout=0.3)
    register(host.address, [0])[0].close()
    deadline = time.monotonic() + 5
    while host.state()["phase"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    state = host.state()
    assert state["phase"] == "failed" and state["missing"] == [1]
    assert "nodes [1] did not register with node 0's control server" in state["failures"][0]["message"]
    assert "reservation_timeout" in state["failures"][0]["message"]


def test_a_node_without_progress_is_failed_as_hung(host_factory):
    host = host_factory({"worker": [0]}, hang_timeout=0.3)
    client = register(host.address, [0])[0]
    deadline = time.monotonic() + 5
    while client.heartbeat(0, {})[0] != ABORT and time.monotonic() < deadline:
        time.sleep(0.05)
    failure = host.state()["failures"][0]
    assert failure["worker_num"] == 0 and "no progress for" in failure["message"]
    assert "hang_timeout=0s" in failure["message"]
    client.close()


def test_the_state_service_wants_the_secret(host_factory):
    host = host_factory({"worker": [0]})
    with StateClient(host.address, "wrong", unavailable_timeout=2) as state:
        with pytest.raises(ControlPlaneError, match=r"did not answer State: StatusCode.UNAUTHENTICATED"):
            state.call("State")


def test_a_lost_node_0_host_is_named_in_the_error():
    with StateClient("127.0.0.1:9", SECRET, unavailable_timeout=0.5) as state:
        with pytest.raises(ControlPlaneError, match=r"node 0's control server at 127.0.0.1:9 did not answer State"):
            state.call("State")


def test_stage_failure_names_the_node_of_the_failed_barrier_task():
    text = ("Job aborted due to stage failure: Could not recover from a failed barrier ResultStage. Most recent "
            "failure reason: Stage failed because barrier task ResultTask(7, 1) finished unsuccessfully.\n"
            "org.apache.spark.SparkException: Python worker exited unexpectedly (crashed).\n\tat org.apache.x(Y)")
    failure = stage_failure(text)
    assert failure.worker_num == 1 and failure.where() == "node 1"
    assert "the Spark task of node 1 ended unsuccessfully" in failure.message
    assert "Python worker exited unexpectedly" in failure.message and "\tat org.apache" not in failure.message
    other = stage_failure("Job 3 cancelled")
    assert other.worker_num == -1 and other.where() == "spark job" and "Job 3 cancelled" in other.message


def test_connect_sessions_are_recognised_and_rdds_refused():
    assert not is_connect(object())
    with pytest.raises(ConfigError, match=r"TFCluster.train\(\) got a list, but under Spark Connect there is no "
                                          r"SparkContext and so no RDD API: pass a DataFrame"):
        require_dataframe([1, 2], "train")
