"""The control server that node 0 hosts under Spark Connect, and the client of its state service.

In classic mode the driver serves the control plane. Under Spark Connect the client may be unreachable from
the executors, so node 0 (worker_num 0) serves it instead: the same :class:`Reservation` state machine and the
same ``tfos.Control`` gRPC service (so every node's supervisor runs unchanged), with the driver's watch duties
(lost nodes, reservation timeout, stopping service nodes once training is done) done here. A second service,
``tfos.ConnectState``, lets a Spark task read the state (phase, failures, node table) and stop, abort or close
the host.

With InputMode.TENSORFLOW the host runs in node 0's task; with InputMode.SPARK it runs detached
(``python -m tfos._connect.control``) so that it outlives the node stage, like the nodes' supervisors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import sys
import threading
import time
from typing import Callable

from .._control.reservation import Reservation
from .._control.rpc import Channel, Peer
from .._control.server import ControlServer
from .._control.finish import state_of
from .._control.tls import self_signed
from .._control.watch import Watch
from .._node.spec import LaunchSpec
from ..errors import NodeFailure

logger = logging.getLogger(__name__)

STATE_SERVICE = "tfos.ConnectState"
STATE_METHODS = ("State", "Stop", "Abort", "Close")
# A detached host whose cluster ended waits this long for a final State/Close call before it exits.
CLOSE_LINGER_SECS = 60.0


@dataclasses.dataclass(frozen=True)
class ConnectSpec:
    """What the Connect node stage needs beyond a node's :class:`LaunchSpec`."""

    launch: LaunchSpec
    node_lost_timeout: float = 30.0
    hang_timeout: float = 0.0
    tls: bool = False  # serve the control plane over TLS (TFOS_CONTROL_TLS), as the classic driver does
    # the user's (certificate, key) PEM (TFOS_CONTROL_TLS_CERT/_KEY); None: node 0 makes one for its address
    tls_material: tuple[bytes, bytes] | None = dataclasses.field(default=None, repr=False)


def failures_of(state: dict) -> list[NodeFailure]:
    return [NodeFailure(**f) for f in state.get("failures", [])]


def host_watch(reservation: Reservation, launch: LaunchSpec, address: str,
               clock: Callable[[], float] = time.monotonic) -> Watch:
    """The driver's watch duties, as node 0 does them under Spark Connect (:class:`~tfos._control.watch.Watch`):
    it also times out the reservation and, with no driver to ask, stops the service nodes once training is done."""
    def late(missing: list[int]) -> str:
        return (f"nodes {missing} did not register with node 0's control server at {address} within "
                f"{launch.reservation_timeout:.0f}s (reservation_timeout). Likely causes: the executors cannot reach "
                "each other, or their node tasks were slow to start.")

    return Watch(reservation, reservation_timeout=launch.reservation_timeout, late_message=late,
                 stop_when_trained=True, stop_grace=launch.stop_grace_secs + 3 * launch.heartbeat_interval + 5,
                 clock=clock)


class ControlHost:
    """Node 0's control server: the classic :class:`ControlServer` (same :class:`Reservation`, same
    ``tfos.Control`` service and secret, TLS when asked) plus the ``tfos.ConnectState`` service and a thread
    doing the driver's watch duties (:func:`host_watch`).

    Args:
        spec: the cluster's spec (template, secret, timeouts, TLS).
        host: the address to bind and advertise (node 0's executor address).
        clock: the watch's and the reservation's clock (``time.monotonic``).
    """

    def __init__(self, spec: ConnectSpec, host: str, clock: Callable[[], float] = time.monotonic) -> None:
        launch = spec.launch
        self.spec = spec
        self.closed = threading.Event()
        self._stopped = threading.Event()
        reservation = Reservation(launch.template, node_lost_timeout=spec.node_lost_timeout,
                                  hang_timeout=spec.hang_timeout, clock=clock)
        material = spec.tls_material or (self_signed(host) if spec.tls else None)
        self._server = ControlServer(reservation, launch.secret, host,
                                     max_workers=max(16, 2 * len(reservation.expected) + 4), tls=material,
                                     services={STATE_SERVICE: (self, STATE_METHODS)}, name="tfos-connect-control",
                                     bind_hint=" on node 0")
        self.servicer = self._server.servicer
        self.certificate = self._server.certificate  # what the nodes and the client's tasks trust
        self.address = self._server.address
        self.watch = host_watch(reservation, launch, self.address, clock)

    @property
    def reservation(self) -> Reservation:
        return self.servicer.reservation

    @property
    def changed(self) -> threading.Condition:
        return self.servicer.changed

    def start(self) -> str:
        self._server.start()
        threading.Thread(target=self._watch, name="tfos-connect-watch", daemon=True).start()
        logger.info("tfos control server of cluster %s on node 0 at %s%s", self.spec.launch.cluster_id, self.address,
                    " (TLS)" if self.certificate else "")
        return self.address

    def stop(self) -> None:
        self._stopped.set()
        self._server.stop(1.0)

    # ----- the state service -----------------------------------------------------------------------------
    def State(self, request, context):
        with self.changed:
            return state_of(self.reservation)

    def Stop(self, request, context):
        with self.changed:
            self.reservation.request_stop()
            self.changed.notify_all()
            return state_of(self.reservation)

    def Abort(self, request, context):
        with self.changed:
            if not self.reservation.finished():
                self.reservation.abort(NodeFailure(-1, request.get("who") or "client", time=time.time(),
                                                   message=request.get("reason") or "stopped by the client"))
            self.changed.notify_all()
            return state_of(self.reservation)

    def Close(self, request, context):
        self.closed.set()
        with self.changed:
            self.changed.notify_all()
            return state_of(self.reservation)

    # ----- the driver's watch duties ---------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stopped.wait(self.spec.launch.heartbeat_interval):
            with self.changed:
                self.watch.check()
                self.changed.notify_all()

    def ended(self) -> bool:
        with self.changed:
            return self.watch.ended()

    def wait_ended(self, timeout: float | None = None) -> bool:
        """Waits until :meth:`ended` (or the host was closed); False after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.changed:
            while not (self.watch.ended() or self.closed.is_set()):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.changed.wait(1.0 if left is None else min(1.0, left))
        return True

    def state(self) -> dict:
        with self.changed:
            return state_of(self.reservation)


def node0_peer(address: str) -> Peer:
    """How errors of calls to node 0's control host name it."""
    return Peer(failed=f"node 0's control server at {address} did not answer {{method}}",
                unreachable="Under Spark Connect node 0 hosts the TF cluster's control server; it is gone when node "
                            "0's executor was lost or the cluster ended more than a minute ago.")


