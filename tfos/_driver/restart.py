"""When tfos restarts a failed TF cluster (``max_restarts``), as pure functions.

The rule: restart when the root cause (the first failure that is not a consequence of another) looks like a lost
or killed node, never when it is an exception raised by the user's code.

Restarted (``restartable``):

- a TF process killed by a signal (SIGKILL by the OOM killer or an operator, SIGTERM, SIGSEGV, ...);
- a node lost without an exit status: no heartbeats, its Spark executor gone, its supervisor gone (exit 70),
  the Spark stage failing, or a node hung (``hang_timeout``);
- TensorFlow's peer-communication errors (``UnavailableError``, ``AbortedError``, ``CancelledError``,
  ``DeadlineExceededError``), which a collective op raises when a peer died.

Not restarted: any other Python exception in ``main_fun`` (a bug or bad data fails the same way again, so a
restart only wastes time), a non-zero exit without a traceback (``sys.exit(3)``, ``os._exit``), and anything
the driver itself stopped (``shutdown(timeout=...)`` expiring, Ctrl-C). torchelastic restarts on every failure;
tfos is stricter because a TF cluster's start costs tens of seconds.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from ..errors import NodeFailure

# TensorFlow errors that mean "a peer went away", as they appear in a traceback's last line.
PEER_ERRORS = ("UnavailableError", "AbortedError", "CancelledError", "DeadlineExceededError")
SUPERVISOR_GONE_EXIT = 70  # the TF process exits with this when its supervisor (the Spark task) died


def root_cause(failures: Sequence[NodeFailure]) -> NodeFailure | None:
    """The earliest failure that is not secondary (as :class:`~tfos.errors.ClusterFailedError` reports it)."""
    primary = [f for f in failures if not f.secondary] or list(failures)
    return min(primary, key=lambda f: f.time) if primary else None


def _exception_name(failure: NodeFailure) -> str:
    last = failure.traceback.strip().splitlines()[-1] if failure.traceback.strip() else failure.message
    return last.split(":", 1)[0].rsplit(".", 1)[-1].strip()


def classify(failure: NodeFailure) -> tuple[bool, str]:
    """``(restartable, why)`` for one failure."""
    if failure.worker_num < 0 and failure.role != "spark job":
        return False, f"the driver stopped the cluster ({failure.message})"
    if failure.signal:
        return True, f"{failure.where()} was killed by {failure.describe_exit()}"
    if failure.exit_code == SUPERVISOR_GONE_EXIT and not failure.traceback:
        return True, f"{failure.where()} lost its supervisor (Spark task or executor gone)"
    if failure.traceback or (failure.exit_code is not None and failure.exit_code != 0):
        name = _exception_name(failure)
        if failure.traceback and name in PEER_ERRORS:
            return True, f"{failure.where()} lost a peer ({name})"
        what = f"{name} raised in main_fun" if failure.traceback else failure.describe_exit()
        return False, f"{failure.where()}: {what}; a restart would most likely fail the same way"
    return True, f"{failure.where()} was lost ({failure.message})"


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do after an attempt failed."""

    restart: bool
    reason: str


def decide(failures: Sequence[NodeFailure], attempt: int, max_restarts: int, spark_feed: bool = False) -> Decision:
    """Whether to restart the cluster after attempt ``attempt`` (0-based) failed with ``failures``.

    Args:
        failures: the failed attempt's failures, in the order observed.
        attempt: the attempt that failed (0 for the first start).
        max_restarts: how many restarts are allowed in total.
        spark_feed: the cluster takes its data from Spark (InputMode.SPARK), which tfos does not restart.
    """
    if max_restarts <= 0:
        return Decision(False, "max_restarts=0")
    if spark_feed:
        return Decision(False, "InputMode.SPARK clusters are not restarted")
    for failure in failures:
        if failure.worker_num < 0 and failure.role != "spark job":
            return Decision(False, classify(failure)[1])
    root = root_cause(failures)
    if root is None:
        return Decision(False, "no failure recorded")
    restartable, why = classify(root)
    if not restartable:
        return Decision(False, f"not restarted: {why}")
    if attempt >= max_restarts:
        return Decision(False, f"{why}; not restarted: all {max_restarts} restart(s) (max_restarts) are used up")
    return Decision(True, f"{why}; restart {attempt + 1} of {max_restarts}")


def default_backup_dir(log_dir: str | None, working_dir: str, cluster_id: str) -> str:
    """The directory ``ctx.backup_dir`` names, the same for every attempt of one cluster.

    ``<log_dir>/backup`` when the cluster has a ``log_dir``, else ``<working_dir>/tfos_backup/<cluster_id>``.
    """
    if log_dir:
        return log_dir.rstrip("/") + "/backup"
    return os.path.join(working_dir, "tfos_backup", cluster_id)
