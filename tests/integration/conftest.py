"""Fixtures for integration tests: a real Spark standalone cluster and Spark sessions.

Every test in this directory is marked ``integration``.

One process can hold only one SparkContext, so all Spark sessions here go through one keeper,
:class:`SparkSessions` (fixture ``spark_sessions``): it keeps the current session for the whole pytest run and
stops it before it creates a session on another master. ``spark_standalone`` and ``spark_local_cluster`` hand
out the kept session, so a run of tests on one master starts Spark once; a test that asks for the other one
restarts Spark (acceptable, it costs some seconds). Because of that switching they are function-scoped: a
session-scoped fixture would hand a later test a session that an earlier switch had already stopped. Never keep
a session from one of them in a module- or session-scoped fixture; call ``spark_sessions.get(...)`` instead.
"""

from __future__ import annotations

import pathlib
import subprocess
from typing import Mapping

import pytest

from tfos.standalone import StandaloneCluster

_HERE = pathlib.Path(__file__).parent.resolve()

LOCAL_CLUSTER_MASTER = "local-cluster[2,1,1024]"
LOCAL_CLUSTER3_MASTER = "local-cluster[3,1,1024]"
# C1-only JIT and the serial GC: much less CPU for JVM start-up on a small, shared test machine.
_LIGHT_JVM = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
DRIVER_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.driver.extraJavaOptions": _LIGHT_JVM,
    "spark.executor.extraJavaOptions": _LIGHT_JVM,
}
STANDALONE_CONF = {
    "spark.executor.memory": "1g",
    "spark.task.cpus": "1",
    "spark.executor.cores": "1",
    "spark.cores.max": "2",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in pathlib.Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


class SparkSessions:
    """Keeps at most one SparkSession alive in this process and switches masters on demand."""

    def __init__(self) -> None:
        self.master: str | None = None
        self.session = None
        self.extra_keys: set[str] = set()

    def get(self, master: str, conf: Mapping[str, str] | None = None):
        """Returns a live SparkSession on ``master``, reusing the kept one if it is on that master.

        Args:
            master: Spark master URL.
            conf: Spark settings on top of :data:`DRIVER_CONF`; only used when a new session is created.
        """
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        if self.session is not None and self.master == master \
                and SparkContext._active_spark_context is self.session.sparkContext:
            return self.session
        self.stop()
        builder = SparkSession.builder.master(master).appName("tfos-tests")
        for key, value in {**DRIVER_CONF, **(conf or {})}.items():
            builder = builder.config(key, value)
        self.session, self.master = builder.getOrCreate(), master
        self.extra_keys = set(conf or {})
        return self.session

    def stop(self) -> None:
        """Stops the kept session and any other active SparkSession/SparkContext in this process."""
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        for session in (self.session, active):
            if session is not None:
                session.stop()
        if SparkContext._active_spark_context is not None:
            SparkContext._active_spark_context.stop()
        # A session that launched the driver's JVM left its settings there as system properties, which every
        # later SparkConf loads: clear this session's own settings so they do not reach the next session.
        if SparkContext._jvm is not None:
            for key in self.extra_keys:
                SparkContext._jvm.System.clearProperty(key)
        self.extra_keys = set()
        self.session = self.master = None

    def shutdown(self) -> None:
        """:meth:`stop`, then ends the driver's JVM too, so that no java process outlives the test run."""
        from pyspark import SparkContext

        self.stop()
        gateway = SparkContext._gateway
        if gateway is None:
            return
        SparkContext._gateway = SparkContext._jvm = None
        gateway.shutdown()
        proc = getattr(gateway, "proc", None)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


_SESSIONS = SparkSessions()


@pytest.fixture(scope="session")
def spark_sessions():
    """The process-wide :class:`SparkSessions` keeper; at the end of the run it stops Spark and the driver JVM."""
    try:
        yield _SESSIONS
    finally:
        _SESSIONS.shutdown()


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """A Spark standalone cluster (2 workers x 1 core x 1500m) on loopback, shared by the whole run."""
    cluster = StandaloneCluster(workers=2, cores_per_worker=1, memory_per_worker="1500m",
                                work_dir=str(tmp_path_factory.mktemp("standalone")))
    try:
        cluster.start()
        yield cluster
    finally:
        if _SESSIONS.master == cluster.master_url:  # Stop the app before its master goes away.
            _SESSIONS.stop()
        cluster.stop()


@pytest.fixture
def spark_standalone(spark_sessions, standalone_cluster):
    """A SparkSession on ``standalone_cluster`` (2 executors x 1 core x 1g); see the module docstring."""
    return spark_sessions.get(standalone_cluster.master_url, STANDALONE_CONF)


@pytest.fixture
def spark_local_cluster(spark_sessions):
    """A SparkSession on ``local-cluster[2,1,1024]`` (2 executor processes); see the module docstring."""
    return spark_sessions.get(LOCAL_CLUSTER_MASTER)


@pytest.fixture
def spark_local_cluster3(spark_sessions):
    """A SparkSession on ``local-cluster[3,1,1024]`` (3 executors, one task slot each); see the module docstring."""
    return spark_sessions.get(LOCAL_CLUSTER3_MASTER)
