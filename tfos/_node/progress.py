"""Training progress as a node learns it from its TF process.

- :func:`parse_segment` reads Keras' progress output (``Epoch 3/10``, ``12/100 [====>....]``) so that an
  unmodified ``model.fit(verbose=1)`` reports epochs and steps with no code change (:class:`OutputProgress`).
- :class:`ProgressFile` is what ``ctx.report_progress(step=..., epoch=...)`` writes in the TF process; the node's
  supervisor reads it at each heartbeat (:func:`read_progress_file`). Writing happens on a background thread at
  most every ``interval`` seconds, so calling it every step costs a dict update.

The driver's display of it is :mod:`tfos._driver.progress`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from typing import Mapping

logger = logging.getLogger(__name__)

_EPOCH = re.compile(r"^\s*Epoch (\d+)/(\d+)\s*$")
_STEP = re.compile(r"^\s*(\d+)/(\d+|Unknown)\s+\[")
_STEP_UNKNOWN = re.compile(r"^\s*(\d+)/Unknown\b")
# Output control characters Keras' dynamic progress bar uses to redraw a line in place.
_REDRAW = re.compile(r"[\b]+")


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
