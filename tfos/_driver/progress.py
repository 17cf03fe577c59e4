"""How the driver shows training progress: :func:`format_table` and :class:`ProgressDisplay`, its periodic
per-node status lines (``TFOS_PROGRESS=auto|on|off|log``; ``auto`` prints them when stderr is a terminal and shows
nothing otherwise, so piped or redirected output stays free of them; ``log`` sends them to INFO log records).

The nodes' side (what a node reads from its TF process) is :mod:`tfos._node.progress`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

DISPLAY_MODES = ("auto", "on", "off", "log")


def display_mode(setting: str, isatty: bool) -> str:
    """How the driver shows progress for the ``progress`` setting (``TFOS_PROGRESS``).

    Args:
        setting: ``"auto"``, ``"on"``, ``"off"`` or ``"log"``.
        isatty: whether the driver's stderr is a terminal.

    Returns:
        ``"tty"`` (status lines on stderr), ``"log"`` (INFO log records of the ``tfos`` logger) or ``"off"``.
        ``"auto"`` is ``"tty"`` on a terminal and ``"off"`` otherwise.
    """
    if setting == "on":
        return "tty"
    if setting == "log":
        return "log"
    if setting == "auto" and isatty:
        return "tty"
    return "off"


def format_row(row: Mapping) -> str:
    """One node's status: ``worker:1  epoch 3/10  step 12/100  (idle 4s)``."""
    parts = [f"{row.get('role', '?'):<10}"]
    if row.get("attempt"):
        parts.append(f"attempt {row['attempt']}")
    for key, total in (("epoch", "epochs"), ("step", "steps")):
        if row.get(key) is not None:
            parts.append(f"{key} {row[key]}" + (f"/{row[total]}" if row.get(total) else ""))
    extra = [f"{k}={v}" for k, v in row.items() if k not in _SHOWN and not isinstance(v, dict)]
    parts.extend(extra[:4])
    if row.get("exited"):
        parts.append("(done)")
    elif row.get("idle_secs", 0) >= 10:
        parts.append(f"(no progress for {row['idle_secs']:.0f}s)")
    return "  ".join(parts)


_SHOWN = frozenset({"role", "attempt", "epoch", "epochs", "step", "steps", "exited", "idle_secs", "worker_num",
                    "heartbeat_secs", "activity", "last_line", "reports"})


def format_table(rows: Sequence[Mapping], elapsed: float) -> list[str]:
    """The display's lines: a header with the elapsed time, then one line per node."""
    return [f"tfos progress after {elapsed:.0f}s:"] + ["  " + format_row(row) for row in rows]


class ProgressDisplay(threading.Thread):
    """Prints (or logs) the nodes' progress every ``interval`` seconds until :meth:`stop`.

    Args:
        rows: returns the current per-node progress (``TFCluster.progress``).
        mode: ``"tty"`` or ``"log"`` (see :func:`display_mode`).
        interval: seconds between updates.
        stream: where ``tty`` lines go (stderr by default).
    """

    def __init__(self, rows: Callable[[], list], mode: str, interval: float = 10.0, stream=None) -> None:
        super().__init__(name="tfos-progress-display", daemon=True)
        self.rows, self.mode, self.interval = rows, mode, interval
        self.stream = stream
        self._stop = threading.Event()
        self._start = time.monotonic()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.show()

    def show(self) -> None:
        try:
            lines = format_table(self.rows(), time.monotonic() - self._start)
        except Exception as exc:  # noqa: BLE001 - the display must never disturb training
            logger.debug("progress display: %s", exc)
            return
        if self.mode == "log":
            for line in lines:
                logger.info("%s", line)
            return
        try:
            stream = self.stream or sys.stderr
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        self._stop.set()
