"""The one boundary between tfos and gRPC's errors: every client call to a tfos control service goes through
:class:`Channel`, the only place a ``grpc.RpcError`` is caught.

A call the server cannot take yet is retried, with a backoff from 0.1 s doubling up to 2 s, until
``unavailable_timeout`` seconds have passed; any other status fails at once. Each status becomes a tfos error,
raised ``from`` the gRPC error. Its message says what failed, in the words of the caller's :class:`Peer`, then the
status and its details, then what the status means here (:attr:`Status.meaning`); a retried status adds the
peer's likely causes and the setting to check.

=====================  =======  =====================
gRPC status            retried  tfos error
=====================  =======  =====================
OK                     no       ControlPlaneError
CANCELLED              no       ControlPlaneError
UNKNOWN                no       ControlPlaneError
INVALID_ARGUMENT       no       ControlPlaneError
DEADLINE_EXCEEDED      yes      ControlPlaneError
NOT_FOUND              no       ControlPlaneError
ALREADY_EXISTS         no       ControlPlaneError
PERMISSION_DENIED      no       ControlPlaneError
RESOURCE_EXHAUSTED     no       ControlPlaneError
FAILED_PRECONDITION    no       ControlPlaneError
ABORTED                no       ControlPlaneError
OUT_OF_RANGE           no       ControlPlaneError
UNIMPLEMENTED          no       ControlPlaneError
INTERNAL               no       ControlPlaneError
UNAVAILABLE            yes      ControlPlaneError
DATA_LOSS              no       ControlPlaneError
UNAUTHENTICATED        no       AuthenticationError   (a ControlPlaneError; the peer may word it, ``Peer.refused``)
(no status)            no       ControlPlaneError
=====================  =======  =====================

:data:`STATUSES` is this table; a unit test checks that it covers every ``grpc.StatusCode``. ``ClusterAborted``
(:mod:`tfos._control.client`) is not a gRPC status: it is what the reply of a call that worked says.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, TypeVar

import grpc

from ..errors import AuthenticationError, ControlPlaneError, TFOSError
from .server import decode, encode

T = TypeVar("T")
# How long one call may take before it is retried; a healthy server answers in milliseconds.
CALL_TIMEOUT = 10.0
FIRST_DELAY = 0.1  # seconds before the first retry; doubled at each one
MAX_DELAY = 2.0


@dataclasses.dataclass(frozen=True)
class Status:
    """How one gRPC status is handled: the tfos error it becomes, whether it is retried, and what it means."""

    error: type[TFOSError]
    retried: bool
    meaning: str


_S = grpc.StatusCode
STATUSES: dict[grpc.StatusCode | None, Status] = {
    _S.OK: Status(ControlPlaneError, False, "the call failed although gRPC reported no error"),
    _S.CANCELLED: Status(ControlPlaneError, False, "the call was cancelled (this process is stopping, or the server "
                                                   "stopped while answering)"),
    _S.UNKNOWN: Status(ControlPlaneError, False, "the server failed while answering (its log has the traceback)"),
    _S.INVALID_ARGUMENT: Status(ControlPlaneError, False, "the server refused the request (a node that is not part "
                                                          "of the cluster, or a task of another run)"),
    _S.DEADLINE_EXCEEDED: Status(ControlPlaneError, True, "the server did not answer in time"),
    _S.NOT_FOUND: Status(ControlPlaneError, False, "the server does not know what the call names"),
    _S.ALREADY_EXISTS: Status(ControlPlaneError, False, "the server already has what the call would create"),
    _S.PERMISSION_DENIED: Status(ControlPlaneError, False, "the server does not let this caller make the call"),
    _S.RESOURCE_EXHAUSTED: Status(ControlPlaneError, False, "a limit was reached (a message above gRPC's size "
                                                            "limit, or the server's threads all busy)"),
    _S.FAILED_PRECONDITION: Status(ControlPlaneError, False, "the server is not in a state to take this call"),
    _S.ABORTED: Status(ControlPlaneError, False, "the server aborted the call"),
    _S.OUT_OF_RANGE: Status(ControlPlaneError, False, "the call asked for something out of range"),
    _S.UNIMPLEMENTED: Status(ControlPlaneError, False, "the server does not serve this call (the driver and the "
                                                       "executors may run different tfos versions)"),
    _S.INTERNAL: Status(ControlPlaneError, False, "gRPC failed inside the client or the server (a broken "
                                                  "connection, or a failed TLS handshake)"),
    _S.UNAVAILABLE: Status(ControlPlaneError, True, "the server could not be reached"),
    _S.DATA_LOSS: Status(ControlPlaneError, False, "the call's data was lost or corrupted on the way"),
    _S.UNAUTHENTICATED: Status(AuthenticationError, False, "the server refused the cluster secret (a caller of "
                                                           "another cluster, or of an earlier run of this one)"),
    None: Status(ControlPlaneError, False, "the call failed without a gRPC status"),
}


@dataclasses.dataclass(frozen=True)
class Peer:
    """Who a channel calls, in the words its errors use.

    Args:
        failed: what failed, with ``{method}`` for the call's name
            (``control call {method} to the driver at 10.0.0.1:4000 failed``).
        unreachable: the likely causes, and the setting to check, when the server cannot be reached in time.
        refused: the whole message when the server refuses the secret; empty: the general form.
    """

    failed: str
    unreachable: str
    refused: str = ""


def status_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    """The status code and details of a gRPC error (None and its text when it carries no status)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return code, details


