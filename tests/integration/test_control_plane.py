"""The control plane over real gRPC on loopback: the protocol, the deadline, and the secret."""

import threading

import grpc
import pytest

from tfos._control.client import ClusterAborted, ControlClient
from tfos._control.reservation import NodeInfo, Reservation
from tfos._control.server import SERVICE, ControlServer, encode
from tfos.errors import AuthenticationError, NodeFailure, ReservationTimeoutError

SECRET = "s3cr3t-for-tests"


@pytest.fixture
def server():
    srv = ControlServer(Reservation({"chief": [0], "worker": [1]}, node_lost_timeout=30), SECRET, "127.0.0.1")
    srv.start()
    yield srv
    srv.stop()


def test_two_nodes_get_the_same_spec(server):
    specs = {}

    def node(n):
        with ControlClient(server.address, SECRET) as client:
            client.register(NodeInfo(n, "127.0.0.1", 7000 + n, str(n), 1))
            specs[n] = client.wait_for_spec(timeout=10)

    threads = [threading.Thread(target=node, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert specs[0] == specs[1] == {"chief": ["127.0.0.1:7000"], "worker": ["127.0.0.1:7001"]}
    with ControlClient(server.address, SECRET) as client:
        assert client.heartbeat(0) == ("run", "")
        client.report_exit(1, NodeFailure(1, "worker:0", message="boom"))
        command, reason = client.heartbeat(0)
        assert command == "abort" and "boom" in reason


def test_wait_for_spec_has_a_deadline(server):
    with ControlClient(server.address, SECRET) as client:
        client.register(NodeInfo(0, "127.0.0.1", 7000))
        with pytest.raises(ReservationTimeoutError, match=r"nodes \[1\] did not register within 1s"):
            client.wait_for_spec(timeout=1)


def test_register_after_abort_is_refused(server):
    server.reservation.abort(NodeFailure(-1, "driver", message="gave up"))
    with ControlClient(server.address, SECRET) as client, pytest.raises(ClusterAborted, match="gave up"):
        client.register(NodeInfo(0, "127.0.0.1", 7000))


def test_wrong_secret_is_refused_and_state_untouched(server):
    with ControlClient(server.address, "not-the-secret") as client:
        with pytest.raises(AuthenticationError, match="refused this node's secret") as info:
            client.register(NodeInfo(0, "127.0.0.1", 7000))
    assert "not-the-secret" not in str(info.value) and SECRET not in str(info.value)
    assert server.reservation.nodes == {}


def test_raw_grpc_client_without_metadata_is_refused(server):
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary(f"/{SERVICE}/Register", request_serializer=encode)
        with pytest.raises(grpc.RpcError) as info:
            call({"node": {"worker_num": 0, "host": "evil", "port": 1}}, timeout=5)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert server.reservation.nodes == {}


def test_unreachable_server_gives_actionable_error():
    client = ControlClient("127.0.0.1:1", SECRET, unavailable_timeout=1)
    with pytest.raises(Exception, match="TFOS_CONTROL_HOST"):
        client.heartbeat(0)
    client.close()
