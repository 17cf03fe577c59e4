"""The client's side of a Spark Connect session: recognising it, its settings, and jobs run in the background.

Under Connect there is no SparkContext and no JVM on the client: settings come from ``spark.conf`` (the
server's Spark configuration), jobs are DataFrame actions tagged with ``spark.addTag`` so that they can be
interrupted with ``spark.interruptTag``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from .._driver.spark import BackgroundJob, is_connect  # noqa: F401 - is_connect: re-exported for the Connect side
from ..errors import ConfigError, PlacementError

logger = logging.getLogger(__name__)


def conf(spark, key: str, default: str | None = None) -> str | None:
    """A Spark setting as the Connect server sees it, or ``default``."""
    try:
        value = spark.conf.get(key, None)
    except Exception:  # noqa: BLE001 - a key the server refuses to show counts as unset
        value = None
    return default if value is None else value


def default_fs(spark) -> str:
    """``fs.defaultFS`` from ``spark.hadoop.fs.defaultFS`` (``file://`` when unset: no JVM to ask Hadoop)."""
    fs = conf(spark, "spark.hadoop.fs.defaultFS") or "file://"
    return "file://" if fs.startswith("file:") else fs.rstrip("/")


def all_conf(spark) -> dict[str, str]:
    """Every entry of the session's Spark conf that Connect lets the client see (``{}`` on older servers)."""
    try:
        return dict(spark.conf.getAll)
    except Exception:  # noqa: BLE001 - older servers: no bulk read
        return {}


def hadoop_settings(spark, prefix: str) -> dict[str, str]:
    """``spark.hadoop.<prefix>*`` settings (e.g. ``fs.s3a.``), keys without ``spark.hadoop.``.

    Only what is set in the Spark configuration is seen: a ``core-site.xml`` on the server is not read.
    """
    try:
        everything = spark.conf.getAll
    except Exception:  # noqa: BLE001 - older servers: no bulk read
        return {}
    full = "spark.hadoop." + prefix
    return {k.removeprefix("spark.hadoop."): v for k, v in everything.items() if k.startswith(full)}


def executor_summary(spark) -> str:
    """The placement settings Connect lets the client see, for error messages."""
    keys = ("spark.master", "spark.executor.instances", "spark.executor.cores", "spark.task.cpus",
            "spark.cores.max", "spark.dynamicAllocation.enabled")
    return ", ".join(f"{key}: {conf(spark, key, 'unset')}" for key in keys)


class _TagSession:
    """Lets :class:`tfos._driver.spark.BackgroundJob` tag and interrupt a Connect session's jobs."""

    def __init__(self, spark) -> None:
        self.spark = spark

    def addJobTag(self, tag: str) -> None:
        self.spark.addTag(tag)  # thread-local on the Connect client: the job thread's own operations

    def setJobDescription(self, description: str) -> None:
        pass  # Connect has no job descriptions; the tag names the job in Spark's UI

    def removeJobTag(self, tag: str) -> None:
        self.spark.removeTag(tag)

    def cancelJobsWithTag(self, tag: str) -> None:
        self.spark.interruptTag(tag)


def background_job(spark, action: Callable[[], list], tag: str, description: str,
                   on_done: Callable[[], None] | None = None) -> BackgroundJob:
    """A :class:`BackgroundJob` on a Connect session (tagged; ``cancel()`` interrupts it)."""
    return BackgroundJob(_TagSession(spark), action, tag, description, on_done=on_done or (lambda: None))


def _probe(batches):
    import pyarrow as pa

    for _ in batches:
        pass
    yield pa.RecordBatch.from_pydict({"ok": [1]}, schema=pa.schema([("ok", pa.int32())]))


def check_placement(spark, nodes: int, wait: float, parallel: bool = False) -> None:
    """Checks that Spark can run ``nodes`` tasks at once, by running an empty barrier stage of that size.

    Connect cannot ask the scheduler for free task slots, and Spark retries a barrier stage that does not fit
    for minutes without saying why; this probe says it after ``wait`` seconds.

    ``parallel``: the tasks are TFParallel instances (``use_barrier=True``), not TF cluster nodes.

    Raises:
        PlacementError: dynamic allocation is on, or the probe did not run within ``wait`` seconds.
    """
    needs = (f"TFParallel with use_barrier=True needs its {nodes} instances running at once" if parallel else
             "a TF cluster needs all of its nodes at once and for its whole life")
    also = " Or pass use_barrier=False to run the instances in turn as task slots free up." if parallel else ""
    if (conf(spark, "spark.dynamicAllocation.enabled", "false") or "false").lower() == "true":
        raise PlacementError(
            f"Spark dynamic allocation is on, but {needs} (barrier execution). Start the Spark Connect server "
            f"with spark.dynamicAllocation.enabled=false and request the executors up front (--num-executors "
            f"{nodes}).{also}"
        )
    import secrets

    done = threading.Event()
    job = background_job(
        spark, lambda: spark.range(0, nodes, 1, nodes).mapInArrow(_probe, "ok int", barrier=True).collect(),
        f"tfos-probe-{secrets.token_hex(4)}", "tfos: task slot probe", on_done=done.set)
    job.start()
    if not done.wait(wait):
        job.cancel()
        job.join(30)
        raise PlacementError(
            f"Spark did not run {nodes} tasks at once within {wait:.0f}s (a barrier stage of {nodes} empty tasks; "
            f"{executor_summary(spark)}). {'TFParallel' if parallel else 'The TF cluster'} needs {nodes} task "
            "slots at the same time. Give the Connect server's application more executors "
            "(spark.executor.instances, spark.cores.max, more workers), make spark.task.cpus fit "
            "spark.executor.cores, or lower num_executors. Raise TFOS_SLOT_WAIT_TIMEOUT if executors are still "
            f"starting.{also}"
        )
    if job.error is not None:
        raise PlacementError(f"Spark could not run {nodes} barrier tasks at once ({executor_summary(spark)}): "
                             f"{job.error_text()}") from job.error


def require_dataframe(data: Any, what: str) -> None:
    """Under Connect only DataFrames exist: anything else gets an error that says what to pass."""
    if hasattr(data, "mapInArrow") and hasattr(data, "schema"):
        return
    raise ConfigError(
        f"TFCluster.{what}() got a {type(data).__name__}, but under Spark Connect there is no SparkContext and "
        "so no RDD API: pass a DataFrame instead (e.g. spark.createDataFrame(rows, schema), spark.read..., or "
        "tfos.dfutil.loadTFRecords)."
    )
