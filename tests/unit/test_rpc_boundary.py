"""The gRPC boundary (tfos._control.rpc): every status mapped to a tfos error, and the retry policy, with fake
calls raising fake gRPC errors and a fake clock."""

from __future__ import annotations

import grpc
import pytest

from tfos._control import rpc
from tfos.errors import AuthenticationError, ControlPlaneError, TFOSError

PEER = rpc.Peer(failed="call {method} to the test server at 10.0.0.1:7 failed",
                unreachable="Likely causes: the test server is down (set TEST_ADDRESS).")


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "the details") -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(*codes: grpc.StatusCode, result: object = "reply"):
    """A call that raises one fake error per code, then returns ``result``."""
    left = list(codes)
    calls = []

    def invoke():
        calls.append(1)
        if left:
            raise FakeRpcError(left.pop(0))
        return result

    invoke.calls = calls  # type: ignore[attr-defined]
    return invoke


def test_every_status_code_is_mapped_to_a_tfos_error():
    assert set(grpc.StatusCode) | {None} == set(rpc.STATUSES)
    for code, status in rpc.STATUSES.items():
        assert issubclass(status.error, ControlPlaneError) and issubclass(status.error, TFOSError), code
        assert status.meaning and status.meaning[0].islower() and not status.meaning.endswith("."), code
    retried = {code for code, status in rpc.STATUSES.items() if status.retried}
    assert retried == {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert rpc.STATUSES[grpc.StatusCode.UNAUTHENTICATED].error is AuthenticationError


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_each_status_becomes_its_error_with_what_it_means(code):
    clock = FakeClock()
    with pytest.raises(TFOSError) as info:
        rpc.call_with_retry(lambda: (_ for _ in ()).throw(FakeRpcError(code)), "Heartbeat", PEER, 0.0,
                            clock=clock, sleep=clock.sleep)
    status = rpc.STATUSES[code]
    assert type(info.value) is status.error
    assert isinstance(info.value.__cause__, FakeRpcError)  # raised from the gRPC error
    message = str(info.value)
    assert message.startswith(f"call Heartbeat to the test server at 10.0.0.1:7 failed: {code} the details. "
                              f"{status.meaning[0].upper()}{status.meaning[1:]}.")
    assert ("set TEST_ADDRESS" in message) is status.retried


def test_the_messages_say_what_the_status_means():
    def message(code):
        return str(rpc.translate(FakeRpcError(code, "x"), "Register", PEER))

    assert "different tfos versions" in message(grpc.StatusCode.UNIMPLEMENTED)
    assert "refused the cluster secret" in message(grpc.StatusCode.UNAUTHENTICATED)
    assert "not part of the cluster" in message(grpc.StatusCode.INVALID_ARGUMENT)
    assert message(grpc.StatusCode.UNAVAILABLE).endswith(
        "StatusCode.UNAVAILABLE x. The server could not be reached. Likely causes: the test server is down "
        "(set TEST_ADDRESS).")


def test_a_peer_may_word_the_refused_secret_itself():
    peer = rpc.Peer("call {method} failed", "down", refused="the test server refused this node's secret")
    error = rpc.translate(FakeRpcError(grpc.StatusCode.UNAUTHENTICATED), "Register", peer)
    assert type(error) is AuthenticationError and str(error) == "the test server refused this node's secret"


def test_an_error_without_a_status_is_a_control_plane_error():
    with pytest.raises(ControlPlaneError, match=r"failed: None no status here\. The call failed without a gRPC") as info:
        rpc.call_with_retry(lambda: (_ for _ in ()).throw(grpc.RpcError("no status here")), "State", PEER, 30.0)
    assert type(info.value) is ControlPlaneError and isinstance(info.value.__cause__, grpc.RpcError)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_a_server_that_comes_back_is_retried_with_a_doubling_backoff(code):
    clock = FakeClock()
    invoke = failing(code, code, code)
    assert rpc.call_with_retry(invoke, "GetSpec", PEER, 30.0, clock=clock, sleep=clock.sleep) == "reply"
    assert clock.sleeps == [0.1, 0.2, 0.4] and len(invoke.calls) == 4


def test_retries_stop_at_the_unavailable_timeout():
    clock = FakeClock()
    invoke = failing(*[grpc.StatusCode.UNAVAILABLE] * 100)
    with pytest.raises(ControlPlaneError, match=r"StatusCode\.UNAVAILABLE the details\. The server could not be "
                                                r"reached\. Likely causes: the test server is down"):
        rpc.call_with_retry(invoke, "Heartbeat", PEER, 1.0, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4])  # a fourth wait (0.8 s) would end after the 1 s
    assert len(invoke.calls) == 4


def test_the_backoff_is_capped_at_two_seconds():
    clock = FakeClock()
    invoke = failing(*[grpc.StatusCode.UNAVAILABLE] * 100)
    with pytest.raises(ControlPlaneError):
        rpc.call_with_retry(invoke, "Heartbeat", PEER, 12.0, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0])
    assert sum(clock.sleeps) <= 12.0


@pytest.mark.parametrize("code", [c for c, s in rpc.STATUSES.items() if c is not None and not s.retried])
def test_other_statuses_fail_at_once(code):
    clock = FakeClock()
    invoke = failing(code)
    with pytest.raises(rpc.STATUSES[code].error):
        rpc.call_with_retry(invoke, "Register", PEER, 30.0, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [] and len(invoke.calls) == 1


def test_a_success_is_returned_untouched():
    assert rpc.call_with_retry(lambda: {"command": "run"}, "Heartbeat", PEER, 30.0) == {"command": "run"}


def test_no_other_module_catches_grpc_errors():
    import pathlib

    import tfos

    root = pathlib.Path(tfos.__file__).parent
    catching = sorted(str(path.relative_to(root)) for path in root.rglob("*.py")
                      if "RpcError" in path.read_text() and path.name != "rpc.py")
    assert catching == []
