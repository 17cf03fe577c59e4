"""Fixtures shared by all tfos tests.

At import time this points PySpark's driver and executors at this interpreter (the venv's) and binds Spark to
loopback, before any test creates a SparkContext. It also tags the run with ``TFOS_TEST_RUN_ID``: every process
started from here (Spark daemons, executors, TF processes) inherits it, which is how ``no_leftover_processes``
tells this run's TF processes from those of other test runs on the same machine.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import psutil
import pytest

os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ["TFOS_TEST_RUN_ID"] = uuid.uuid4().hex

_TF_CHILD = "tfos._node."  # the TF process (child) and the detached supervisor (detached)
# Long-lived Spark machinery that session fixtures own and Spark itself starts lazily (driver JVM, standalone
# daemons, executors, PySpark's worker daemon and its forks); never reported as left over by a single test.
_SPARK_INFRA = ("pyspark-shell", "org.apache.spark.deploy.", "org.apache.spark.executor.", "pyspark.daemon",
                "pyspark.worker", "jspawnhelper")
_LEFTOVER_WAIT_SECS = 15.0


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def _is_live(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _ours(proc: psutil.Process) -> bool:
    """Whether ``proc`` was started by this test run (it carries our ``TFOS_TEST_RUN_ID``)."""
    try:
        return proc.environ().get("TFOS_TEST_RUN_ID") == os.environ["TFOS_TEST_RUN_ID"]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _watched_processes() -> dict[tuple[int, float], psutil.Process]:
    """This process's descendants plus this run's TF processes (even reparented ones), minus Spark machinery."""
    found = {}
    for proc in psutil.Process().children(recursive=True):
        cmd = _cmdline(proc)
        if _TF_CHILD in cmd or not any(marker in cmd for marker in _SPARK_INFRA):
            found[proc.pid] = proc
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or ())
        if _TF_CHILD in cmd and _ours(proc):
            found[proc.pid] = proc
    result = {}
    for proc in found.values():
        try:
            result[(proc.pid, proc.create_time())] = proc
        except psutil.NoSuchProcess:
            pass
    return result


@pytest.fixture
def no_leftover_processes():
    """Fails the test if it leaves processes behind.

    Compares this process's descendants and this run's ``tfos._node.child`` processes before and after the test.
    New ones get up to 15 s to exit; those still alive then are SIGKILLed and listed in the failure. Spark's
    own long-lived processes (driver JVM, standalone daemons, executors, PySpark workers) are not counted.
    """
    before = set(_watched_processes())
    yield
    deadline = time.monotonic() + _LEFTOVER_WAIT_SECS
    while True:
        new = {key: p for key, p in _watched_processes().items() if key not in before and _is_live(p)}
        if not new or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if new:
        listing = "\n".join(f"  pid {pid}: {_cmdline(p)[:300]}" for (pid, _), p in sorted(new.items()))
        for proc in new.values():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(new.values()), timeout=5)
        pytest.fail(f"{len(new)} process(es) still alive {_LEFTOVER_WAIT_SECS:.0f}s after the test (now killed):\n"
                    f"{listing}", pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS ``weed mini``) on loopback for the whole run; see tests/s3server.py.

    It does not touch ``os.environ``: use ``s3_env`` for a test whose own process talks to S3.
    """
    from s3server import S3Server

    server = S3Server(str(tmp_path_factory.mktemp("s3")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """``s3_server`` with its ``AWS_*`` variables set in this process for the test's duration."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server
