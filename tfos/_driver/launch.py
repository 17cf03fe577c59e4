"""The driver's launch pipeline, one for both kinds of Spark session: validate -> settings -> pickle -> the nodes'
launch spec. What differs between a classic SparkContext and a Spark Connect session is behind :class:`Backend`.

``TFCluster.run`` (``tfos/cluster.py``) and its Spark Connect twin (``tfos/_connect/cluster.py``) both call
:func:`prepare`; each then starts the nodes its own way (classic: a control server on the driver and a barrier
job; Connect: a DataFrame barrier stage whose node 0 hosts the control server) and monitors them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
from typing import Any, Callable, Mapping, Protocol

from .._node import keras_choice as _keras, memory as _memory
from .._node.environment import user_env_names
from .._node.instance import InstanceSpec, ReturnsResult
from .._node.spec import SPARK_MODE, LaunchSpec
from .._node.tf_config import make_template
from .payload import dumps_for_nodes
from .._node.preimport import modules_for
from .restart import default_backup_dir
from ..config import Settings, from_env
from ..errors import ClusterFailedError, ConfigError
from ..fs import s3a_env

logger = logging.getLogger(__name__)

TENSORFLOW_MODE = 0  # cluster.InputMode.TENSORFLOW


class Backend(Protocol):
    """What the launch pipeline needs of a Spark session."""

    session_word: str  # "SparkContext" or "SparkSession", for messages
    forward_logs: bool  # whether the nodes' output can reach this driver

    def conf(self) -> Mapping[str, str]:
        """Every Spark conf entry the driver can see."""

    def default_fs(self) -> str:
        """The cluster's default file system (``fs.defaultFS``)."""

    def s3a_settings(self) -> Mapping[str, str]:
        """Spark's Hadoop S3A settings (``fs.s3a.*``), for :func:`tfos.fs.s3a_env`."""

    def check_request(self, request: Request, config: Settings) -> None:
        """Raises ConfigError for what this kind of session cannot run."""

    def check_placement(self, nodes: int, wait: float, parallel: bool = False) -> int | None:
        """Checks that Spark runs ``nodes`` tasks at once (``parallel``: TFParallel instances); returns the free
        task slots when it knows them."""


@dataclasses.dataclass(frozen=True)
class Request:
    """The arguments of ``TFCluster.run``, as given."""

    map_fun: Callable[[Any, Any], Any]
    tf_args: Any
    num_executors: int
    num_ps: int = 0
    tensorboard: bool = False
    input_mode: int = TENSORFLOW_MODE
    log_dir: str | None = None
    driver_ps_nodes: bool = False
    master_node: str | None = None
    reservation_timeout: float = 600
    eval_node: bool = False
    release_port: bool = True
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def driver_ps(self) -> int:
        """ps nodes that run on driver threads (``driver_ps_nodes=True``)."""
        return self.num_ps if self.driver_ps_nodes else 0


@dataclasses.dataclass(frozen=True)
class Launch:
    """A validated request, ready to start: its settings, its roles, the spec every node gets."""

    settings: Settings
    template: dict
    spec: LaunchSpec
    spark_nodes: int  # nodes that run as Spark tasks
    slots: int | None  # free task slots, when the backend knows


def prepare(backend: Backend, request: Request) -> Launch:
    """Validates ``request`` on ``backend``, builds the settings and the nodes' launch spec.

    Raises:
        ConfigError: invalid arguments, a setting the backend cannot honour, ``map_fun``/``tf_args`` not picklable.
        PlacementError: Spark cannot run the nodes at once.
    """
    template = check_request(request)
    settings = dict(request.settings)
    if settings.get("gpus_per_node") is None and num_gpus(request.tf_args) is not None:
        settings["gpus_per_node"] = num_gpus(request.tf_args)  # TensorFlowOnSpark's tf_args.num_gpus
    config = from_env(reservation_timeout=float(request.reservation_timeout), **settings)
    backend.check_request(request, config)
    fn_bytes = dumps_for_nodes(request.map_fun, "main_fun", f" It must not capture the {backend.session_word}, open files, "
                       "locks or sockets. Define it at module level and pass what it needs through args.")
    args_bytes = dumps_for_nodes(request.tf_args, "tf_args")
    legacy = _keras.choose(config.legacy_keras, request.map_fun, _keras.script_source(request.tf_args)) \
        == _keras.TF_KERAS
    spark_nodes = request.num_executors - request.driver_ps
    slots = backend.check_placement(spark_nodes, config.slot_wait_timeout)
    conf = backend.conf()
    cluster_id = secrets.token_hex(8)
    spec = LaunchSpec(
        cluster_id=cluster_id, control_address="", secret=secrets.token_hex(32), template=template,
        fn=fn_bytes, args=args_bytes, default_fs=backend.default_fs(), working_dir=os.getcwd(),
        log_dir=request.log_dir, tensorboard=bool(request.tensorboard), input_mode=request.input_mode,
        release_port=request.release_port, legacy_keras=legacy,
        heartbeat_interval=config.heartbeat_interval, reservation_timeout=config.reservation_timeout,
        stop_grace_secs=config.stop_grace_secs, log_tail_lines=config.log_tail_lines,
        forward_logs=backend.forward_logs and config.forward_logs != "0", forward_all=config.forward_logs == "all",
        gpus_per_node=config.gpus_per_node, gpu_lock_dir=config.gpu_lock_dir,
        extra_env=s3a_env(backend.s3a_settings()),
        backup_dir=default_backup_dir(request.log_dir, os.getcwd(), cluster_id),
        preimport=modules_for(config.preimport, request.map_fun, legacy),
        feed_queue_chunks=config.feed_queue_chunks,
        user_env=user_env_names(conf), node_threads=config.node_threads,
        memory_note=_memory.launch_memory(conf, config.node_memory_mb, logger.warning),
    )
    return Launch(settings=config, template=template, spec=spec, spark_nodes=spark_nodes, slots=slots)


