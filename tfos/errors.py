"""Errors raised by tfos.

Every error tfos raises on purpose derives from :class:`TFOSError`::

    TFOSError
    ├── ConfigError              bad arguments or settings (also a ValueError)
    ├── PlacementError           the Spark cluster cannot host the requested TF nodes
    ├── ReservationTimeoutError  not every node registered in time (also a TimeoutError)
    ├── ClusterFailedError       a TF node failed; carries every node's failure, root cause first
    ├── ShutdownTimeoutError     the TF cluster did not finish in time (also a TimeoutError)
    ├── ControlPlaneError        the driver <-> executor control channel failed
    │   └── AuthenticationError  a request without the cluster's secret was refused
    ├── StorageError             a path on local disk, S3 or HDFS is missing, unreachable or refused (also an OSError)
    ├── FeedError                a Spark task could not feed its rows to the TF nodes (InputMode.SPARK)
    │   └── FeedStallError       the nodes stopped taking rows: the feed would wait forever
    ├── Keras3UnsupportedError   Keras 3 under multi-worker MWMS with a Keras release tfos's repair was not checked on
    └── DataError                records cannot be read or converted (corrupt TFRecord, bad schema, wrong shape)
        └── FeedDataError        a fed row does not match the expected shape or type

All errors survive pickling (they cross Spark's task boundary), which a unit test checks.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

__all__ = [
    "AuthenticationError",
    "ClusterFailedError",
    "ConfigError",
    "ControlPlaneError",
    "DataError",
    "FeedDataError",
    "FeedError",
    "FeedStallError",
    "Keras3UnsupportedError",
    "NodeFailure",
    "PlacementError",
    "ReservationTimeoutError",
    "ShutdownTimeoutError",
    "StorageError",
    "TFOSError",
]

# The longest traceback or log tail quoted in one error message; the rest stays in the executor logs.
_MAX_QUOTE = 4000


class TFOSError(Exception):
    """Base class of every error tfos raises."""


class ConfigError(TFOSError, ValueError):
    """An argument or setting is invalid."""


class PlacementError(TFOSError):
    """The Spark cluster cannot run all TF nodes at once (too few task slots, dynamic allocation, ...)."""


class ReservationTimeoutError(TFOSError, TimeoutError):
    """Some TF nodes did not register with the driver before ``reservation_timeout``."""


class ShutdownTimeoutError(TFOSError, TimeoutError):
    """The TF cluster did not finish before the ``timeout`` given to ``shutdown``."""

    @classmethod
    def expired(cls, limit: float, what_happened: str) -> ShutdownTimeoutError:
        """The error for a ``shutdown(timeout=limit)`` that expired; ``what_happened``: how the nodes were stopped
        (and what was still running)."""
        return cls(f"The TF cluster did not finish within timeout={limit:.0f}s; {what_happened} Raise "
                   "shutdown(timeout=...) if training needs longer; if it should have ended, main_fun is probably "
                   "stuck (e.g. unequal steps per worker under MultiWorkerMirroredStrategy).")


class ControlPlaneError(TFOSError):
    """The control channel between the driver and the TF nodes failed."""


class StorageError(TFOSError, OSError):
    """A path is missing, or its storage (local disk, S3, HDFS) cannot be reached or refused the request."""


class DataError(TFOSError, ValueError):
    """Records cannot be read or converted: a corrupt or truncated TFRecord, an unsupported schema, a bad shape."""


class FeedError(TFOSError):
    """A Spark task could not deliver its rows to the TF nodes (InputMode.SPARK)."""


class FeedStallError(FeedError):
    """The TF nodes stopped taking the rows ``TFCluster.train`` feeds them (see ``feed_stall_timeout``)."""


class Keras3UnsupportedError(TFOSError):
    """Keras 3 under a multi-worker MultiWorkerMirroredStrategy, with a Keras release tfos has not checked."""


class FeedDataError(DataError):
    """A fed row does not match the expected shape or type."""


class AuthenticationError(ControlPlaneError):
    """A control-plane or feed request did not carry the cluster's secret."""