class StateClient:
    """Calls node 0's ``tfos.ConnectState`` service from a Spark task.

    Args:
        address: node 0's control address.
        secret: the cluster's secret.
        unavailable_timeout: how long to retry while node 0 cannot be reached.
        root_cert: node 0's TLS certificate (PEM) when it serves TLS; empty: plaintext.
    """

    def __init__(self, address: str, secret: str, unavailable_timeout: float = 30.0, root_cert: bytes = b"") -> None:
        self.address = address
        self.unavailable_timeout = unavailable_timeout
        self._channel = Channel(address, secret, node0_peer(address), unavailable_timeout, root_cert)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "StateClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, name: str, request: dict | None = None) -> dict:
        """Calls ``name`` (``State``, ``Stop``, ``Abort``, ``Close``); returns the cluster state.

        Raises:
            ControlPlaneError: node 0 did not answer (see :mod:`tfos._control.rpc`); an
                :class:`~tfos.errors.AuthenticationError` when it refused the secret.
        """
        return self._channel.call(STATE_SERVICE, name, request or {}, timeout=10.0)


def launch_detached_host(spec: ConnectSpec, host: str, watch_pid: int | None, timeout: float = 60.0
                         ) -> tuple[str, bytes]:
    """Starts ``python -m tfos._connect.control`` in its own session; returns its address and TLS certificate."""
    import select
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "tfos._connect.control"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None  # both are pipes
    proc.stdin.write(pickle.dumps((spec, host, watch_pid)))
    proc.stdin.close()
    if not select.select([proc.stdout], [], [], timeout)[0]:
        proc.kill()
        raise TimeoutError(f"node 0's detached control server did not start within {timeout:.0f}s")
    line = proc.stdout.readline().decode()
    proc.stdout.close()
    word, _, rest = line.strip().partition(" ")
    if word != "READY":
        code = proc.wait(timeout=10)
        raise RuntimeError(f"node 0's detached control server exited with code {code} before it served; see this "
                           "executor's stderr")
    ready = json.loads(rest)
    return ready["address"], ready["cert"].encode()


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return True
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def serve_detached(spec: ConnectSpec, host: str, watch_pid: int | None, out) -> None:
    """Runs a :class:`ControlHost` until it is closed, its cluster ended a while ago, or the executor is gone."""
    control = ControlHost(spec, host)
    out.write("READY " + json.dumps({"address": control.start(), "cert": control.certificate.decode()}) + "\n")
    out.close()
    ended_at = None
    try:
        while not control.closed.wait(1.0):
            if not _pid_alive(watch_pid):
                logger.warning("executor JVM (pid %s) is gone: stopping the control server", watch_pid)
                with control.changed:
                    control.reservation.abort(NodeFailure(0, "control server", time=time.time(),
                                                          message="node 0's Spark executor exited"))
                time.sleep(3 * spec.launch.heartbeat_interval)  # let the nodes hear the abort
                return
            if ended_at is None and control.ended():
                ended_at = time.monotonic()
            if ended_at is not None and time.monotonic() - ended_at > CLOSE_LINGER_SECS:
                logger.info("cluster %s ended; nobody asked for its state: control server exits",
                            spec.launch.cluster_id)
                return
    finally:
        control.stop()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s tfos control server %(levelname)s %(name)s: %(message)s")
    spec, host, watch_pid = pickle.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    serve_detached(spec, host, watch_pid, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