def check_request(request: Request) -> dict:
    """The checks every backend shares; returns the role template."""
    if not callable(request.map_fun):
        raise ConfigError(f"map_fun must be callable, got {type(request.map_fun).__name__}")
    if request.input_mode not in (TENSORFLOW_MODE, SPARK_MODE):
        raise ConfigError(f"input_mode must be InputMode.TENSORFLOW or InputMode.SPARK, got {request.input_mode!r}")
    if not isinstance(request.num_executors, int) or isinstance(request.num_executors, bool):
        raise ConfigError(f"num_executors must be an int, got {request.num_executors!r}")
    return make_template(request.num_executors, request.num_ps, request.master_node, request.eval_node)


def num_gpus(tf_args: Any) -> int | None:
    """``num_gpus`` of TensorFlowOnSpark-style args (an argparse Namespace or a dict), if it is an int."""
    value = tf_args.get("num_gpus") if isinstance(tf_args, dict) else getattr(tf_args, "num_gpus", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None



def prepare_instances(backend: Backend, map_fn: Callable[[Any, Any], Any], tf_args: Any, num_executors: Any,
                      use_barrier: bool, timeout: float | None, settings: Mapping[str, Any]) -> InstanceSpec:
    """``TFParallel.run``'s request, checked and built into the spec every instance task gets.

    Raises:
        ConfigError: invalid arguments, or ``map_fn``/``tf_args`` cannot be pickled.
        PlacementError: ``use_barrier`` and Spark cannot run the instances at once.
    """
    if not callable(map_fn):
        raise ConfigError(f"map_fn must be callable, got {type(map_fn).__name__}")
    check_instance_count(num_executors, timeout)
    settings = dict(settings)
    if settings.get("gpus_per_node") is None and num_gpus(tf_args) is not None:
        settings["gpus_per_node"] = num_gpus(tf_args)  # TensorFlowOnSpark's tf_args.num_gpus
    config = from_env(**settings)
    spec = InstanceSpec(
        fn=dumps_for_nodes(ReturnsResult(map_fn, num_executors), "map_fn",
                           f" It must not capture the {backend.session_word}, open files, locks or sockets; define "
                           "it at module level and pass what it needs through tf_args."),
        args=dumps_for_nodes(tf_args, "tf_args"),
        num_executors=num_executors, use_barrier=bool(use_barrier), default_fs=backend.default_fs(),
        working_dir=os.getcwd(), legacy_keras=_keras.choose(config.legacy_keras, map_fn) == _keras.TF_KERAS,
        stop_grace_secs=config.stop_grace_secs,
        log_tail_lines=config.log_tail_lines, timeout=float(timeout) if timeout is not None else None,
        gpus_per_node=config.gpus_per_node, gpu_lock_dir=config.gpu_lock_dir,
        user_env=user_env_names(backend.conf()), node_threads=config.node_threads,
    )
    if use_barrier:
        backend.check_placement(num_executors, config.slot_wait_timeout, parallel=True)
    return spec


def check_instance_count(num_executors: Any, timeout: Any) -> None:
    """Raises ConfigError for a bad ``num_executors`` or ``timeout`` of ``TFParallel.run``."""
    if not isinstance(num_executors, int) or isinstance(num_executors, bool) or num_executors < 1:
        raise ConfigError(f"num_executors must be an int >= 1, got {num_executors!r}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be > 0 seconds or None, got {timeout!r}")


def run_instance_job(make_job: Callable[[Callable[[], None]], Any], spec: InstanceSpec, over: str = "") -> list:
    """Runs TFParallel's instance stage and returns what its tasks returned, on either backend.

    Args:
        make_job: ``make_job(on_done)`` builds the stage as a :class:`tfos._driver.spark.BackgroundJob` (an RDD barrier
            job on a classic session, a DataFrame stage on Spark Connect) that calls ``on_done`` when it ends.
        spec: the instances' spec.
        over: how the stage is started, for the log (``" over Spark Connect"``).

    Raises:
        ClusterFailedError: the Spark stage failed (e.g. a lost executor). Ctrl-C (or any exception while waiting)
            cancels the stage before it propagates.
    """
    import threading
    import time

    from ..errors import NodeFailure

    n = spec.num_executors
    done = threading.Event()
    job = make_job(done.set)
    logger.info("starting %s TFParallel instances%s (barrier=%s)", n, over, spec.use_barrier)
    started = time.monotonic()
    job.start()
    try:
        while not done.wait(1.0):
            pass
    except BaseException:
        job.cancel()
        job.join(30)
        raise
    job.join(30)
    if job.error is not None:
        raise ClusterFailedError(
            [NodeFailure(-1, "spark job", time=time.time(),
                         message=f"the Spark stage running the TFParallel instances failed: {job.error_text()}")],
            "TFParallel failed.",
        ) from job.error
    logger.info("%s TFParallel instances ended in %.1fs", n, time.monotonic() - started)
    return job.results or []


def instance_results(reports: list[dict], num_executors: int) -> list:
    """The instances' return values in ``worker_num`` order; a ClusterFailedError listing every failed one."""
    import cloudpickle

    failures = [r["failure"] for r in reports if r["failure"] is not None]
    if failures:
        raise ClusterFailedError(failures, f"{len(failures)} of {num_executors} TFParallel instances failed.")
    return [cloudpickle.loads(r["result"]) if r["result"] is not None else None
            for r in sorted(reports, key=lambda r: r["worker_num"])]
