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
import secrets
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ._driver import spark as _spark
from ._node import memory as _memory
from ._driver import attempt as _attempt
from ._driver import launch
from ._driver.backends import ClassicBackend
from ._driver.attempt import Attempt
from ._driver.feeding import FeedMethods, shutdown_limit
from ._control.finish import finish, state_of
from ._control.reservation import Phase, Reservation
from ._control.server import ControlServer
from ._node.spark_task import local_address_towards
from ._node.spec import LaunchSpec
from ._driver.restart import decide
from ._feed.client import end_feed
from ._driver.progress import ProgressDisplay, display_mode
from .config import Settings
from .errors import (
    ClusterFailedError,
    FeedError,
    NodeFailure,
    ReservationTimeoutError,
    ShutdownTimeoutError,
)

if TYPE_CHECKING:
    from ._connect.cluster import ConnectCluster

logger = logging.getLogger(__name__)

__all__ = ["InputMode", "TFCluster", "run"]


class InputMode:
    """How a TF cluster gets its data."""

    TENSORFLOW = 0  #: main_fun reads its own data (TFRecords on local disk, HDFS, S3, ...).
    SPARK = 1  #: Spark feeds RDD/DataFrame partitions into the nodes (``TFCluster.train`` / ``inference``).


class TFCluster(FeedMethods):
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
        server: the control server (of the current attempt).
        attempt: 0, or how many times tfos restarted the cluster after a node was lost (``max_restarts``).
        restarts: why each restart happened, oldest first.
    """

    def __init__(self, sc, config: "_RunConfig", attempt: Attempt) -> None:
        self.sc = sc
        self._config = config
        self._attempt = attempt
        self.attempt = attempt.number
        self.restarts: list[str] = []
        self._closed = False
        self._closing = False  # shutdown or a failure is ending the cluster: no more restarts
        self._final: ClusterFailedError | None = None  # set by the monitor when a failure is not restarted
        self._lifecycle = threading.RLock()  # held while an attempt is being replaced or torn down
        self._display: ProgressDisplay | None = None
        self._info_attempt = 0
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
            "server_addr": attempt.server.address,
            "release_port": config.spec.release_port,
        }

    # ----- waiting ---------------------------------------------------------------------------------------
    @property
    def server(self) -> ControlServer:
        return self._attempt.server

    @property
    def _job(self) -> _spark.BackgroundJob:
        return self._attempt.job

    @property
    def _driver_nodes(self) -> list[threading.Thread]:
        return self._attempt.driver_nodes

    @property
    def _state(self) -> Reservation:
        return self.server.reservation

    def _wait(self, predicate: Callable[[], bool], timeout: float | None, until_failed: bool = True) -> bool:
        """Waits until ``predicate()`` (evaluated under the control lock) or, if ``until_failed``, a failure.

        Follows restarts: the current attempt's lock is taken again at every wake-up.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            cond = self.server.changed
            with cond:
                if predicate() or (until_failed and self._state.phase is Phase.FAILED):
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                cond.wait(1.0 if left is None else min(left, 1.0))

    def _await_reservations(self, timeout: float) -> None:
        ok = self._wait(lambda: self._state.phase is not Phase.RESERVING, timeout)
        if self._state.phase is Phase.FAILED:
            self._closing = True  # run() raises this failure: the monitor must not restart the cluster
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
        ``grace_secs``, then stops the service nodes (ps, evaluator). With ``max_restarts``, restarts happen
        meanwhile and this waits for the last attempt; ``timeout`` counts from the call, across attempts.
        On any exit (success, failure, timeout, Ctrl-C) every TF process and TensorBoard is stopped. Unlike
        TensorFlowOnSpark, a failure or a timeout raises an exception instead of calling ``sys.exit(1)`` (and
        stopping the SparkContext).

        Args:
            ssc: not supported (Spark Streaming's DStreams are gone from Spark 4); must be None.
            grace_secs: seconds to wait after training ends before stopping service nodes.
            timeout: seconds to wait for training to end; -1 or None waits forever.

        Raises:
            ClusterFailedError: a node failed; the message starts with the root cause and its traceback.
            ShutdownTimeoutError: training did not end within ``timeout``; every node was stopped.
        """
        limit = shutdown_limit(ssc, timeout)
        if self._closed:
            if self._final is not None:
                raise self._final
            if self._state.phase is Phase.FAILED:  # already torn down by a failed train()
                raise ClusterFailedError(self._state.failures, "The TF cluster failed.")
            return
        try:
            if self.input_mode == InputMode.SPARK:
                end_feed(self._feed_addresses(), self._config.spec.secret)
            settings = self._config.settings
            _, how = finish(_DriverState(self), limit, grace_secs,
                            stop_wait=settings.stop_grace_secs + 3 * settings.heartbeat_interval + 10)
            if how == "timeout":
                assert limit is not None  # only a limit ends the wait unfinished
                raise ShutdownTimeoutError.expired(
                    limit, f"all nodes were stopped. Still running: {self._running_roles()}.")
            if how == "failed":  # the monitor's verdict: not restarted
                assert self._final is not None
                raise self._final
            if self._state.phase is Phase.FAILED or self._final is not None:
                raise self._failed("A TF node failed while the cluster stopped.")
        except BaseException:
            self._closing = True  # no restart after a failure raised here, a timeout or Ctrl-C
            self._abort("the driver stopped the cluster")
            raise
        finally:
            self._teardown()
        logger.info("TF cluster %s finished", self.cluster_id)

    def progress(self) -> list[dict]:
        """The latest progress of every node, from its heartbeats: one dict per node, by ``worker_num``.

        Each dict has ``worker_num``, ``role``, ``attempt`` (see ``max_restarts``), ``exited``, ``heartbeat_secs``
        (seconds since its last heartbeat), ``idle_secs`` (seconds since the node last made
        progress), ``activity`` (output chunks seen), ``last_line`` (its last output line), the Keras fields
        read from its output (``epoch``/``epochs``, ``step``/``steps``) and whatever main_fun passed to
        ``ctx.report_progress`` (plus ``reports``, the number of calls).
        """
        with self.server.changed:
            return [{**row, "attempt": self.attempt} for row in self._state.progress_table()]

    def tensorboard_url(self) -> str | None:
        """The URL of the TensorBoard started with ``tensorboard=True``, else None."""
        with self.server.changed:
            table = self._state.node_table()
        for node in table:
            if node["tb_port"]:
                return f"http://{node['host']}:{node['tb_port']}"
        return None

    # ----- internals -------------------------------------------------------------------------------------
    def _node_progress(self) -> list[dict]:
        return self.progress()

    def _stop_after_feed_failure(self, reason: str) -> None:
        self._closing = True
        self._abort(reason)
        self._teardown()

    def _run_feed_job(self, action: Callable[[], list], description: str) -> list:
        """Runs a Spark job that talks to the nodes; a node failure cancels it and raises the root cause."""
        job = _spark.BackgroundJob(self.sc, action, f"tfos-feed-{secrets.token_hex(4)}", description,
                                   on_done=lambda: _attempt.notify(self.server))
        job.start()
        self._wait(job.done, None)
        if self._state.phase is not Phase.FAILED and job.error is not None:
            # A node that died makes its feeding tasks fail first; wait briefly for its own report.
            self._wait(lambda: False, 3 * self._config.settings.heartbeat_interval + 2)
        if self._state.phase is Phase.FAILED:
            self._closing = True
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
        return ClusterFailedError(self._settle(self._attempt), context)

    def _settle(self, attempt: Attempt) -> list:
        """After a failure: waits (boundedly) for the attempt's nodes to stop and report; returns the failures."""
        settings = self._config.settings
        with attempt.server.changed:
            deadline = time.monotonic() + settings.stop_grace_secs + 3 * settings.heartbeat_interval + 2
            while not attempt.reservation.all_exited() and time.monotonic() < deadline and not attempt.job.done():
                attempt.server.changed.wait(0.5)
            return list(attempt.reservation.failures)

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
        self._closing = True
        with self._lifecycle:  # waits for a restart in progress, then ends the attempt it started
            if self._closed:
                return
            self._closed = True
            if self._display is not None:
                self._display.stop()
            settings = self._config.settings
            _attempt.stop(self._attempt, settings)
            if self.input_mode == InputMode.SPARK:
                # The nodes outlive the node stage: keep answering their heartbeats until they have stopped.
                with self.server.changed:
                    self._state.request_stop()
                    self.server.changed.notify_all()
                wait = settings.stop_grace_secs + 3 * settings.heartbeat_interval + 5
                self._wait(self._state.all_exited, wait, until_failed=False)
            self.server.stop()

    def _monitor(self) -> None:
        """Runs :meth:`_watch`; if it ever breaks, the run fails with that error instead of waiting forever."""
        try:
            self._watch()
        except Exception as exc:  # noqa: BLE001 - shutdown() waits on this thread's verdict
            logger.exception("tfos monitor thread failed")
            failure = NodeFailure(-1, "driver", time=time.time(), message=f"tfos's monitor thread failed: {exc!r}")
            self._final = ClusterFailedError([failure], "The TF cluster was stopped.")
            self._closing = True
            self._abort(failure.message)

    def _watch(self) -> None:
        """Driver-side watch over the current attempt: lost or hung nodes, a Spark job that ended before the
        nodes did, a restarted attempt's reservation; on a failure, restarts the cluster or ends the run."""
        interval = self._config.settings.heartbeat_interval
        while not self._closed:
            attempt = self._attempt
            with attempt.server.changed:
                state = attempt.reservation
                lost = attempt.watch.check()
                ended_early = attempt.job.done() and (attempt.job.error is not None
                                                      or self.input_mode != InputMode.SPARK)
                if ended_early and not state.finished() and not state.training_done():
                    text = attempt.job.error_text() or "the Spark job running the TF nodes ended before they did"
                    state.abort(NodeFailure(-1, "spark job", time=time.time(),
                                            message=_memory.with_hint(
                                                f"the Spark stage running the TF nodes failed: {text}",
                                                self._config.spec.memory_note)))
                self._check_restarted(attempt)
                if lost or state.phase is Phase.FAILED:
                    attempt.server.changed.notify_all()
                failed = state.phase is Phase.FAILED
                if not failed:
                    attempt.server.changed.wait(interval)
            if failed and not self._after_failure(attempt):
                return

    def _check_restarted(self, attempt: Attempt) -> None:
        """For a restarted attempt (caller holds its lock): records its nodes once they all registered (its
        watch times out its reservation)."""
        state = attempt.reservation
        if attempt.number == 0 or self._info_attempt == attempt.number:
            return
        if state.phase is Phase.RUNNING:
            self._info_attempt = attempt.number
            self.cluster_info = state.node_table()
            logger.info("TF cluster %s running again (attempt %s): %s", self.cluster_id, attempt.number,
                        [f"{n['job_name']}:{n['task_index']} at {n['addr']}" for n in self.cluster_info])

    def _after_failure(self, attempt: Attempt) -> bool:
        """Restarts the cluster if the failure allows it (returns True: keep watching), else ends the run."""
        seen = time.monotonic()
        failures = self._settle(attempt)
        settings = self._config.settings
        decision = decide(failures, attempt.number, settings.max_restarts, self.input_mode == InputMode.SPARK)
        with self._lifecycle:
            if decision.restart and not self._closing:
                logger.warning("TF cluster %s failed: %s", self.cluster_id, decision.reason)
                print(f"tfos: the TF cluster failed ({decision.reason}); restarting it", file=sys.stderr)
                try:
                    self._restart(attempt, decision.reason)
                    logger.info("TF cluster %s: attempt %s launched %.1fs after the failure was seen",
                                self.cluster_id, self.attempt, time.monotonic() - seen)
                    return True
                except Exception as exc:  # noqa: BLE001 - reported as the run's failure
                    failures.append(NodeFailure(-1, "driver", time=time.time(),
                                                message=f"restarting the TF cluster failed: {exc}"))
            context = "The TF cluster failed."
            if self.restarts:
                context += f" It was restarted {len(self.restarts)} time(s) before: " + "; ".join(self.restarts) + "."
            if settings.max_restarts and not decision.restart:
                context += f" Not restarted again: {decision.reason}."
            self._final = ClusterFailedError(failures, context)
        _attempt.notify(attempt.server)
        self._cancel_later(attempt)
        return False

    def _restart(self, old: Attempt, reason: str) -> None:
        """Stops every node of ``old`` and its server, then launches the next attempt (caller holds the lock)."""
        settings = self._config.settings
        started = time.monotonic()
        _attempt.stop(old, settings)
        old.server.stop()
        logger.info("TF cluster %s: attempt %s stopped in %.1fs", self.cluster_id, old.number,
                    time.monotonic() - started)
        self.restarts.append(reason)
        _spark.check_placement(self.sc, self._config.spark_nodes, settings.slot_wait_timeout)
        new = _attempt.launch(self.sc, self._config.spec, old.number + 1, settings, self._config.host,
                              self._config.spark_nodes, self._config.driver_ps)
        self._config = dataclasses.replace(self._config, spec=new.spec)
        self._attempt, self.attempt = new, new.number
        self.cluster_meta["server_addr"] = new.server.address
        _attempt.notify(old.server)  # waiters on the old attempt look again

    def _cancel_later(self, attempt: Attempt) -> None:
        """After a failure, give the nodes time to stop by themselves, then cancel the Spark stage."""
        grace = self._config.settings.stop_grace_secs + 3 * self._config.settings.heartbeat_interval + 2
        if not attempt.job.join(grace):
            attempt.job.cancel()


class _DriverState:
    """The cluster as ``shutdown()`` sees it (a :class:`~tfos._control.finish.ClusterState`), across restarts: a
    failed attempt counts as failed only once the monitor decided not to restart it (``_final``)."""

    def __init__(self, cluster: TFCluster) -> None:
        self.cluster = cluster

    def _state(self) -> dict:
        cluster = self.cluster
        with cluster.server.changed:
            state = state_of(cluster._state)
        if cluster._final is not None:
            state["phase"] = "failed"
        elif state["phase"] == "failed":
            state["phase"] = "restarting"  # the monitor restarts the cluster or ends the run
        return state

    def wait(self, done: Callable[[dict], bool], timeout: float | None) -> tuple[dict, bool]:
        ok = self.cluster._wait(lambda: done(self._state()), timeout, until_failed=False)
        return self._state(), not ok

    def stop(self) -> None:
        with self.cluster.server.changed:
            self.cluster._state.request_stop()
            self.cluster.server.changed.notify_all()

    def abort(self, reason: str) -> None:
        self.cluster._abort(reason)


@dataclasses.dataclass(frozen=True)
class _RunConfig:
    num_executors: int
    spark_nodes: int
    input_mode: int
    queues: Sequence[str]
    driver_ps_nodes: bool
    settings: Settings
    spec: LaunchSpec  # the current attempt's
    host: str = ""  # the control server's address
    driver_ps: int = 0  # ps nodes on driver threads


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
) -> TFCluster | ConnectCluster:
    """Starts a TF cluster with one node per Spark executor and runs ``map_fun(tf_args, ctx)`` on each.

    Node roles follow TensorFlowOnSpark: nodes ``0..num_ps-1`` are ``ps``; the next is ``master_node`` (if
    given); then ``worker``s; the last is the ``evaluator`` if ``eval_node``. ``map_fun`` runs in a new Python
    process per node whose environment holds, before anything is imported:

    - ``TF_CONFIG``: the cluster (evaluator excluded, as TensorFlow wants) and this node's task.
    - ``TF_USE_LEGACY_KERAS``: ``1`` (``tf.keras`` is tf-keras 2) or ``0`` (Keras 3, with tfos's repair for
      MultiWorkerMirroredStrategy, :mod:`tfos._node.keras3`). ``legacy_keras="auto"`` (default) picks Keras 3 when
      ``map_fun`` imports ``keras`` or uses Keras 3 objects made on the driver, tf-keras otherwise (see
      :mod:`tfos._node.keras_choice`); ``1``/``0`` force one.
    - ``CUDA_VISIBLE_DEVICES``: the GPUs Spark assigned to the task, when Spark schedules GPUs; otherwise
      ``gpus_per_node`` (``TFOS_GPUS_PER_NODE``, or ``tf_args.num_gpus``) GPUs of the host that ``nvidia-smi``
      shows free (then least used), never given to two nodes of one host, with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``;
      ``""`` on ps nodes; unchanged where ``nvidia-smi`` is missing or finds no GPU.
    - ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``,
      ``AWS_REGION``, ``TFOS_S3_ADDRESSING_STYLE``: from Spark's Hadoop S3A settings
      (``spark.hadoop.fs.s3a.access.key`` etc., see :func:`tfos.fs.s3a_env`), where set, so that
      :func:`tfos.data.tfrecord_dataset` reads the buckets Spark reads. They are never logged.
    - ``TFOS_WORKER_NUM``, ``TFOS_JOB_NAME``, ``TFOS_TASK_INDEX``, ``TFOS_LOG_DIR``, ``TFOS_ERROR_FILE``,
      ``TFOS_PROGRESS_FILE`` (where ``ctx.report_progress`` writes); ``PYTHONPATH`` (the executor's ``sys.path``)
      and ``PYTHONUNBUFFERED=1``.
    - ``TF_GRPC_DEFAULT_OPTIONS`` gets ``grpc.initial_reconnect_backoff_ms=100`` (unless it sets that option):
      TensorFlow's channels otherwise wait 1 s before retrying a peer whose server is not up yet, which delays
      MWMS's group whenever a worker is ready before the chief.

    Reliability settings (``**settings`` or ``TFOS_*``, see :mod:`tfos.config`):

    - ``max_restarts=N`` (InputMode.TENSORFLOW only): when a node is lost or killed (a signal, a lost executor,
      no heartbeats, a hang, a peer-communication error), every node of the cluster is stopped and the cluster
      started again, up to N times; an exception raised by ``main_fun`` itself is never retried (see
      :mod:`tfos._restart`). ``ctx.attempt`` counts the starts; ``ctx.backup_dir`` stays the same across them,
      so ``tf.keras.callbacks.BackupAndRestore(ctx.backup_dir)`` resumes from the last completed epoch. It is
      ``<log_dir>/backup``, else ``<working dir>/tfos_backup/<cluster id>``: on several hosts, it must be on a
      file system every node sees (NFS, or a ``log_dir`` TensorFlow writes to directly).
    - ``hang_timeout=S``: a chief/worker node that shows no progress for S seconds (no output, no Keras step,
      no ``ctx.report_progress`` call) fails the run with a message naming it and its last output line.
    - ``progress="auto"|"on"|"off"|"log"``: the driver's per-node progress lines every ``progress_interval``
      seconds on stderr (``auto``: only when stderr is a terminal; ``log``: as INFO log records instead);
      ``TFCluster.progress()`` returns the same data.

    Args:
        sc: a SparkContext, a classic SparkSession, or a Spark Connect SparkSession (then the cluster runs
            as described in docs/connect.md: node 0 hosts the control server, DataFrames only).
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
        **settings: tfos settings (see :mod:`tfos.config`), e.g. ``stop_grace_secs=5``, ``legacy_keras=1``.

    Returns:
        The running :class:`TFCluster`; call ``shutdown()`` to wait for it.

    Raises:
        ConfigError: invalid arguments, or ``map_fun``/``tf_args`` cannot be pickled.
        PlacementError: Spark cannot run ``num_executors`` tasks at once.
        ReservationTimeoutError: not every node registered within ``reservation_timeout``.
        ClusterFailedError: a node failed while the cluster started.
    """
    from ._connect.session import is_connect

    if is_connect(sc):  # no SparkContext, client maybe unreachable: node 0 hosts the control server
        from ._connect.cluster import run as run_connect

        return run_connect(sc, map_fun, tf_args, num_executors, num_ps, tensorboard, input_mode, log_dir,
                           driver_ps_nodes, master_node, reservation_timeout, queues, eval_node, release_port,
                           **settings)
    sc = _spark.spark_context(sc)
    request = launch.Request(map_fun, tf_args, num_executors, num_ps, tensorboard, input_mode, log_dir,
                             driver_ps_nodes, master_node, reservation_timeout, eval_node, release_port, settings)
    prepared = launch.prepare(ClassicBackend(sc), request)
    config, template, base, spark_nodes = prepared.settings, prepared.template, prepared.spec, prepared.spark_nodes
    slots, cluster_id = prepared.slots, base.cluster_id
    host = config.control_host or _spark.conf(sc, "spark.driver.host") or local_address_towards("8.8.8.8:53")
    driver_ps = request.driver_ps
    first = _attempt.launch(sc, base, 0, config, host, spark_nodes, driver_ps)
    run_config = _RunConfig(num_executors, spark_nodes, input_mode, tuple(queues), driver_ps_nodes, config,
                            first.spec, host, driver_ps)
    logger.info("starting TF cluster %s: %s nodes %s on %s task slots; control server %s; settings %s",
                cluster_id, num_executors, template, slots, first.server.address, config)
    cluster = TFCluster(sc, run_config, first)
    threading.Thread(target=cluster._monitor, name=f"tfos-monitor-{cluster_id}", daemon=True).start()
    try:
        cluster._await_reservations(config.reservation_timeout)
    except BaseException:
        cluster._abort("the driver stopped while the cluster started")
        cluster._teardown()
        raise
    if tensorboard:
        cluster._await_tensorboard(timeout=10 * config.heartbeat_interval)
    mode = display_mode(config.progress, _isatty(sys.stderr))
    if mode != "off":
        cluster._display = ProgressDisplay(cluster.progress, mode, config.progress_interval)
        cluster._display.start()
    return cluster


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _shared_executors(cluster_info: list[dict]) -> dict[str, list[int]]:
    """``{executor id: [worker_num, ...]}`` for executors that host more than one node."""
    by_executor: dict[str, list[int]] = {}
    for node in cluster_info:
        if node["spark_executor_id"] and node["spark_executor_id"] != "driver":
            key = f"{node['host']}/{node['spark_executor_id']}"
            by_executor.setdefault(key, []).append(node["worker_num"])
    return {key: nums for key, nums in by_executor.items() if len(nums) > 1}
