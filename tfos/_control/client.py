"""The node side of the control plane: a node's calls to the driver's control server.

gRPC errors are caught and translated in one place, :mod:`tfos._control.rpc`; this module words them for a node
calling the driver.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from ..errors import NodeFailure, ReservationTimeoutError
from .reservation import ABORT, NodeInfo
from .rpc import CALL_TIMEOUT, Channel, Peer
from .server import SERVICE

logger = logging.getLogger(__name__)


class ClusterAborted(Exception):
    """The driver says the cluster failed or was stopped: this node must stop. Carries the driver's reason."""


def driver_peer(address: str, tls: bool) -> Peer:
    """How a node's control-plane errors name the driver's control server at ``address``."""
    return Peer(
        failed=f"control call {{method}} to the driver at {address} failed",
        unreachable="Likely causes: the driver stopped or crashed, or executors cannot reach the driver's address "
                    "(set TFOS_CONTROL_HOST or spark.driver.host to an address executors can reach)."
                    + (" With TLS (TFOS_CONTROL_TLS): the driver's certificate must name that address." if tls else ""),
        refused=f"the tfos control server at {address} refused this node's secret",
    )


class ControlClient:
    """Calls the driver's control server with the cluster secret.

    Args:
        address: ``host:port`` of the control server.
        secret: the cluster's secret.
        unavailable_timeout: how long to keep retrying while the server cannot be reached.
        root_cert: PEM certificate(s) to trust: the server speaks TLS (``TFOS_CONTROL_TLS``); empty: plaintext.

    Every call raises :class:`~tfos.errors.ControlPlaneError` when it fails (see :mod:`tfos._control.rpc`), an
    :class:`~tfos.errors.AuthenticationError` when the server refuses the secret.
    """

    def __init__(self, address: str, secret: str, unavailable_timeout: float = 30.0, root_cert: bytes = b"") -> None:
        self.address = address
        self.unavailable_timeout = unavailable_timeout
        self.tls = bool(root_cert)
        self._channel = Channel(address, secret, driver_peer(address, self.tls), unavailable_timeout, root_cert)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, name: str, request: dict, timeout: float = CALL_TIMEOUT) -> dict:
        return self._channel.call(SERVICE, name, request, timeout)

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
