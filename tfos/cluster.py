"""The driver API: start a TF cluster on Spark executors, wait for it, shut it down.

TensorFlowOnSpark users keep their code and change one import::

    from tfos import TFCluster
    cluster = TFCluster.run(sc, main_fun, args, num_executors, num_ps=0,
                            input_mode=TFCluster.InputMode.TENSORFLOW, master_node="chief")
    cluster.shutdown()

How it runs: the driver starts a gRPC control server (authenticated with a per-cluster secret) and one Spark
barrier task per TF node. Each task reserves a port, registers, waits for the full cluster spec, and starts
``main_fun`` in a fresh Python process with ``TF_CONFIG`` set, then heartbeats until that process ends. Any
node's failure stops all the others and is raised on the driver with its traceback.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import sys
import threading
import time
from typing import Any, Callable, Sequence

from . import _spark
from ._control.reservation import Phase, Reservation
from ._control.server import ControlServer, print_lines
from ._node.spark_task import local_address_towards, node_partition
from ._node.supervisor import LaunchSpec, NodePlace, run_node
from ._feed import driver as feed_driver
from ._feed.client import FeedError, end_feed
from ._node.tf_config import make_template
from .config import Settings, from_env
from .fs import s3a_env
from .errors import (
    ClusterFailedError,
    ConfigError,
    NodeFailure,
    ReservationTimeoutError,
    ShutdownTimeoutError,
)

logger = logging.getLogger(__name__)

__all__ = ["InputMode", "TFCluster", "run"]


class InputMode:
    """How a TF cluster gets its data."""

    TENSORFLOW = 0  #: main_fun reads its own data (TFRecords on local disk, HDFS, S3, ...).
    SPARK = 1  #: Spark feeds RDD/DataFrame partitions into the nodes (``TFCluster.train`` / ``inference``).


class TFCluster:
    """A running TF cluster. Made by :func:`run`; TensorFlowOnSpark's attribute names are kept.

    Attributes:
        sc: the SparkContext.
        defaultFS: Spark's ``fs.defaultFS``.
        working_dir: the driver's working directory.
        num_executors: the number of TF nodes.
        cluster_id: this cluster's id.
        cluster_info: one dict per node (``executor_id``, ``host``, ``port``, ``job_name``, ``task_index``, ...).
        cluster_meta: the cluster's metadata (``id``, ``cluster_template``, ``num_executors``, ``default_fs``,
            ``working_dir``, ``server_addr``).
        input_mode: the cluster's :class:`InputMode`.
        queues: accepted for compatibility (TensorFlowOnSpark's internal queue names).
        server: the control server.
    """

    def __init__(self, sc, config: "_RunConfig", server: ControlServer, job: _spark.BackgroundJob,
                 driver_nodes: list[threading.Thread]) -> None:
        self.sc = sc
        self._config = config
        self.server = server
        self._job = job
        self._driver_nodes = driver_nodes
        self._closed = False
        self.defaultFS = config.spec.default_fs
        self.working_dir = config.spec.working_dir
        self.num_executors = config.num_executors
        self.cluster_id = config.spec.cluster_id
        self.input_mode = config.input_mode
        self.queues = list(config.queues)
        self.cluster_info: list[dict] = []
        self.cluster_meta = {
            "id": self.cluster_id,
            "cluster_template": config.spec.template,
            "num_executors": config.num_executors,
            "default_fs": self.defaultFS,
            "working_dir": self.working_dir,
            "server_addr": server.address,
            "release_port": config.spec.release_port,
        }

    # ----- waiting ---------------------------------------------------------------------------------------
    @property
    def _state(self) -> Reservation:
        return self.server.reservation

    def _wait(self, predicate: Callable[[], bool], timeout: float | None, until_failed: bool = True) -> bool:
        """Waits until ``predicate()`` (evaluated under the control lock) or, if ``until_failed``, a failure."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self.server.changed
        with cond:
            while not (predicate() or (until_failed and self._state.phase is Phase.FAILED)):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                cond.wait(1.0 if left is None else min(left, 1.0))
            return True

    def _await_reservations(self, timeout: float) -> None:
        ok = self._wait(lambda: self._state.phase is not Phase.RESERVING, timeout)
        if self._state.phase is Phase.FAILED:
            error = self._failed("The TF cluster failed while starting.")
            self._teardown()
            raise error
        if not ok:
            missing = self._state.missing()
            registered = len(self._state.expected) - len(missing)
            self._abort(f"reservation timed out after {timeout:.0f}s")
            self._teardown()
            raise ReservationTimeoutError(
                f"Reserved {registered} of {len(self._state.expected)} TF nodes after {timeout:.0f}s "
                f"(missing nodes {missing}; control server {self.server.address}; {_spark.executor_summary(self.sc)}). "
                "Likely causes: the executors are busy with another job, slow to start the node tasks, or "
                "cannot reach the driver's control server (set TFOS_CONTROL_HOST or spark.driver.host to an "
                "address the executors can reach). Raise reservation_timeout if nodes are just slow to start."
            )
        with self.server.changed:
            self.cluster_info = self._state.node_table()
        for node in self.cluster_info:
            logger.info("TF node %(worker_num)s: %(job_name)s:%(task_index)s at %(addr)s "
                        "(Spark executor %(spark_executor_id)s)", node)
        shared = _shared_executors(self.cluster_info)
        if shared:
            logger.warning(
                "several TF nodes share a Spark executor (%s): they compete for its cores and memory. Give each "
                "executor one task slot (spark.task.cpus = spark.executor.cores) to get one node per executor.",
                shared,
            )

    # ----- public API ------------------------------------------------------------------------------------
    def shutdown(self, ssc: Any = None, grace_secs: float = 0, timeout: float = 259200) -> None:
        """Waits for the TF cluster to finish, then stops every node and frees the executors.

        With InputMode.TENSORFLOW this waits until every chief/worker node's ``main_fun`` returned, waits
        ``grace_secs``, then stops the service nodes (ps, evaluator). Unlike TensorFlowOnSpark, a failure or a
        timeout raises an exception instead of calling ``sys.exit(1)`` (and stopping the SparkContext).

        Args:
            ssc: not supported (Spark Streaming's DStreams are gone from Spark 4); must be None.
            grace_secs: seconds to wait after training ends before stopping service nodes.
            timeout: seconds to wait for training to end; -1 or None waits forever.

        Raises:
            ClusterFailedError: a node failed; the message starts with the root cause and its traceback.
            ShutdownTimeoutError: training did not end within ``timeout``; every node was stopped.
        """
        if ssc is not None:
            raise ConfigError("shutdown(ssc=...) needs Spark Streaming DStreams, which Spark 4 removed.")
        if self._closed:
            if self._state.phase is Phase.FAILED:  # already torn down by a failed train()
                raise ClusterFailedError(self._state.failures, "The TF cluster failed.")
            return
        limit = None if timeout is None or timeout < 0 else float(timeout)
        try:
            if self.input_mode == InputMode.SPARK:
                end_feed(self._feed_addresses(), self._config.spec.secret)
            finished = self._wait(self._state.training_done, limit)
            if self._state.phase is Phase.FAILED:
                raise self._failed("The TF cluster failed.")
            if not finished:
                self._abort(f"shutdown timeout of {limit:.0f}s expired")
                raise ShutdownTimeoutError(
                    f"The TF cluster did not finish within timeout={limit:.0f}s; all nodes were stopped. "
                    f"Still running: {self._running_roles()}. Raise shutdown(timeout=...) if training needs "
                    "longer; if it should have ended, main_fun is probably stuck (e.g. unequal steps per "
                    "worker under MultiWorkerMirroredStrategy)."
                )
            if grace_secs:
                time.sleep(grace_secs)
            with self.server.changed:
                self._state.request_stop()
                self.server.changed.notify_all()
            stop_wait = self._config.settings.stop_grace_secs + 3 * self._config.settings.heartbeat_interval + 10
            self._wait(self._state.finished, stop_wait)
            if self._state.phase is Phase.FAILED:
                raise self._failed("A TF node failed while the cluster stopped.")
        except BaseException:
            self._abort("the driver stopped the cluster")
            raise
        finally:
            self._teardown()
        logger.info("TF cluster %s finished", self.cluster_id)

    def train(self, dataRDD: Any, num_epochs: int = 0, feed_timeout: float = 600, qname: str = "input") -> None:
        """Feeds an RDD or DataFrame to the training nodes, ``num_epochs`` times (InputMode.SPARK only).

        Equal-steps policy: the rows are counted per partition first, then each epoch's rows (in partition
        order) are split into equal contiguous ranges, one per chief/worker node; the last ``rows % nodes``
        rows are not fed. Every node thus gets the same number of rows per epoch, so ``model.fit`` takes the
        same number of steps on every worker, however uneven the partitions. Data that is not cached is
        persisted (memory and disk) for the count and the epochs, then unpersisted.

        Args:
            dataRDD: an RDD (rows travel pickled in chunks) or a DataFrame (rows travel as Arrow batches).
            num_epochs: times to feed the data; 0 means 10, as in TensorFlowOnSpark.
            feed_timeout: seconds a feeding task may wait on a node that does not take rows.
            qname: accepted for compatibility.

        Raises:
            ClusterFailedError: a node failed while being fed (its root cause, not the feeding task's error).
            FeedError: feeding failed for another reason.
        """
        self._require_spark_mode("train")
        feed_driver.train(self, dataRDD, num_epochs, float(feed_timeout))

    def inference(self, dataRDD: Any, feed_timeout: float = 600, qname: str = "input", schema: Any = None):
        """Scores an RDD or DataFrame on the training nodes (InputMode.SPARK only); lazy, like any Spark transform.

        Each partition goes whole to one node (``partition % nodes``), whose main_fun reads it with
        ``feed.next_batch`` and answers with ``feed.batch_results``: one result per row, in input order.

        Args:
            dataRDD: an RDD, or a DataFrame (which then needs ``schema``).
            schema: the result DataFrame's schema (``StructType`` or DDL string); results are tuples, dicts
                or, for one column, plain values.

        Returns:
            An RDD of results, or a DataFrame for a DataFrame input.
        """
        self._require_spark_mode("inference")
        return feed_driver.inference(self, dataRDD, float(feed_timeout), schema)

    def tensorboard_url(self) -> str | None:
        """The URL of the TensorBoard started with ``tensorboard=True``, else None."""
        with self.server.changed:
            table = self._state.node_table()
        for node in table:
            if node["tb_port"]:
                return f"http://{node['host']}:{node['tb_port']}"
        return None

    # ----- internals -------------------------------------------------------------------------------------
    def _require_spark_mode(self, what: str) -> None:
        if self.input_mode != InputMode.SPARK:
            raise ConfigError(f"TFCluster.{what}() needs a cluster started with input_mode=InputMode.SPARK")
        if self._closed:
            raise ConfigError(f"TFCluster.{what}() called after shutdown()")

    def _feed_addresses(self) -> list[str]:
        """Feed addresses of the nodes that take data (chief/master/worker), in node order."""
        return [n["feed_addr"] for n in self.cluster_info if n["feed_addr"]]

    def _run_feed_job(self, action: Callable[[], list], description: str) -> list:
        """Runs a Spark job that talks to the nodes; a node failure cancels it and raises the root cause."""
        job = _spark.BackgroundJob(self.sc, action, f"tfos-feed-{secrets.token_hex(4)}", description,
                                   on_done=lambda: _notify(self.server))
        job.start()
        self._wait(job.done, None)
        if self._state.phase is not Phase.FAILED and job.error is not None:
            # A node that died makes its feeding tasks fail first; wait briefly for its own report.
            self._wait(lambda: False, 3 * self._config.settings.heartbeat_interval + 2)
        if self._state.phase is Phase.FAILED:
            job.cancel()
            job.join(30)
            error = self._failed(f"A TF node failed during '{description}'.")
            self._teardown()
            raise error
        if job.error is not None:
            raise FeedError(f"'{description}' failed: {job.error_text()}") from job.error
        return job.results or []

    def _failed(self, context: str) -> ClusterFailedError:
        """The cluster failed: give the other nodes a moment to stop and report, then build the error."""
        settings = self._config.settings
        with self.server.changed:
            deadline = time.monotonic() + settings.stop_grace_secs + 3 * settings.heartbeat_interval + 2
            while not self._state.all_exited() and time.monotonic() < deadline and not self._job.done():
                self.server.changed.wait(0.5)
            return ClusterFailedError(list(self._state.failures), context)

    def _await_tensorboard(self, timeout: float) -> None:
        if self._wait(lambda: any(n["tb_port"] for n in self._state.node_table()), timeout):
            url = self.tensorboard_url()
            if url:
                logger.info("TensorBoard running at: %s", url)
                print(f"tfos: TensorBoard running at {url}", file=sys.stderr)
                return
        logger.warning("TensorBoard did not report its port within %.0fs; see the chief's executor log", timeout)

    def _running_roles(self) -> list[str]:
        with self.server.changed:
            return [f"{n.job_name}:{n.task_index}" for n in self._state.nodes.values() if not n.exited]

    def _abort(self, reason: str) -> None:
        with self.server.changed:
            if not self._state.finished():
                self._state.abort(NodeFailure(-1, "driver", time=time.time(), message=reason))
            self.server.changed.notify_all()

    def _teardown(self) -> None:
        """Lets nodes see the outcome and exit, cancels what is left of the Spark stage, stops the server."""
        if self._closed:
            return
        self._closed = True
        settings = self._config.settings
        wait = settings.stop_grace_secs + 3 * settings.heartbeat_interval + 5
        if not self._job.join(wait):
            logger.warning("TF node tasks still running %.0fs after the cluster ended; cancelling them", wait)
            self._job.cancel()
            self._job.join(30)
        for thread in self._driver_nodes:
            thread.join(wait)
        if self.input_mode == InputMode.SPARK:
            # The nodes outlive the node stage: keep answering their heartbeats until they have stopped.
            with self.server.changed:
                self._state.request_stop()
                self.server.changed.notify_all()
            self._wait(self._state.all_exited, wait, until_failed=False)
        self.server.stop()

    def _monitor(self) -> None:
        """Driver-side watch: lost nodes (no heartbeats) and a Spark job that ended before the nodes did."""
        interval = self._config.settings.heartbeat_interval
        while not self._closed:
            with self.server.changed:
                state = self._state
                lost = state.check_lost()
                ended_early = self._job.done() and (self._job.error is not None or self.input_mode != InputMode.SPARK)
                if ended_early and not state.finished() and not state.training_done():
                    text = self._job.error_text() or "the Spark job running the TF nodes ended before they did"
                    state.abort(NodeFailure(-1, "spark job", time=time.time(),
                                            message=f"the Spark stage running the TF nodes failed: {text}"))
                if lost or state.phase is Phase.FAILED:
                    self.server.changed.notify_all()
                failed = state.phase is Phase.FAILED
            if failed:
                self._cancel_later()
                return
            time.sleep(interval)

    def _cancel_later(self) -> None:
        """After a failure, give the nodes time to stop by themselves, then cancel the Spark stage."""
        grace = self._config.settings.stop_grace_secs + 3 * self._config.settings.heartbeat_interval + 2
        if not self._job.join(grace):
            self._job.cancel()


@dataclasses.dataclass(frozen=True)
class _RunConfig:
    num_executors: int
    spark_nodes: int
    input_mode: int
    queues: Sequence[str]
    driver_ps_nodes: bool
    settings: Settings
    spec: LaunchSpec


def run(
    sc,
    map_fun: Callable[[Any, Any], Any],
    tf_args: Any,
    num_executors: int,
    num_ps: int = 0,
    tensorboard: bool = False,
    input_mode: int = InputMode.TENSORFLOW,
    log_dir: str | None = None,
    driver_ps_nodes: bool = False,
    master_node: str | None = None,
    reservation_timeout: float = 600,
    queues: Sequence[str] = ("input", "output", "error"),
    eval_node: bool = False,
    release_port: bool = True,
    **settings: Any,
) -> TFCluster:
    """Starts a TF cluster with one node per Spark executor and runs ``map_fun(tf_args, ctx)`` on each.

    Node roles follow TensorFlowOnSpark: nodes ``0..num_ps-1`` are ``ps``; the next is ``master_node`` (if
    given); then ``worker``s; the last is the ``evaluator`` if ``eval_node``. ``map_fun`` runs in a new Python
    process per node whose environment holds, before anything is imported:

    - ``TF_CONFIG``: the cluster (evaluator excluded, as TensorFlow wants) and this node's task.
    - ``TF_USE_LEGACY_KERAS=1`` (unless ``legacy_keras=False`` / ``TFOS_LEGACY_KERAS=0``): ``tf.keras`` is
      tf-keras 2, which works under MultiWorkerMirroredStrategy ``model.fit``; Keras 3 fails there today.
    - ``CUDA_VISIBLE_DEVICES``: the GPUs Spark assigned to the task, when Spark schedules GPUs; otherwise
      ``gpus_per_node`` (``TFOS_GPUS_PER_NODE``, or ``tf_args.num_gpus``) GPUs of the host that ``nvidia-smi``
      shows free (then least used), never given to two nodes of one host, with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``;
      ``""`` on ps nodes; unchanged where ``nvidia-smi`` is missing or finds no GPU.
    - ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``,
      ``AWS_REGION``, ``TFOS_S3_ADDRESSING_STYLE``: from Spark's Hadoop S3A settings
      (``spark.hadoop.fs.s3a.access.key`` etc., see :func:`tfos.fs.s3a_env`), where set, so that
      :func:`tfos.data.tfrecord_dataset` reads the buckets Spark reads. They are never logged.
    - ``TFOS_WORKER_NUM``, ``TFOS_JOB_NAME``, ``TFOS_TASK_INDEX``, ``TFOS_LOG_DIR``, ``TFOS_ERROR_FILE``;
      ``PYTHONPATH`` (the executor's ``sys.path``) and ``PYTHONUNBUFFERED=1``.

    Args:
        sc: a SparkContext or classic SparkSession.
        map_fun: the TF main function, ``map_fun(args, ctx)``; must be picklable with cloudpickle.
        tf_args: passed to ``map_fun``; a list is also set as ``sys.argv`` in the TF process.
        num_executors: number of TF nodes (each needs a Spark task slot, all at once).
        num_ps: number of parameter-server nodes.
        tensorboard: start TensorBoard on the chief's executor (logs in ``log_dir``).
        input_mode: ``InputMode.TENSORFLOW`` (main_fun reads its data) or ``InputMode.SPARK`` (feed it with
            ``cluster.train`` / ``cluster.inference``).
        log_dir: TensorBoard log directory, also given to ``map_fun`` as ``ctx.log_dir``.
        driver_ps_nodes: run the ps nodes on the driver instead of executors (for testing).
        master_node: ``"chief"`` or ``"master"`` to give the first non-ps node that role; None for all workers.
        reservation_timeout: seconds for every node to register before giving up.
        queues: accepted for TensorFlowOnSpark compatibility.
        eval_node: make the last node an ``evaluator``.
        release_port: free the reserved TF port before ``map_fun`` starts (False: ``map_fun`` must call
            ``ctx.release_port()`` just before it starts a TF server on ``ctx.port``).
        **settings: tfos settings (see :mod:`tfos.config`), e.g. ``stop_grace_secs=5``, ``legacy_keras=False``.

    Returns:
        The running :class:`TFCluster`; call ``shutdown()`` to wait for it.

    Raises:
        ConfigError: invalid arguments, or ``map_fun``/``tf_args`` cannot be pickled.
        PlacementError: Spark cannot run ``num_executors`` tasks at once.
        ReservationTimeoutError: not every node registered within ``reservation_timeout``.
        ClusterFailedError: a node failed while the cluster started.
    """
    import cloudpickle

    sc = _spark.spark_context(sc)
    if not callable(map_fun):
        raise ConfigError(f"map_fun must be callable, got {type(map_fun).__name__}")
    if input_mode not in (InputMode.TENSORFLOW, InputMode.SPARK):
        raise ConfigError(f"input_mode must be InputMode.TENSORFLOW or InputMode.SPARK, got {input_mode!r}")
    if not isinstance(num_executors, int) or isinstance(num_executors, bool):
        raise ConfigError(f"num_executors must be an int, got {num_executors!r}")
    template = make_template(num_executors, num_ps, master_node, eval_node)
    if driver_ps_nodes and not num_ps:
        raise ConfigError("driver_ps_nodes=True needs num_ps > 0")
    if driver_ps_nodes and input_mode != InputMode.TENSORFLOW:
        raise ConfigError("driver_ps_nodes=True is only supported with InputMode.TENSORFLOW")
    if settings.get("gpus_per_node") is None and _num_gpus(tf_args) is not None:
        settings["gpus_per_node"] = _num_gpus(tf_args)  # TensorFlowOnSpark's tf_args.num_gpus
    config = from_env(reservation_timeout=float(reservation_timeout), **settings)
    try:
        fn_bytes = cloudpickle.dumps(map_fun)
    except Exception as exc:
        raise ConfigError(
            f"main_fun cannot be pickled ({type(exc).__name__}: {exc}); it must not capture the SparkContext, "
            "open files, locks or sockets. Define it at module level and pass what it needs through args."
        ) from exc
    try:
        args_bytes = cloudpickle.dumps(tf_args)
    except Exception as exc:
        raise ConfigError(f"tf_args cannot be pickled ({type(exc).__name__}: {exc})") from exc

    spark_nodes = num_executors - (num_ps if driver_ps_nodes else 0)
    slots = _spark.check_placement(sc, spark_nodes, config.slot_wait_timeout)
    host = config.control_host or _spark.conf(sc, "spark.driver.host") or local_address_towards("8.8.8.8:53")
    reservation = Reservation(template, node_lost_timeout=config.node_lost_timeout)
    secret = secrets.token_hex(32)
    server = ControlServer(reservation, secret, host, max_workers=max(16, 2 * num_executors + 4),
                           log_sink=print_lines if config.forward_logs else None)
    address = server.start()
    spec = LaunchSpec(
        cluster_id=secrets.token_hex(8), control_address=address, secret=secret, template=template,
        fn=fn_bytes, args=args_bytes, default_fs=_spark.default_fs(sc), working_dir=os.getcwd(),
        log_dir=log_dir, tensorboard=bool(tensorboard), input_mode=input_mode, release_port=release_port, legacy_keras=config.legacy_keras,
        heartbeat_interval=config.heartbeat_interval, reservation_timeout=config.reservation_timeout,
        stop_grace_secs=config.stop_grace_secs, log_tail_lines=config.log_tail_lines,
        forward_logs=config.forward_logs, gpus_per_node=config.gpus_per_node, gpu_lock_dir=config.gpu_lock_dir,
        extra_env=s3a_env(_spark.hadoop_conf(sc, r"^fs\.s3a\.")),
    )
    run_config = _RunConfig(num_executors, spark_nodes, input_mode, tuple(queues), driver_ps_nodes, config, spec)
    logger.info("starting TF cluster %s: %s nodes %s on %s task slots; control server %s; settings %s",
                spec.cluster_id, num_executors, template, slots, address, config)

    offset = num_ps if driver_ps_nodes else 0
    job = _spark.BackgroundJob(sc, _spark.node_stage(sc, spark_nodes, _spark.bind(node_partition, spec, offset)),
                               f"tfos-{spec.cluster_id}", f"tfos: {spark_nodes} TF nodes",
                               on_done=lambda: _notify(server))
    driver_nodes = [
        threading.Thread(target=run_node, args=(spec, NodePlace(i, host, "driver", 0, tuple(sys.path))),
                         name=f"tfos-driver-ps-{i}", daemon=True)
        for i in (range(num_ps) if driver_ps_nodes else ())
    ]
    cluster = TFCluster(sc, run_config, server, job, driver_nodes)
    job.start()
    for thread in driver_nodes:
        thread.start()
    threading.Thread(target=cluster._monitor, name=f"tfos-monitor-{spec.cluster_id}", daemon=True).start()
    try:
        cluster._await_reservations(config.reservation_timeout)
    except BaseException:
        cluster._abort("the driver stopped while the cluster started")
        cluster._teardown()
        raise
    if tensorboard:
        cluster._await_tensorboard(timeout=10 * config.heartbeat_interval)
    return cluster


def _num_gpus(tf_args: Any) -> int | None:
    """``num_gpus`` of TensorFlowOnSpark-style args (an argparse Namespace or a dict), if it is an int."""
    value = tf_args.get("num_gpus") if isinstance(tf_args, dict) else getattr(tf_args, "num_gpus", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _shared_executors(cluster_info: list[dict]) -> dict[str, list[int]]:
    """``{executor id: [worker_num, ...]}`` for executors that host more than one node."""
    by_executor: dict[str, list[int]] = {}
    for node in cluster_info:
        if node["spark_executor_id"] and node["spark_executor_id"] != "driver":
            key = f"{node['host']}/{node['spark_executor_id']}"
            by_executor.setdefault(key, []).append(node["worker_num"])
    return {key: nums for key, nums in by_executor.items() if len(nums) > 1}


def _notify(server: ControlServer) -> None:
    with server.changed:
        server.changed.notify_all()
