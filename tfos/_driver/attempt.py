"""One start of a TF cluster on the driver: its control server, its Spark node stage, its driver-side ps nodes.

A cluster that tfos restarts (``max_restarts``) goes through several attempts. Each attempt gets a fresh
:class:`~tfos._control.reservation.Reservation` and a fresh secret, hence its own control server: nodes of an
earlier attempt can never talk to a later one.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import sys
import threading

from . import spark as _spark
from .._control.reservation import Reservation
from .._control.server import ControlServer, advertised_host, print_lines
from .._control.tls import server_material
from .._control.watch import Watch
from .._node.spark_task import node_partition
from .._node.spec import LaunchSpec, NodePlace
from .._node.supervisor import run_node
from ..config import Settings

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Attempt:
    """What the driver holds for one start of the cluster.

    Attributes:
        number: 0 for the first start, then 1, 2, ... (``ctx.attempt``).
        spec: the launch spec the nodes of this attempt got (its own secret and control address).
        server: this attempt's control server.
        job: the Spark job running the node stage.
        driver_nodes: threads running ps nodes on the driver (``driver_ps_nodes=True``).
        watch: the checks the driver's monitor runs on this attempt's reservation.
    """

    number: int
    spec: LaunchSpec
    server: ControlServer
    job: _spark.BackgroundJob
    driver_nodes: list[threading.Thread]
    watch: Watch

    @property
    def reservation(self) -> Reservation:
        return self.server.reservation


def launch(sc, base: LaunchSpec, number: int, settings: Settings, host: str, spark_nodes: int,
           driver_ps: int) -> Attempt:
    """Starts attempt ``number``: a control server with a new secret, the node stage, the driver ps nodes.

    Args:
        sc: the SparkContext.
        base: the cluster's launch spec (its secret and control address are replaced).
        number: the attempt number.
        settings: the cluster's settings.
        host: the address the control server binds to (a wildcard: nodes get ``spark.driver.host``).
        spark_nodes: how many nodes run as Spark tasks (the last ones).
        driver_ps: how many ps nodes run on driver threads (the first ones).
    """
    reservation = Reservation(base.template, node_lost_timeout=settings.node_lost_timeout,
                              hang_timeout=settings.hang_timeout)
    secret = secrets.token_hex(32)
    shown = advertised_host(host, _spark.conf(sc, "spark.driver.host"))  # never 0.0.0.0
    server = ControlServer(reservation, secret, host, max_workers=max(16, 2 * (spark_nodes + driver_ps) + 4),
                           log_sink=print_lines if settings.forward_logs != "0" else None, advertise_host=shown,
                           tls=server_material(settings, shown))
    address = server.start()
    spec = dataclasses.replace(base, control_address=address, secret=secret, attempt=number,
                               control_cert=server.certificate)
    job = _spark.BackgroundJob(sc, _spark.node_stage(sc, spark_nodes, _spark.bind(node_partition, spec, driver_ps)),
                               f"tfos-{spec.cluster_id}-{number}", f"tfos: {spark_nodes} TF nodes (attempt {number})",
                               on_done=lambda: notify(server))
    driver_nodes = [
        threading.Thread(target=run_node, args=(spec, NodePlace(i, shown, "driver", 0, tuple(sys.path))),
                         name=f"tfos-driver-ps-{i}", daemon=True)
        for i in range(driver_ps)
    ]
    job.start()
    for thread in driver_nodes:
        thread.start()
    return Attempt(number, spec, server, job, driver_nodes, _watch(sc, reservation, number, settings))


def _watch(sc, reservation: Reservation, number: int, settings: Settings) -> Watch:
    """The monitor's checks of attempt ``number``. The first attempt's reservation is waited for by ``run()``
    (which raises ``ReservationTimeoutError``); a restarted one's by the watch."""
    timeout = settings.reservation_timeout

    def late(missing: list[int]) -> str:
        return (f"restart {number}: nodes {missing} did not register within {timeout:.0f}s "
                f"(reservation_timeout; {_spark.executor_summary(sc)})")

    return Watch(reservation, reservation_timeout=timeout if number else None, late_message=late,
                 stop_when_trained=False, stop_grace=settings.stop_grace_secs + 3 * settings.heartbeat_interval + 2)


def stop(attempt: Attempt, settings: Settings) -> None:
    """Waits for the attempt's nodes to stop (cancelling the node stage if they do not), then stops its server."""
    wait = settings.stop_grace_secs + 3 * settings.heartbeat_interval + 5
    if not attempt.job.join(wait):
        logger.warning("TF node tasks still running %.0fs after the cluster ended; cancelling them", wait)
        attempt.job.cancel()
        attempt.job.join(30)
    for thread in attempt.driver_nodes:
        thread.join(wait)


def notify(server: ControlServer) -> None:
    """Wakes everything waiting on the server's state."""
    with server.changed:
        server.changed.notify_all()
