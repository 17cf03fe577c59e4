"""Everything tfos asks of the driver's Spark: the context, task slots, settings, and the node job.

py4j errors are translated here, in one place. A Spark Connect session (no SparkContext) is recognised and
refused with a clear error: the APIs that take one dispatch to :mod:`tfos._connect` before they get here.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable

from ..errors import ConfigError, PlacementError

logger = logging.getLogger(__name__)


def spark_context(spark_or_sc: Any):
    """Returns the SparkContext of a SparkContext or a classic SparkSession."""
    from pyspark import SparkContext

    if isinstance(spark_or_sc, SparkContext):
        return spark_or_sc
    sc = getattr(spark_or_sc, "sparkContext", None) if not is_connect(spark_or_sc) else None
    if sc is None:
        if is_connect(spark_or_sc):
            raise ConfigError(
                "this call needs a SparkContext, which a Spark Connect session does not have. TFCluster.run, "
                "TFParallel.run and TFEstimator.fit take a Connect session; for the rest, use a classic "
                "SparkSession (spark-submit, or SparkSession.builder.master(...))."
            )
        raise ConfigError(f"expected a SparkContext or SparkSession, got {type(spark_or_sc).__name__}")
    return sc


def is_connect(obj: Any) -> bool:
    """Whether ``obj`` is a Spark Connect ``SparkSession`` (``SparkSession.builder.remote(...)``)."""
    return type(obj).__module__.startswith("pyspark.sql.connect")


def conf(sc, key: str, default: str | None = None) -> str | None:
    live = getattr(sc, "_conf", None)  # the context's own SparkConf: one JVM call; getConf() copies every entry
    return (live if live is not None else sc.getConf()).get(key, default)


def all_conf(sc) -> dict[str, str]:
    """Every entry of the Spark conf (one JVM call)."""
    return dict(sc.getConf().getAll())


def default_fs(sc) -> str:
    """Spark's ``fs.defaultFS``, without the trailing slash of ``file:///``."""
    fs = sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file://"
    if fs.startswith("file:"):
        return "file://"
    return fs.rstrip("/")


def hadoop_conf(sc, pattern: str) -> dict[str, str]:
    """The Hadoop configuration entries (core-site.xml plus ``spark.hadoop.*``) whose keys match ``pattern``."""
    found = sc._jsc.hadoopConfiguration().getValByRegex(pattern)
    if found.isEmpty():
        return {}
    # By index: iterating a py4j Java collection ends with a Java exception that pyspark converts (slow).
    keys = found.keySet().toArray()
    return {str(keys[i]): str(found.get(keys[i])) for i in range(len(keys))}


def task_slots(sc) -> int:
    """How many tasks of the default resource profile Spark can run at once right now."""
    jsc = sc._jsc.sc()
    profile = jsc.resourceProfileManager().defaultResourceProfile()
    return int(jsc.maxNumConcurrentTasks(profile))


def executor_summary(sc) -> str:
    """``executors: 2 (127.0.0.1 x2), cores per executor: 1, spark.task.cpus: 1, ...`` for error messages."""
    try:
        infos = sc._jsc.sc().statusTracker().getExecutorInfos()
        hosts = sorted(info.host() for info in infos)
        # The driver is listed too, except in local mode where it is the only "executor".
        count = max(len(hosts) - 1, 0) if not sc.master.startswith("local[") and sc.master != "local" else 1
    except Exception:  # noqa: BLE001 - only for messages
        count, hosts = -1, []
    return (
        f"executors: {count}, master: {sc.master}, spark.executor.cores: {conf(sc, 'spark.executor.cores', 'default')}, "
        f"spark.task.cpus: {conf(sc, 'spark.task.cpus', '1')}, "
        f"spark.cores.max: {conf(sc, 'spark.cores.max', 'unset')}, "
        f"dynamic allocation: {conf(sc, 'spark.dynamicAllocation.enabled', 'false')}"
    )


def check_placement(sc, nodes: int, wait: float, poll: float = 0.5, parallel: bool = False) -> int:
    """Waits up to ``wait`` seconds until Spark can run ``nodes`` tasks at once; returns the slot count.

    Spark itself would retry a barrier stage that does not fit for minutes without saying why; this says it.

    Args:
        sc: the SparkContext.
        nodes: tasks that must run at the same time.
        wait: seconds to wait for executors that are still starting.
        poll: seconds between two looks at the free task slots.
        parallel: the tasks are ``TFParallel`` instances (``use_barrier=True``), not the nodes of a TF cluster;
            only the wording of the errors differs.

    Raises:
        PlacementError: dynamic allocation is on, or too few task slots after ``wait`` seconds.
    """
    if (conf(sc, "spark.dynamicAllocation.enabled", "false") or "false").lower() == "true":
        raise PlacementError(_dynamic_allocation_message(nodes, parallel))
    deadline = time.monotonic() + wait
    while True:
        slots = task_slots(sc)
        if slots >= nodes or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    if slots < nodes:
        raise PlacementError(_too_few_slots_message(slots, nodes, wait, executor_summary(sc), parallel))
    return slots


