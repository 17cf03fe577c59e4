"""How a TF cluster is ended, whoever ends it: the same steps in the same order on both backends.

On a classic session the driver ends the cluster itself, on its own reservation (``TFCluster.shutdown``).
Under Spark Connect the client may not reach node 0, so a one-task Spark job does it, through node 0's state
service (``tfos._connect.stage``). Both go through :func:`finish` over a :class:`ClusterState`; the state is
:func:`state_of`'s plain data on both.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Protocol

from .reservation import Reservation


def state_of(reservation: Reservation) -> dict:
    """The cluster's state as plain JSON data (call under the control lock)."""
    return {
        "phase": reservation.phase.value,
        "failures": [dataclasses.asdict(f) for f in reservation.failures],
        "nodes": reservation.node_table(),
        "missing": reservation.missing(),
        "training_done": reservation.training_done(),
        "all_exited": reservation.all_exited(),
        "abort_reason": reservation.abort_reason,
        "progress": reservation.progress_table(),
    }


class ClusterState(Protocol):
    """A running cluster as the party ending it sees it."""

    def wait(self, done: Callable[[dict], bool], timeout: float | None) -> tuple[dict, bool]:
        """Waits until ``done(state)`` (``None``: no limit); returns the last state and whether time ran out."""

    def stop(self) -> None:
        """Asks every node to stop: the service nodes (ps, evaluator) too."""

    def abort(self, reason: str) -> None:
        """Fails the cluster with ``reason``: every node is stopped."""


def training_over(state: dict) -> bool:
    """The training nodes are all done, or the cluster ended (failed or done)."""
    return state["training_done"] or state["phase"] in ("failed", "done")


def nodes_gone(state: dict) -> bool:
    return state["all_exited"] or state["phase"] == "done"


def finish(cluster: ClusterState, limit: float | None, grace_secs: float, stop_wait: float) -> tuple[dict, str]:
    """Ends the cluster once its training is over (the caller has ended the Spark feed, if any).

    Waits up to ``limit`` seconds for the training nodes to finish. Then, unless the cluster failed, waits
    ``grace_secs``, asks every node to stop and waits up to ``stop_wait`` seconds for them to exit. When
    ``limit`` expires first, the cluster is aborted instead (its nodes are stopped) and the call returns at once.

    Returns:
        The last state seen, and how it ended: ``"timeout"`` (``limit`` expired), ``"failed"`` (the cluster
        failed before its training was done) or ``"stopped"`` (the nodes were asked to stop; the state says
        whether one failed meanwhile).
    """
    state, timed_out = cluster.wait(training_over, limit)
    if timed_out:
        assert limit is not None  # only a limit ends the wait unfinished
        cluster.abort(f"shutdown timeout of {limit:.0f}s expired")
        return state, "timeout"
    how = "failed" if state["phase"] == "failed" else "stopped"
    if how == "stopped":
        if grace_secs:
            time.sleep(grace_secs)
        cluster.stop()
    state, _ = cluster.wait(nodes_gone, stop_wait)
    return state, how
