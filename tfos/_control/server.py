"""The driver's control server: a thin, locked gRPC shell around :class:`Reservation`.

Messages are JSON objects (gRPC generic handlers; no generated code). Every call must carry the cluster's
secret in the ``authorization`` metadata; others get ``UNAUTHENTICATED`` before any handler runs.
"""

from __future__ import annotations

import hmac
import json
import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent import futures

import grpc

from ..errors import ConfigError, NodeFailure
from .reservation import ABORT, NodeInfo, Phase, Reservation

logger = logging.getLogger(__name__)

SERVICE = "tfos.Control"
METHODS = ("Register", "GetSpec", "Heartbeat", "ReportExit")
# Bind addresses meaning "every interface": the server then advertises another address.
WILDCARDS = ("0.0.0.0", "::", "[::]", "")
# Longest time one GetSpec call waits on the server; clients call again until their own deadline.
LONG_POLL_SECS = 2.0


def encode(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def decode(data: bytes):
    return json.loads(data.decode()) if data else {}


class SecretInterceptor(grpc.ServerInterceptor):
    """Refuses every call whose ``authorization`` metadata is not ``Bearer <secret>``."""

    def __init__(self, secret: str) -> None:
        self._expected = f"Bearer {secret}".encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong tfos cluster secret")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode(), self._expected):
            return continuation(handler_call_details)
        logger.warning("refused a control-plane call to %s without the cluster secret", handler_call_details.method)
        return self._deny


class ControlServicer:
    """Serves the four control calls; every state change notifies long-polling callers."""

    def __init__(self, reservation: Reservation, log_sink=None) -> None:
        self.reservation = reservation
        self.changed = threading.Condition()
        self.log_sink = log_sink

    def Register(self, request, context):
        info = NodeInfo(**request["node"])
        with self.changed:
            try:
                command = self.reservation.register(info)
            except ValueError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            self.changed.notify_all()
            logger.debug("registered node %s at %s (%s)", info.worker_num, info.address, command)
            return {"command": command, "abort_reason": self.reservation.abort_reason}

    def GetSpec(self, request, context):
        deadline = time.monotonic() + min(float(request.get("wait", LONG_POLL_SECS)), LONG_POLL_SECS)
        with self.changed:
            while True:
                spec = self.reservation.cluster_spec()
                failed = self.reservation.phase is Phase.FAILED
                left = deadline - time.monotonic()
                if spec is not None or failed or left <= 0:
                    break
                self.changed.wait(left)
            return {
                "cluster_spec": spec,
                "command": ABORT if failed else "run",
                "abort_reason": self.reservation.abort_reason,
                "missing": self.reservation.missing(),
            }

    def Heartbeat(self, request, context):
        progress = dict(request.get("progress") or {})
        lines, dropped = progress.pop("lines", None), progress.pop("dropped", 0)
        worker_num = int(request["worker_num"])
        with self.changed:
            command = self.reservation.heartbeat(worker_num, progress)
            reason = self.reservation.abort_reason
            node = self.reservation.nodes.get(worker_num)
        if (lines or dropped) and self.log_sink is not None:
            label = f"{node.job_name}:{node.task_index}" if node else f"node {worker_num}"
            self.log_sink(label, lines or [], int(dropped))
        return {"command": command, "abort_reason": reason}

    def ReportExit(self, request, context):
        failure = request.get("failure")
        with self.changed:
            self.reservation.report_exit(
                int(request["worker_num"]), NodeFailure(**failure) if failure else None
            )
            self.changed.notify_all()
            return {"command": self.reservation.command_for(int(request["worker_num"]))}


def method_handlers(service: str, target: object, names: Sequence[str]) -> grpc.GenericRpcHandler:
    """The gRPC handlers of ``service``: each of ``names`` is ``target``'s method, JSON in and out."""
    return grpc.method_handlers_generic_handler(service, {
        name: grpc.unary_unary_rpc_method_handler(getattr(target, name), request_deserializer=decode,
                                                  response_serializer=encode)
        for name in names
    })


def advertised_host(host: str, driver_host: str | None) -> str:
    """The address nodes are given for a server bound to ``host``: ``driver_host`` when ``host`` is a wildcard."""
    return driver_host if host in WILDCARDS and driver_host else host


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def print_lines(role: str, lines: list, dropped: int) -> None:
    """The driver's default log sink: each node line on stderr, prefixed with its role (``[worker:1]``)."""
    out = "".join(f"[{role}] {line}\n" for line in lines)
    if dropped:
        out += f"[{role}] ... {dropped} line(s) dropped here (the driver fell behind); see the executor log\n"
    try:
        sys.stderr.write(out)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class ControlServer:
    """Runs a :class:`ControlServicer` on a gRPC server bound to ``host`` (port chosen by the OS).

    Args:
        reservation: the cluster state to serve.
        secret: the cluster's secret; calls without it are refused.
        host: the address to bind (the driver's address; 0.0.0.0 or :: only when asked, TFOS_CONTROL_HOST).
        max_workers: threads serving calls; each node holds at most one at a time.
        log_sink: called with ``(role, lines, dropped)`` for the output lines nodes forward.
        advertise_host: the address nodes are told to call when ``host`` is a wildcard (ignored otherwise).
        tls: ``(certificate, private key)`` PEM: serve TLS only (see :mod:`tfos._control.tls`); None: plaintext.
        services: more services on the same server and secret: ``{service name: (target, method names)}``; each
            method is the target's attribute of that name, called with the decoded request and the gRPC context.
        name: the prefix of the serving threads' names.
        bind_hint: appended to the error when ``host`` cannot be bound (what to set).

    Raises:
        ConfigError: ``host`` is a wildcard address and no ``advertise_host`` was given.
        OSError: the server cannot bind ``host``.
    """

    def __init__(self, reservation: Reservation, secret: str, host: str, max_workers: int = 16,
                 log_sink=None, advertise_host: str | None = None, tls: tuple[bytes, bytes] | None = None,
                 services: Mapping[str, tuple[object, Sequence[str]]] | None = None, name: str = "tfos-control",
                 bind_hint: str = "; set TFOS_CONTROL_HOST to an address of this machine that the executors can reach",
                 ) -> None:
        if host in WILDCARDS and not advertise_host:
            raise ConfigError(f"the control server binds to {host}, so it needs an address to give the nodes "
                              "(spark.driver.host)")
        self.servicer = ControlServicer(reservation, log_sink)
        self.host = host
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name),
            interceptors=[SecretInterceptor(secret)],
            options=[("grpc.so_reuseport", 0)],
        )
        served = {SERVICE: (self.servicer, METHODS), **(services or {})}
        self._server.add_generic_rpc_handlers(tuple(method_handlers(service, target, names)
                                                    for service, (target, names) in served.items()))
        bind_host = _bracket(host)
        self.certificate = tls[0] if tls else b""  # what nodes must trust; public
        if tls:
            credentials = grpc.ssl_server_credentials([(tls[1], tls[0])])
            self.port = self._server.add_secure_port(f"{bind_host}:0", credentials)
        else:
            self.port = self._server.add_insecure_port(f"{bind_host}:0")
        if not self.port:
            raise OSError(f"could not bind the tfos control server to {host}{bind_hint}")
        shown = advertise_host if host in WILDCARDS and advertise_host else host
        self.address = f"{_bracket(shown)}:{self.port}"

    @property
    def changed(self) -> threading.Condition:
        return self.servicer.changed

    @property
    def reservation(self) -> Reservation:
        return self.servicer.reservation

    def start(self) -> str:
        self._server.start()
        logger.info("tfos control server listening on %s%s", self.address, " (TLS)" if self.certificate else "")
        return self.address

    def stop(self, grace: float = 1.0) -> None:
        self._server.stop(grace).wait(grace + 1)