def _dynamic_allocation_message(nodes: int, parallel: bool) -> str:
    if parallel:
        return (f"Spark dynamic allocation is on, but TFParallel with use_barrier=True needs its {nodes} instances "
                "running at once (barrier execution). Set spark.dynamicAllocation.enabled=false and request "
                f"executors for {nodes} task slots up front, or pass use_barrier=False to run the instances as "
                "task slots free up.")
    return ("Spark dynamic allocation is on, but a TF cluster needs all of its nodes at once and for its whole "
            "life (barrier execution). Set spark.dynamicAllocation.enabled=false and request the executors "
            f"up front (--num-executors {nodes}).")


def _too_few_slots_message(slots: int, nodes: int, wait: float, summary: str, parallel: bool) -> str:
    if parallel:
        return (f"Spark can run {slots} task(s) at once but TFParallel needs {nodes} instances running together "
                f"(use_barrier=True), waited {wait:.0f}s for more executors ({summary}). Give the application "
                "more task slots (spark.executor.instances, spark.cores.max, more workers; spark.task.cpus must "
                "fit spark.executor.cores), lower num_executors (the number of instances), or pass "
                "use_barrier=False to run the instances in turn as task slots free up. "
                "Raise TFOS_SLOT_WAIT_TIMEOUT if executors are still starting.")
    return (f"Spark can run {slots} task(s) at once but the TF cluster needs {nodes} nodes running together, "
            f"waited {wait:.0f}s for more executors ({summary}). Give the application more "
            f"executors (--num-executors / spark.executor.instances, spark.cores.max, more workers), make "
            f"spark.task.cpus fit spark.executor.cores, or lower num_executors. "
            "Raise TFOS_SLOT_WAIT_TIMEOUT if executors are still starting.")


class BackgroundJob:
    """Runs a Spark action on a driver thread, under its own job tag, and records how it ended.

    Args:
        sc: the SparkContext.
        action: runs the Spark job and returns its collected results.
        tag: a Spark job tag, so the job can be cancelled on its own.
        description: shown in Spark's UI.
        on_done: called when the job ended, either way.
    """

    def __init__(self, sc, action: Callable[[], list], tag: str, description: str,
                 on_done: Callable[[], None]) -> None:
        self.sc = sc
        self.action = action
        self.tag = tag
        self.description = description
        self.results: list | None = None
        self.error: BaseException | None = None
        self._on_done = on_done
        self._ended = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"tfos-job-{tag}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        self.sc.addJobTag(self.tag)
        try:
            self.sc.setJobDescription(self.description)
            self.results = self.action()
        except BaseException as exc:  # noqa: BLE001 - recorded for the driver thread to report
            self.error = exc
        finally:
            try:
                self.sc.removeJobTag(self.tag)
            except Exception:  # noqa: BLE001 - the context may be stopping
                pass
            # Set before on_done, which wakes the waiters: they must see the job done. (Asking whether the thread
            # is alive, as done() once did, answered False there, and a waiter slept another polling interval.)
            self._ended.set()
            self._on_done()

    def done(self) -> bool:
        return self._ended.is_set()

    def cancel(self) -> None:
        try:
            self.sc.cancelJobsWithTag(self.tag)
        except Exception as exc:  # noqa: BLE001 - the context may be gone already
            logger.debug("cancelling tfos job %s: %s", self.tag, exc)

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def error_text(self) -> str:
        """The Spark failure as readable text: the Python traceback inside a py4j error when there is one."""
        if self.error is None:
            return ""
        text = str(self.error)
        marker = "Traceback (most recent call last)"
        if marker in text:
            start = text.index(marker)
            end = text.find("\n\tat ", start)
            text = text[start : end if end > 0 else None]
        return text.strip()


def node_stage(sc, nodes: int, task_fn: Callable) -> Callable[[], list]:
    """The action that runs one barrier task per TF node."""
    return lambda: sc.parallelize(range(nodes), nodes).barrier().mapPartitions(task_fn).collect()


def bind(fn: Callable, *args) -> Callable:
    """``functools.partial`` for task functions, named for Spark's UI."""
    return functools.partial(fn, *args)
