"""Training progress: what a node learns from its TF process, and how the driver shows it.

Three pieces, each small and pure where it can be:

- :func:`parse_segment` reads Keras' progress output (``Epoch 3/10``, ``12/100 [====>....]``) so that an
  unmodified ``model.fit(verbose=1)`` reports epochs and steps with no code change.
- :class:`ProgressFile` is what ``ctx.report_progress(step=..., epoch=...)`` writes in the TF process; the node's
  supervisor reads it at each heartbeat (:func:`read_progress_file`). Writing happens on a background thread at
  most every ``interval`` seconds, so calling it every step costs a dict update.
- :func:`format_table` and :class:`ProgressDisplay`: the driver's periodic per-node status lines
  (``TFOS_PROGRESS=auto|on|off|log``; ``auto`` prints them when stderr is a terminal and shows nothing
  otherwise, so piped or redirected output stays free of them; ``log`` sends them to INFO log records).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from typing import Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

_EPOCH = re.compile(r"^\s*Epoch (\d+)/(\d+)\s*$")
_STEP = re.compile(r"^\s*(\d+)/(\d+|Unknown)\s+\[")
_STEP_UNKNOWN = re.compile(r"^\s*(\d+)/Unknown\b")
# Output control characters Keras' dynamic progress bar uses to redraw a line in place.
_REDRAW = re.compile(r"[\b]+")

DISPLAY_MODES = ("auto", "on", "off", "log")


def last_segment(raw: str) -> str:
    """The text a terminal would show for ``raw``: what follows the last carriage return, backspaces removed."""
    return _REDRAW.sub("", raw.rstrip("\r").rsplit("\r", 1)[-1])


def parse_segment(text: str) -> dict:
    """Epoch or step fields from one line of Keras progress output, ``{}`` for any other line.

    ``Epoch 3/10`` gives ``{"epoch": 3, "epochs": 10}`` (1-based, as Keras prints it); ``12/100 [===>...]``
    gives ``{"step": 12, "steps": 100}``; ``12/Unknown`` gives ``{"step": 12}``.
    """
    match = _EPOCH.match(text)
    if match:
        return {"epoch": int(match.group(1)), "epochs": int(match.group(2))}
    match = _STEP.match(text) or _STEP_UNKNOWN.match(text)
    if match:
        total = match.group(2) if match.lastindex and match.lastindex >= 2 else "Unknown"
        return {"step": int(match.group(1)), **({"steps": int(total)} if total != "Unknown" else {})}
    return {}


class OutputProgress:
    """Progress a supervisor learns from its TF process's output: activity, the last line, Keras fields."""

    def __init__(self) -> None:
        self.fields: dict = {}
        self.activity = 0

    def saw(self, text: str, complete: bool) -> None:
        """Records one chunk of output (``complete``: a whole line; else a partial line being redrawn)."""
        self.activity += 1
        shown = last_segment(text).rstrip()
        if shown:
            self.fields.update(parse_segment(shown))
            if complete:
                self.fields["last_line"] = shown[-300:]

    def snapshot(self) -> dict:
        return {**self.fields, "activity": self.activity}


def read_progress_file(path: str | None) -> dict:
    """What ``ctx.report_progress`` last wrote (``{}`` if nothing yet or unreadable)."""
    if not path:
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class ProgressFile:
    """Collects ``report_progress`` calls in the TF process and writes the latest to ``path`` in the background.

    Args:
        path: the file the supervisor reads (``TFOS_PROGRESS_FILE``).
        interval: seconds between writes.
    """

    def __init__(self, path: str, interval: float = 0.5) -> None:
        self.path = path
        self.interval = interval
        self._latest: dict = {"reports": 0}
        self._written = -1
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def report(self, fields: Mapping) -> None:
        """Merges ``fields`` (JSON values) into the latest progress; never blocks on I/O."""
        bad = [key for key, value in fields.items() if not isinstance(value, (int, float, str, bool, type(None)))]
        if bad:
            raise TypeError(f"report_progress takes numbers, strings, booleans or None; got {bad} of other types")
        with self._lock:
            self._latest.update(fields)
            self._latest["reports"] += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="tfos-progress", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Writes the latest progress now, if it changed since the last write."""
        with self._write_lock:
            with self._lock:
                if self._latest["reports"] == self._written:
                    return
                data, self._written = dict(self._latest), self._latest["reports"]
            tmp = f"{self.path}.tmp"
            try:
                with open(tmp, "w") as f:
                    json.dump(data, f)
                os.replace(tmp, self.path)
            except OSError as exc:  # the supervisor's directory is gone: the node is stopping
                logger.debug("could not write progress to %s: %s", self.path, exc)

    def _loop(self) -> None:
        while True:
            self.flush()
            time.sleep(self.interval)


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
