"""Start and stop a throwaway Spark standalone cluster on one machine.

pip's ``pyspark`` ships no ``sbin/start-master.sh``, so this module launches the master and worker daemons
directly with ``$SPARK_HOME/bin/spark-class``, where ``SPARK_HOME`` is the installed ``pyspark`` package. It is
meant for tests, examples and benchmarks that need a real ``spark://`` master rather than ``local[*]``::

    with StandaloneCluster(workers=2, cores_per_worker=1) as cluster:
        spark = SparkSession.builder.master(cluster.master_url).getOrCreate()

The same as a command line; ``{MASTER}`` in the command and ``$SPARK_MASTER_URL`` hold the master URL::

    python -m tfos.standalone run --workers 2 -- spark-submit --master {MASTER} job.py
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Mapping, Sequence

import psutil

logger = logging.getLogger(__name__)

__all__ = ["StandaloneCluster", "main"]

_LOG_TAIL_LINES = 30
# Master and workers do little work: C1-only JIT and the serial GC halve their start-up CPU time.
_DAEMON_JAVA_OPTS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"


def _free_port(host: str) -> int:
    """Returns a TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _tail(path: str, lines: int = _LOG_TAIL_LINES) -> str:
    """Returns the last ``lines`` lines of a text file, or a note when it cannot be read."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})\n"


def _kill_trees(pids: Sequence[int], grace: float = 5.0, groups: bool = False) -> None:
    """SIGTERMs processes and all their descendants at once; SIGKILLs what is left after ``grace`` seconds.

    Args:
        pids: roots of the process trees.
        grace: seconds between SIGTERM and SIGKILL.
        groups: each pid leads its own process group (``start_new_session``); SIGKILL those groups at the end.
    """
    procs: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
    for method in ("terminate", "kill"):
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                getattr(proc, method)()
        _, procs = psutil.wait_procs(procs, timeout=grace)
        if not procs:
            break
    for pid in pids if groups else ():  # Anything that left a tree but stayed in the daemon's group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


class StandaloneCluster:
    """A Spark standalone master plus ``workers`` workers on ``host``, as child process trees of this process.

    Args:
        workers: number of worker daemons.
        cores_per_worker: cores each worker offers (``--cores``).
        memory_per_worker: memory each worker offers (``--memory``), e.g. ``"2g"`` or ``"1500m"``.
        host: address every daemon binds to; loopback by default.
        work_dir: directory for logs (``<work_dir>/logs``) and the workers' work dirs (executor logs). When
            None, :meth:`start` makes a temporary directory and :meth:`stop` removes it.
        python: interpreter the executors run (``PYSPARK_PYTHON``); this interpreter by default.
        startup_timeout: seconds :meth:`start` waits for all workers to register with the master.
        env: extra environment variables for the daemons. ``SPARK_DAEMON_JAVA_OPTS`` defaults to options that
            make the master and worker JVMs start with less CPU; executors are not affected.
    """

    def __init__(self, workers: int = 2, cores_per_worker: int = 1, memory_per_worker: str = "2g",
                 host: str = "127.0.0.1", work_dir: str | None = None, python: str = sys.executable,
                 startup_timeout: float = 60, env: Mapping[str, str] | None = None) -> None:
        if workers < 1 or cores_per_worker < 1:
            raise ValueError(f"workers and cores_per_worker must be >= 1, got {workers} and {cores_per_worker}")
        self.workers, self.cores_per_worker, self.memory_per_worker = workers, cores_per_worker, memory_per_worker
        self.host, self.python, self.startup_timeout = host, python, startup_timeout
        self.extra_env = dict(env or {})
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir  # A temporary directory is made by start() when None.
        self.log_dir = os.path.join(work_dir, "logs") if work_dir else ""
        self.master_url = self.webui_url = ""
        self._procs: list[subprocess.Popen] = []
        self._logs: list[str] = []

    @property
    def pids(self) -> list[int]:
        """Process ids of the running daemons (master first); their descendants are not listed."""
        return [p.pid for p in self._procs if p.poll() is None]

    def __enter__(self) -> "StandaloneCluster":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _spawn(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        spark_class = os.path.join(env["SPARK_HOME"], "bin", "spark-class")
        log_path = os.path.join(self.log_dir, f"{name}.log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [spark_class, *args], env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._procs.append(proc)
        self._logs.append(log_path)
        logger.debug("started %s (pid %d), log %s", name, proc.pid, log_path)

    def _alive_workers(self) -> int:
        with urllib.request.urlopen(self.webui_url + "/json/", timeout=2) as resp:
            state = json.load(resp)
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def start(self) -> "StandaloneCluster":
        """Launches the daemons and waits until every worker is ALIVE at the master.

        Raises:
            RuntimeError: a daemon exited or the workers did not register within ``startup_timeout``; the
                message holds the tails of the daemon logs. Everything started is stopped first.
        """
        if self._procs:
            raise RuntimeError("StandaloneCluster already started")
        import pyspark  # Late: only the daemons need it, not importing this module.

        if self._own_work_dir and not (self.work_dir and os.path.isdir(self.work_dir)):
            self.work_dir = tempfile.mkdtemp(prefix="tfos-standalone-")
            self.log_dir = os.path.join(self.work_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(SPARK_HOME=os.path.dirname(pyspark.__file__), PYSPARK_PYTHON=self.python, SPARK_LOCAL_IP=self.host)
        env.setdefault("SPARK_DAEMON_JAVA_OPTS", _DAEMON_JAVA_OPTS)
        port, webui = _free_port(self.host), _free_port(self.host)
        self.master_url = f"spark://{self.host}:{port}"
        self.webui_url = f"http://{self.host}:{webui}"
        atexit.register(self.stop)
        try:
            self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", self.host, "--port", str(port),
                                   "--webui-port", str(webui)], env)
            for i in range(self.workers):
                wdir = os.path.join(str(self.work_dir), f"worker-{i}")
                os.makedirs(wdir, exist_ok=True)
                self._spawn(f"worker-{i}", [
                    "org.apache.spark.deploy.worker.Worker", "--host", self.host, "--cores", str(self.cores_per_worker),
                    "--memory", self.memory_per_worker, "--webui-port", str(_free_port(self.host)),
                    "--work-dir", wdir, self.master_url], env)
            self._wait_ready()
        except BaseException:
            self.stop(remove_work_dir=False)
            raise
        logger.info("Spark standalone cluster up at %s (%d workers x %d cores, logs in %s)",
                    self.master_url, self.workers, self.cores_per_worker, self.log_dir)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        alive, last_error = 0, "no answer yet"
        while time.monotonic() < deadline:
            dead = [(log, p.returncode) for log, p in zip(self._logs, self._procs) if p.poll() is not None]
            if dead:
                self._fail(f"a daemon exited early ({os.path.basename(dead[0][0])}, exit code {dead[0][1]})")
            try:
                alive = self._alive_workers()
                if alive >= self.workers:
                    return
            except (OSError, ValueError) as e:
                last_error = str(e)
            time.sleep(0.5)
        self._fail(f"only {alive}/{self.workers} workers ALIVE after {self.startup_timeout}s "
                   f"(last master UI error: {last_error})")

    def _fail(self, reason: str) -> None:
        tails = "".join(f"\n--- {path} (last {_LOG_TAIL_LINES} lines) ---\n{_tail(path)}" for path in self._logs)
        self.stop(remove_work_dir=False)
        raise RuntimeError(
            f"Spark standalone cluster at {self.master_url} failed to start: {reason}. Check that `java` "
            f"(17+) is on PATH or JAVA_HOME is set, that {self.host} is a local address, that there is memory for "
            f"{self.workers} x {self.memory_per_worker}, and the logs in {self.log_dir}.{tails}")

    def stop(self, remove_work_dir: bool = True) -> None:
        """Kills every daemon with all its descendants (SIGTERM, then SIGKILL). Safe to call more than once.

        Args:
            remove_work_dir: delete the work dir if this object created it as a temporary directory.
        """
        atexit.unregister(self.stop)
        _kill_trees([p.pid for p in self._procs], groups=True)
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                logger.warning("Spark daemon pid %d did not exit", proc.pid)
        if self._procs:
            logger.info("Spark standalone cluster at %s stopped", self.master_url)
        self._procs = []
        if remove_work_dir and self._own_work_dir and self.work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def _run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SystemExit("tfos.standalone run: no command given after --")
    # Turn SIGTERM into an exception so the cluster is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with StandaloneCluster(workers=args.workers, cores_per_worker=args.cores, memory_per_worker=args.memory,
                           startup_timeout=args.timeout) as cluster:
        command = [part.replace("{MASTER}", cluster.master_url) for part in command]
        env = dict(os.environ, SPARK_MASTER_URL=cluster.master_url)
        logger.info("running: %s", " ".join(command))
        proc = subprocess.Popen(command, env=env)
        try:
            code = proc.wait()
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):  # Ctrl-C reached the command too (same process group).
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            _kill_trees([proc.pid])
            raise
    return code if code >= 0 else 128 - code


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: ``python -m tfos.standalone run [options] -- command ...``."""
    parser = argparse.ArgumentParser(prog="python -m tfos.standalone", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="start a cluster, run a command against it, stop the cluster")
    run.add_argument("--workers", type=int, default=2, help="number of workers (default 2)")
    run.add_argument("--cores", type=int, default=1, help="cores per worker (default 1)")
    run.add_argument("--memory", default="2g", help="memory per worker (default 2g)")
    run.add_argument("--timeout", type=float, default=60, help="seconds to wait for the workers (default 60)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="command; {MASTER} is replaced by the master URL")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except RuntimeError as e:
        logger.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
