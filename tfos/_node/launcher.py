"""The TF child process, as its parent sees it: spawn, payload, output, stop, error file, exit.

Both parents use it: a TFCluster node's supervisor (:mod:`tfos._node.supervisor`) and a TFParallel instance
(:mod:`tfos._node.instance`). The child is ``python -m tfos._node.child`` in its own session (so that it and
whatever it starts can be stopped as one process group), with the environment its parent built
(:mod:`tfos._node.environment` states the policy). It reads one pickled payload from its stdin; with ``preimport``
it starts before the payload is known and imports those modules meanwhile. Its output (stdout and stderr, merged)
goes through an :class:`OutputPump`; on an exception it writes the error file its parent named
(:data:`tfos._node.ERROR_FILE_ENV`), and ``ctx.report_progress`` writes the progress file beside it.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from typing import IO, Callable, Sequence

from .progress import OutputProgress, last_segment, read_progress_file

CHILD_MODULE = "tfos._node.child"
# Output lines waiting for the next heartbeat to the driver; older ones are dropped (and counted) beyond this.
FORWARD_BUFFER = 2000
# How long the pump may take to read the last output of a child that ended.
PUMP_JOIN_SECS = 5.0


class OutputPump(threading.Thread):
    """Copies the child's output lines to this process's stderr with a ``[worker:1]`` prefix; keeps a tail
    for failure reports and, when forwarding, the lines not yet sent to the driver.

    Output is read as it comes, not line by line, so that a progress bar redrawn in place (Keras writes
    ``\\r12/100 [===>...]`` without a newline until the epoch ends) still shows progress; a line is printed as
    a terminal would show it (after its last carriage return).

    Args:
        stream: the child's output pipe (binary).
        prefix: the label printed before each line (``worker:1``, ``instance:3``).
        keep: how many of the last lines to keep in :attr:`tail`.
        forward: keep the lines for :meth:`drain` (the driver's copy).
        sink: where lines are printed; this process's stderr by default.
        skip: lines not forwarded to the driver (they still reach ``sink`` and the tail).
    """

    def __init__(self, stream: IO[bytes], prefix: str, keep: int, forward: bool = False, sink: IO[str] | None = None,
                 skip: Callable[[str], bool] | None = None) -> None:
        super().__init__(name=f"tfos-output-{prefix}", daemon=True)
        self.stream = stream
        self.prefix = prefix
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self.forward = forward
        self.skip = skip
        self.unsent: collections.deque[str] = collections.deque(maxlen=FORWARD_BUFFER)
        self.dropped = 0
        self.sink = sink or sys.stderr
        self.progress = OutputProgress()

    def drain(self) -> dict:
        """The lines for the driver since the last call (``{}`` when there are none)."""
        lines = []
        while self.unsent:
            lines.append(self.unsent.popleft())
        dropped, self.dropped = self.dropped, 0
        return {"lines": lines, "dropped": dropped} if lines or dropped else {}

    def run(self) -> None:
        pending = b""
        read = getattr(self.stream, "read1", self.stream.read)
        while True:
            chunk = read(65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self._line(raw.decode(errors="replace"))
            if b"\r" in pending:  # a line redrawn in place: only its last version matters
                pending = pending[pending.rindex(b"\r"):]
            if pending:
                self.progress.saw(pending.decode(errors="replace"), complete=False)
        if pending:
            self._line(pending.decode(errors="replace"))
        self.stream.close()

    def _line(self, raw: str) -> None:
        self.progress.saw(raw, complete=True)
        line = last_segment(raw) if "\r" in raw or "\b" in raw else raw.rstrip("\n")
        self.tail.append(line)
        if self.forward and not (self.skip and self.skip(line)):
            if len(self.unsent) == FORWARD_BUFFER:
                self.dropped += 1
            self.unsent.append(line)
        try:
            self.sink.write(f"[{self.prefix}] {line}\n")
            self.sink.flush()
        except (OSError, ValueError):
            pass


def stop_process_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # grandchildren the user's code left behind in the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class TFChild:
    """One running TF process and the pump of its output; made by :func:`spawn`.

    Args:
        proc: the process, started in its own session with piped stdin and stdout.
        pump: the started pump of its output.
    """

    def __init__(self, proc: subprocess.Popen, pump: OutputPump) -> None:
        self.proc = proc
        self.pump = pump

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, negative for a signal (``-9``: SIGKILL); None while it runs."""
        return self.proc.returncode

    def running(self) -> bool:
        return self.proc.poll() is None

    def send(self, payload: dict) -> None:
        """Writes the pickled payload to the child's stdin and closes it; a child that already died is left to
        its exit status, which tells why."""
        stdin = self.proc.stdin
        assert stdin is not None  # spawn() pipes it
        try:
            stdin.write(pickle.dumps(payload))
            stdin.close()
        except BrokenPipeError:
            pass

    def wait(self, timeout: float | None) -> bool:
        """Waits up to ``timeout`` seconds (None: forever); True when the child has ended."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, grace: float) -> None:
        """Stops the child's process group (see :func:`stop_process_group`)."""
        stop_process_group(self.proc, grace)

    def finish(self, grace: float) -> None:
        """Stops the child if it still runs and waits for the pump to read its last output."""
        if self.running():
            self.stop(grace)
        self.pump.join(timeout=PUMP_JOIN_SECS)


def spawn(env: dict[str, str], label: str, tail_lines: int, *, forward: bool = False,
          skip: Callable[[str], bool] | None = None, pass_fds: Sequence[int] = (), preimport: Sequence[str] = (),
          cwd: str | None = None) -> TFChild:
    """Starts ``python -m tfos._node.child`` in its own session and pumps its output.

    Args:
        env: the child's whole environment.
        label: the prefix of its output lines (``worker:1``).
        tail_lines: how many of its last output lines to keep for a failure report.
        forward: keep its output lines for the driver (:meth:`OutputPump.drain`).
        skip: lines not forwarded (TensorFlow's start-up chatter, :mod:`tfos._node.chatter`).
        pass_fds: descriptors the child inherits (the TF port held for it, the feed socket).
        preimport: modules it imports while it waits for its payload (:mod:`tfos._node.preimport`).
        cwd: its working directory; this process's by default.

    Returns:
        The child, waiting for :meth:`TFChild.send`.
    """
    command = [sys.executable, "-m", CHILD_MODULE, "--parent", str(os.getpid())]
    if preimport:
        command += ["--preimport", ",".join(preimport)]
    proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, pass_fds=tuple(pass_fds), start_new_session=True,
                            cwd=cwd or os.getcwd())
    assert proc.stdout is not None  # a pipe (for mypy)
    pump = OutputPump(proc.stdout, label, tail_lines, forward=forward, skip=skip)
    pump.start()
    return TFChild(proc, pump)


def progress_file(error_file: str) -> str:
    """Where the TF process writes ``ctx.report_progress`` (beside its error file)."""
    return os.path.join(os.path.dirname(error_file), "progress.json")


def read_error_file(path: str) -> dict:
    """The child's error record (message, traceback, time, host, pid); ``{}`` if it wrote none."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def read_progress(error_file: str) -> dict:
    """What ``ctx.report_progress`` last wrote for the child whose error file is ``error_file``."""
    return read_progress_file(progress_file(error_file))


def describe_exit(code: int | None) -> str:
    """What an exit code says when the child wrote no error record (None: it never ended)."""
    if code is None:
        return "the TF process did not end, even after SIGKILL (stuck in the kernel: a hung device or mount?)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"the TF process was killed by signal {-code} ({name})"
    if code == 70:
        return "the TF process exited because its supervisor went away"
    return f"the TF process exited with code {code} without a Python traceback (a crash in native code?)"