def translate(exc: grpc.RpcError, method: str, peer: Peer) -> TFOSError:
    """The tfos error for a failed call (see the table above); the caller raises it ``from exc``."""
    code, details = status_of(exc)
    status = STATUSES.get(code, STATUSES[None])
    if code is grpc.StatusCode.UNAUTHENTICATED and peer.refused:
        return status.error(peer.refused)
    meaning = status.meaning[0].upper() + status.meaning[1:]
    message = f"{peer.failed.replace('{method}', method)}: {code} {details}. {meaning}."
    if status.retried:
        message += f" {peer.unreachable}"
    return status.error(message)


def call_with_retry(invoke: Callable[[], T], method: str, peer: Peer, unavailable_timeout: float,
                    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> T:
    """Calls ``invoke`` until it returns, retrying what the table retries for up to ``unavailable_timeout`` s.

    Raises:
        ControlPlaneError: the call failed (:class:`AuthenticationError` when the secret was refused).
    """
    give_up = clock() + unavailable_timeout
    delay = FIRST_DELAY
    while True:
        try:
            return invoke()
        except grpc.RpcError as exc:
            code, _ = status_of(exc)
            if not STATUSES.get(code, STATUSES[None]).retried or clock() + delay > give_up:
                raise translate(exc, method, peer) from exc
            sleep(delay)
            delay = min(delay * 2, MAX_DELAY)


class Channel:
    """A channel to one tfos gRPC server, with the cluster secret on every call, and the errors translated.

    Args:
        address: ``host:port`` of the server.
        secret: the cluster's secret (sent as ``authorization: Bearer <secret>``).
        peer: how errors name the server (:class:`Peer`).
        unavailable_timeout: how long to retry while the server cannot be reached.
        root_cert: PEM certificate(s) to trust: the server speaks TLS (``TFOS_CONTROL_TLS``); empty: plaintext.
    """

    def __init__(self, address: str, secret: str, peer: Peer, unavailable_timeout: float = 30.0,
                 root_cert: bytes = b"") -> None:
        self.address = address
        self.peer = peer
        self.unavailable_timeout = unavailable_timeout
        if root_cert:
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root_cert))
        else:
            self._channel = grpc.insecure_channel(address)
        self._metadata = (("authorization", f"Bearer {secret}"),)
        self._methods: dict[str, grpc.UnaryUnaryMultiCallable] = {}

    def call(self, service: str, method: str, request: dict, timeout: float = CALL_TIMEOUT) -> dict:
        """Calls ``/service/method`` with a JSON request; returns the JSON reply.

        Raises:
            ControlPlaneError: the call failed (see the module's table); :class:`AuthenticationError` when the
                server refused the secret.
        """
        path = f"/{service}/{method}"
        if path not in self._methods:
            self._methods[path] = self._channel.unary_unary(path, request_serializer=encode,
                                                            response_deserializer=decode)
        stub = self._methods[path]
        return call_with_retry(lambda: stub(request, timeout=timeout, metadata=self._metadata), method, self.peer,
                               self.unavailable_timeout)

    def close(self) -> None:
        self._channel.close()