@dataclasses.dataclass(frozen=True)
class NodeFailure:
    """What is known about one TF node's failure.

    Attributes:
        worker_num: the node's index in the TF cluster (TensorFlowOnSpark's ``executor_id``).
        role: ``"chief:0"``, ``"worker:1"``, ...; empty when the node failed before it had one.
        host: the host the node ran on.
        executor_id: the Spark executor id, when known.
        time: when the failure was observed (seconds since the epoch).
        exit_code: the TF process's exit code, if it exited.
        signal: the signal that killed it, if any.
        message: one line saying what happened.
        traceback: the remote traceback, when the user code raised.
        log_tail: the last lines the TF process printed.
        secondary: True when this node only stopped because another one failed first.
    """

    worker_num: int
    role: str = ""
    host: str = ""
    executor_id: str = ""
    time: float = 0.0
    exit_code: int | None = None
    signal: int | None = None
    message: str = ""
    traceback: str = ""
    log_tail: str = ""
    secondary: bool = False

    def describe_exit(self) -> str:
        """Returns "exit code 1" or "signal 9 (SIGKILL)" or ""."""
        if self.signal:
            import signal as _signal

            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = "unknown"
            return f"signal {self.signal} ({name})"
        if self.exit_code is not None:
            return f"exit code {self.exit_code}"
        return ""

    def where(self) -> str:
        if self.worker_num < 0:  # seen by the driver, not by a node: "driver", "spark job"
            return self.role or "driver"
        parts = [f"node {self.worker_num}"]
        if self.role:
            parts.append(self.role)
        if self.host:
            parts.append(f"host {self.host}")
        if self.executor_id:
            parts.append(f"executor {self.executor_id}")
        return ", ".join(parts)


def _quote(text: str, limit: int = _MAX_QUOTE) -> str:
    text = text.rstrip()
    if len(text) <= limit:
        return text
    return "... (cut; the full text is in the executor's log)\n" + text[-limit:]


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def format_failures(failures: Sequence[NodeFailure]) -> str:
    """Formats failures as one report: the root cause in full, the rest folded.

    The root cause is the earliest failure that is not secondary (a node stopped because another
    failed); identical messages of the other nodes are folded into one line.
    """
    if not failures:
        return "no failure recorded"
    primary = [f for f in failures if not f.secondary] or list(failures)
    root = min(primary, key=lambda f: f.time)
    import datetime as _dt

    stamp = _dt.datetime.fromtimestamp(root.time).isoformat(sep=" ", timespec="seconds") if root.time else "?"
    lines = [f"Root cause (first observed failure): {root.where()}"]
    lines.append(f"  time: {stamp}")
    if root.describe_exit():
        lines.append(f"  exit: {root.describe_exit()}")
    if root.message:
        lines.append(f"  error: {root.message}")
    if root.traceback:
        lines.append("  traceback:\n" + _indent(_quote(root.traceback)))
    elif root.log_tail:
        lines.append("  last output:\n" + _indent(_quote(root.log_tail)))
    others = [f for f in failures if f is not root]
    if others:
        folded: dict[str, list[int]] = {}
        for f in others:
            key = f.message or f.describe_exit() or "failed"
            folded.setdefault(key, []).append(f.worker_num)
        lines.append("Other nodes:")
        for msg, nums in folded.items():
            label = "node" if len(nums) == 1 else "nodes"
            lines.append(f"  [{label} {', '.join(map(str, sorted(nums)))}]: {_quote(msg, 1000)}")
    return "\n".join(lines)


class ClusterFailedError(TFOSError):
    """One or more TF nodes failed.

    Attributes:
        failures: every node failure, in the order observed.
        root_cause: the first failure that is not a consequence of another.
    """

    def __init__(self, failures: Sequence[NodeFailure], context: str = "") -> None:
        self.failures = tuple(failures)
        self.context = context
        head = f"{context}\n" if context else ""
        super().__init__(head + format_failures(self.failures))

    @property
    def root_cause(self) -> NodeFailure | None:
        primary = [f for f in self.failures if not f.secondary] or list(self.failures)
        return min(primary, key=lambda f: f.time) if primary else None

    def __reduce__(self):
        return (type(self), (self.failures, self.context))
