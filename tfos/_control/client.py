"""The node side of the control plane: the only place gRPC errors are caught and translated."""

from __future__ import annotations

import dataclasses
import logging
import time

import grpc

from ..errors import AuthenticationError, ControlPlaneError, NodeFailure, ReservationTimeoutError
from .reservation import ABORT, NodeInfo
from .server import METHODS, SERVICE, decode, encode

logger = logging.getLogger(__name__)

# How long one call may take before it is retried; the driver answers in milliseconds when healthy.
CALL_TIMEOUT = 10.0


class ClusterAborted(Exception):
    """The driver says the cluster failed or was stopped: this node must stop. Carries the driver's reason."""


class ControlClient:
    """Calls the driver's control server with the cluster secret.

    Args:
        address: ``host:port`` of the control server.
        secret: the cluster's secret.
        unavailable_timeout: how long to keep retrying while the server cannot be reached.
        root_cert: PEM certificate(s) to trust: the server speaks TLS (``TFOS_CONTROL_TLS``); empty: plaintext.
    """

    def __init__(self, address: str, secret: str, unavailable_timeout: float = 30.0, root_cert: bytes = b"") -> None:
        self.address = address
        self.unavailable_timeout = unavailable_timeout
        self.tls = bool(root_cert)
        if root_cert:
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root_cert))
        else:
            self._channel = grpc.insecure_channel(address)
        self._metadata = (("authorization", f"Bearer {secret}"),)
        self._calls = {
            name: self._channel.unary_unary(
                f"/{SERVICE}/{name}", request_serializer=encode, response_deserializer=decode
            )
            for name in METHODS
        }

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, name: str, request: dict, timeout: float = CALL_TIMEOUT) -> dict:
        give_up = time.monotonic() + self.unavailable_timeout
        delay = 0.1
        while True:
            try:
                return self._calls[name](request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code is grpc.StatusCode.UNAUTHENTICATED:
                    raise AuthenticationError(
                        f"the tfos control server at {self.address} refused this node's secret"
                    ) from None
                retryable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if not retryable or time.monotonic() + delay > give_up:
                    details = exc.details() if hasattr(exc, "details") else str(exc)
                    raise ControlPlaneError(
                        f"control call {name} to the driver at {self.address} failed: {code} {details}. "
                        "Likely causes: the driver stopped or crashed, or executors cannot reach the driver's "
                        "address (set TFOS_CONTROL_HOST or spark.driver.host to an address executors can reach)."
                        + (" With TLS (TFOS_CONTROL_TLS): the driver's certificate must name that address."
                           if self.tls else "")
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def register(self, info: NodeInfo) -> None:
        reply = self._call("Register", {"node": dataclasses.asdict(info)})
        if reply["command"] == ABORT:
            raise ClusterAborted(reply.get("abort_reason") or "the cluster failed before this node registered")

    def wait_for_spec(self, timeout: float) -> dict[str, list[str]]:
        """Blocks until every node registered; returns the cluster spec.

        Raises:
            ClusterAborted: the cluster failed while waiting.
            ReservationTimeoutError: not every node registered within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            reply = self._call("GetSpec", {"wait": max(0.0, min(left, 2.0))})
            if reply["command"] == ABORT:
                raise ClusterAborted(reply.get("abort_reason") or "the cluster failed")
            if reply["cluster_spec"] is not None:
                return reply["cluster_spec"]
            if time.monotonic() >= deadline:
                raise ReservationTimeoutError(
                    f"nodes {reply['missing']} did not register within {timeout:.0f}s "
                    "(reservation_timeout); see the driver's error for the likely cause."
                )

    def heartbeat(self, worker_num: int, progress: dict | None = None) -> tuple[str, str]:
        """Returns the driver's ``(command, abort_reason)``."""
        reply = self._call("Heartbeat", {"worker_num": worker_num, "progress": progress or {}})
        return reply["command"], reply.get("abort_reason", "")

    def report_exit(self, worker_num: int, failure: NodeFailure | None) -> None:
        self._call(
            "ReportExit", {"worker_num": worker_num, "failure": dataclasses.asdict(failure) if failure else None}
        )
