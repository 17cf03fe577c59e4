"""The client API under Spark Connect: ``TFCluster.run(spark, ...)`` returns a :class:`ConnectCluster`.

It behaves like :class:`tfos.cluster.TFCluster` where Connect allows it. What differs, because the client
cannot be reached from the executors and has no SparkContext:

- node 0 hosts the control server (see :mod:`tfos._connect.control`); the client learns the outcome from the
  rows of the node stage (InputMode.TENSORFLOW) or from a one-task job that asks node 0 (InputMode.SPARK);
- with InputMode.TENSORFLOW, ``run()`` returns once the node stage is submitted: startup failures, like
  training failures, are raised by ``shutdown()``, and ``cluster_info`` is filled in then; service nodes (ps,
  evaluator) stop as soon as the training nodes are done;
- the nodes' output is not streamed to the client (it stays in the executors' stderr); a failure still comes
  back with its traceback and the last lines of its output;
- ``train`` and ``inference`` take DataFrames only.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any, Callable, Sequence

from .._driver.backends import ConnectBackend
from .._driver.feeding import FeedMethods, shutdown_limit
from .._driver.launch import Launch, Request, prepare
from .._node.memory import with_hint
from .._node.spec import SPARK_MODE
from ..config import Settings
from ..errors import ClusterFailedError, ConfigError, NodeFailure, ShutdownTimeoutError
from . import session as connect
from .control import ConnectSpec, failures_of
from .stage import FINISH_SCHEMA, NODE_SCHEMA, FinishSpec, finish_batches, node_batches

logger = logging.getLogger(__name__)


class ConnectCluster(FeedMethods):
    """A TF cluster started from a Spark Connect session; TFCluster's attribute names are kept.

    Attributes:
        spark: the Connect SparkSession (``sc`` is None: Connect has no SparkContext).
        cluster_info: one dict per node; under InputMode.TENSORFLOW known only after ``shutdown()``.
        cluster_meta: ``id``, ``cluster_template``, ``num_executors``, ``default_fs``, ``working_dir``,
            ``server_addr`` (node 0's control server, once known).
    """

    def __init__(self, spark, config: Launch, num_executors: int, job) -> None:
        self.spark = spark
        self.sc = None
        self._config = config
        self._job = job
        self._closed = False
        self._failures: list[NodeFailure] = []
        self._progress: list[dict] | None = None
        self.num_executors = num_executors
        self.cluster_id = config.spec.cluster_id
        self.input_mode = config.spec.input_mode
        self.defaultFS = config.spec.default_fs
        self.working_dir = config.spec.working_dir
        self.queues = ["input", "output", "error"]
        self.cluster_info: list[dict] = []
        self.control_address = ""
        self._control_cert = b""  # node 0's TLS certificate (control_tls), from its row of the node stage
        self.cluster_meta = {
            "id": self.cluster_id, "cluster_template": config.spec.template, "num_executors": num_executors,
            "default_fs": self.defaultFS, "working_dir": self.working_dir, "server_addr": "",
            "release_port": config.spec.release_port,
        }

    # ----- public API ------------------------------------------------------------------------------------
    def shutdown(self, ssc: Any = None, grace_secs: float = 0, timeout: float = 259200) -> None:
        """Waits for the TF cluster to finish and frees the executors; see ``TFCluster.shutdown``.

        Args:
            ssc: must be None.
            grace_secs: seconds between the end of training and stopping the service nodes (InputMode.SPARK;
                under InputMode.TENSORFLOW node 0 stops them as soon as training is done).
            timeout: seconds to wait for training to end; -1 or None waits forever.

        Raises:
            ClusterFailedError: a node failed; the message starts with the root cause and its traceback.
            ShutdownTimeoutError: training did not end within ``timeout``; every node was stopped.
        """
        limit = shutdown_limit(ssc, timeout)
        if self._closed:
            if self._failures:
                raise ClusterFailedError(self._failures, "The TF cluster failed.")
            return
        try:
            if self.input_mode == SPARK_MODE:
                self._shutdown_fed(float(grace_secs), limit)
            else:
                self._shutdown_tf(limit)
        except (KeyboardInterrupt, SystemExit):
            self._stop_nodes("the client stopped during shutdown()")
            raise
        finally:
            self._closed = True
        logger.info("TF cluster %s finished", self.cluster_id)

    def progress(self) -> list[dict]:
        """The latest progress of every node (see ``TFCluster.progress``), as node 0 knows it.

        InputMode.SPARK: asked from node 0 by a one-task Spark job (it waits for a free task slot).
        InputMode.TENSORFLOW: every task slot runs a node, so the progress reaches the client only with the
        node stage's rows, at ``shutdown()``.

        Raises:
            ConfigError: InputMode.TENSORFLOW before ``shutdown()``.
        """
        if self._progress is not None:
            return self._progress
        if self.input_mode == SPARK_MODE and not self._closed:
            return self._finish("peek")["state"].get("progress", [])
        raise ConfigError("under Spark Connect with InputMode.TENSORFLOW the nodes' progress reaches the client "
                          "only when the node stage ends: call progress() after shutdown(), or see the "
                          "executors' logs (the client cannot be reached from the executors).")

    def tensorboard_url(self) -> str | None:
        """The TensorBoard URL, if node 0 knew it when the client last heard from it."""
        for node in self.cluster_info:
            if node.get("tb_port"):
                return f"http://{node['host']}:{node['tb_port']}"
        return None

    # ----- tfos._driver.feeding.FeedMethods, tfos._feed.driver.FeedBackend ---------------------------------
    _files_on_driver = False  # the client may be on another host than the Spark driver that lists the files

    def _check_feed_data(self, data: Any, what: str) -> None:
        connect.require_dataframe(data, what)

    def _result_schema(self, schema: Any) -> Any:
        if isinstance(schema, str):
            return self.spark.createDataFrame([], schema).schema  # parsed by the server: no JVM here
        return schema

    def _node_progress(self) -> list[dict]:
        try:
            return self._finish("peek")["state"].get("progress", [])
        except Exception as exc:  # noqa: BLE001 - only adds detail to an error being raised
            logger.warning("could not read the nodes' progress from node 0: %s", exc)
            return []

    def _stop_after_feed_failure(self, reason: str) -> None:
        self._stop_nodes(reason)
        self._closed = True

    def _run_feed_job(self, action: Callable[[], list], description: str) -> list:
        """Runs a job that talks to the nodes; if it fails, asks node 0 whether a node failed first."""
        job = connect.background_job(self.spark, action, f"tfos-feed-{secrets.token_hex(4)}", description)
        job.start()
        try:
            while not job.join(1.0):
                pass
        except BaseException:
            job.cancel()
            job.join(30)
            self._stop_nodes("the client stopped while feeding")
            raise
        if job.error is None:
            return job.results or []
        result = self._finish("state")
        if result["state"]["phase"] == "failed":
            raise self._cluster_failed(result["state"], f"A TF node failed during '{description}'.")
        from ..errors import FeedError

        raise FeedError(f"'{description}' failed: {job.error_text()}") from job.error

    # ----- internals -------------------------------------------------------------------------------------
    def _stop_nodes(self, reason: str) -> None:
        """Best effort when the client stops early: interrupt the node stage, or ask node 0 to abort."""
        if not self._job.done():
            self._job.cancel()
            self._job.join(30)
        elif self.input_mode == SPARK_MODE and self.control_address:
            try:
                self._finish("abort", reason=reason)
            except Exception as exc:  # noqa: BLE001 - the nodes stop when their executors go away
                logger.warning("could not ask node 0 to stop the TF cluster: %s", exc)

    def _stop_wait(self) -> float:
        settings = self._config.settings
        return settings.stop_grace_secs + 3 * settings.heartbeat_interval + 10

    def _await_start(self, timeout: float) -> None:
        """InputMode.SPARK: waits for the node stage (it ends once every node's TF process runs)."""
        if not self._job.join(timeout):
            self._job.cancel()
            self._job.join(30)
            self._closed = True
            raise ClusterFailedError([NodeFailure(-1, "spark job", time=time.time(), message=(
                f"the node stage did not end within {timeout:.0f}s; it was interrupted. "
                f"({connect.executor_summary(self.spark)})"))], "The TF cluster did not start.")
        rows = self._rows("The TF cluster failed while starting.")
        state = rows[0].get("state") or {}
        self.control_address = rows[0].get("control", "")
        self._control_cert = (rows[0].get("control_cert") or "").encode()
        self.cluster_meta["server_addr"] = self.control_address
        self.cluster_info = state.get("nodes", [])
        if state.get("phase") == "failed" or any(r.get("outcome") != "started" for r in rows):
            if self.control_address:
                from ..errors import FeedError

                mode = "state" if state.get("phase") == "failed" else "abort"
                reasons = [f"node {r['worker_num']}: {r.get('error') or r.get('outcome')}" for r in rows
                           if r.get("outcome") != "started"]
                try:
                    state = self._finish(mode, reason=f"nodes did not start ({'; '.join(reasons)})")["state"]
                except FeedError as exc:
                    logger.warning("could not read node 0's final state: %s", exc)
            self._closed = True
            raise self._cluster_failed(state, "The TF cluster failed while starting.")
        for node in self.cluster_info:
            logger.info("TF node %(worker_num)s: %(job_name)s:%(task_index)s at %(addr)s "
                        "(Spark executor %(spark_executor_id)s)", node)

    def _rows(self, context: str) -> list[dict]:
        """The node stage's rows by worker_num; a failed stage becomes a ClusterFailedError."""
        if self._job.error is not None:
            self._closed = True
            self._failures = [stage_failure(self._job.error_text(), self._config.spec.memory_note)]
            raise ClusterFailedError(self._failures, context) from self._job.error
        rows = sorted((json.loads(r.summary) for r in self._job.results or []), key=lambda r: r["worker_num"])
        if not rows or rows[0]["worker_num"] != 0:
            raise ClusterFailedError([NodeFailure(-1, "spark job", time=time.time(),
                                                  message=f"the node stage returned no row for node 0: {rows}")],
                                     context)
        return rows

    def _cluster_failed(self, state: dict, context: str) -> ClusterFailedError:
        self._failures = failures_of(state) or [NodeFailure(-1, "spark job", time=time.time(), message=(
            f"the TF cluster ended in phase {state.get('phase')!r} without a recorded failure"))]
        self._closed = True
        return ClusterFailedError(self._failures, context)

    def _shutdown_tf(self, limit: float | None) -> None:
        if not self._job.join(limit if limit is not None else 1e9):
            self._job.cancel()
            self._job.join(60)
            assert limit is not None  # without one the join waits for the job
            raise ShutdownTimeoutError.expired(limit, "its Spark job was interrupted, which stops every node.")
        rows = self._rows("The TF cluster failed.")
        state = rows[0].get("state") or {}
        self.cluster_info = state.get("nodes", [])
        self._progress = state.get("progress")
        if state.get("phase") != "done":
            raise self._cluster_failed(state, "The TF cluster failed.")

    def _shutdown_fed(self, grace_secs: float, limit: float | None) -> None:
        from ..errors import FeedError

        feed = self._feed_addresses()
        try:
            result = self._finish("shutdown", feed_addresses=feed, timeout=limit, grace_secs=grace_secs)
        except FeedError as exc:
            raise ClusterFailedError([NodeFailure(-1, "spark job", time=time.time(), message=str(exc))],
                                     "The TF cluster's final state could not be read.") from exc
        state = result["state"]
        self._progress = state.get("progress")
        if result["timed_out"]:
            assert limit is not None  # node 0 times out only with a limit
            raise ShutdownTimeoutError.expired(limit, "all nodes were stopped.")
        if state["phase"] == "failed":
            raise self._cluster_failed(state, "The TF cluster failed.")

    def _finish(self, mode: str, **fields) -> dict:
        """Runs the one-task finish job against node 0 (see ``stage.FinishSpec``); returns its result."""
        from ..errors import FeedError
        from .._driver.spark import bind

        spec = FinishSpec(self.control_address, self._config.spec.secret, mode, stop_wait=self._stop_wait(),
                          control_cert=self._control_cert, **fields)
        fn = bind(finish_batches, spec)
        job = connect.background_job(self.spark, lambda: self.spark.range(0, 1, 1, 1).mapInArrow(
            fn, FINISH_SCHEMA).collect(), f"tfos-finish-{secrets.token_hex(4)}", f"tfos: {mode}")
        job.start()
        wait = (spec.timeout or 0) + spec.grace_secs + 2 * spec.stop_wait + 120 if spec.timeout is not None else None
        if not job.join(wait if wait is not None else 1e9):
            job.cancel()
            job.join(30)
            raise FeedError(f"asking node 0 ({self.control_address}) for the cluster's state ({mode}) took longer "
                            f"than {wait:.0f}s")
        if job.error is not None:
            raise FeedError(f"asking node 0 ({self.control_address}) for the cluster's state ({mode}) failed: "
                            f"{job.error_text()}") from job.error
        assert job.results is not None  # a job that ended without an error has its rows
        return json.loads(job.results[0].summary)


def run(spark, map_fun: Callable[[Any, Any], Any], tf_args: Any, num_executors: int, num_ps: int = 0,
        tensorboard: bool = False, input_mode: int = 0, log_dir: str | None = None, driver_ps_nodes: bool = False,
        master_node: str | None = None, reservation_timeout: float = 600,
        queues: Sequence[str] = ("input", "output", "error"), eval_node: bool = False, release_port: bool = True,
        **settings: Any) -> ConnectCluster:
    """``TFCluster.run`` for a Spark Connect session; same arguments, see :mod:`tfos._connect.cluster`."""
    request = Request(map_fun, tf_args, num_executors, num_ps, tensorboard, input_mode, log_dir, driver_ps_nodes,
                      master_node, reservation_timeout, eval_node, release_port, settings)
    prepared = prepare(ConnectBackend(spark), request)
    config, template, spec = prepared.settings, prepared.template, prepared.spec
    cspec = ConnectSpec(spec, node_lost_timeout=config.node_lost_timeout, hang_timeout=config.hang_timeout,
                        tls=config.control_tls or bool(config.control_tls_cert), tls_material=user_tls_material(config))
    logger.info("starting TF cluster %s over Spark Connect: %s nodes %s; settings %s", spec.cluster_id,
                num_executors, template, config)
    from .._driver.spark import bind

    fn = bind(node_batches, cspec)
    job = connect.background_job(
        spark, lambda: spark.range(0, num_executors, 1, num_executors).mapInArrow(fn, NODE_SCHEMA, barrier=True
                                                                                  ).collect(),
        f"tfos-{spec.cluster_id}", f"tfos: {num_executors} TF nodes")
    cluster = ConnectCluster(spark, prepared, num_executors, job)
    cluster.queues = list(queues)
    job.start()
    if input_mode == SPARK_MODE:
        cluster._await_start(config.reservation_timeout + 120)
    return cluster


def user_tls_material(settings: Settings) -> tuple[bytes, bytes] | None:
    """The user's certificate and key (TFOS_CONTROL_TLS_CERT/_KEY), read and checked here, on the client: node 0
    serves them; without them node 0 makes a certificate for its own address (TFOS_CONTROL_TLS=1).

    Raises:
        ConfigError: a file cannot be read or is not PEM.
    """
    if not settings.control_tls_cert:
        return None
    from .._control.tls import server_material

    return server_material(settings, "")


def stage_failure(text: str, memory_note: str = "") -> NodeFailure:
    """The failure of a node stage that Spark failed (a task's Python worker crashed, an executor was lost).

    Spark names the barrier task that failed first (``ResultTask(stage, partition)``): partition ``i`` is node
    ``i``. The JVM stack trace is cut; the executor's log has it.
    """
    match = re.search(r"barrier task ResultTask\(\d+, (\d+)\)", text)
    node = int(match.group(1)) if match else -1
    short = with_hint(text.split("\n\tat ", 1)[0].strip(), memory_note)
    which = f" because the Spark task of node {node} ended unsuccessfully" if match else ""
    return NodeFailure(node, "" if match else "spark job", time=time.time(), message=(
        f"the Spark stage running the TF nodes failed{which}: {short}\nUnder Spark Connect node 0 (worker_num 0, "
        "the stage's first task) hosts the TF cluster's control server: when its task or executor is lost the "
        "stage fails, and the other nodes stop once they lose the control server. The failed task's executor "
        "log has the details."))


__all__ = ["ConnectCluster", "run"]
