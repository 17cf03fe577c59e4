"""Independent single-node TF instances on Spark executors (TensorFlowOnSpark's ``TFParallel``).

``TFParallel.run(sc, map_fun, tf_args, num_executors)`` runs ``map_fun(tf_args, ctx)`` once per Spark task,
``num_executors`` tasks, with no TF cluster between them: batch inference over shards, per-partition jobs,
hyperparameter trials. ``ctx.worker_num`` (0..N-1) tells an instance which share is its own.

Each instance runs in a fresh child Python process (``python -m tfos._node.child``), not in the PySpark
worker, for the same reasons as :func:`tfos.TFCluster.run`'s nodes:

- its environment (``CUDA_VISIBLE_DEVICES`` for its own GPUs, ``TF_USE_LEGACY_KERAS``, no inherited
  ``TF_CONFIG``) is set before TensorFlow is imported. In a reused PySpark worker TensorFlow may
  already be imported by an earlier task (and has then fixed its visible GPUs), and an ``os.environ`` change
  would leak into later tasks;
- TensorFlow's threads and memory end with the instance: nothing stays behind in the executor's Python worker;
- an instance that crashes in native code, hangs past ``timeout`` or outlives its task is killed with its
  whole process group, and its traceback and last output lines come back to the driver.

GPUs are chosen as for :func:`tfos.TFCluster.run`'s nodes (see :mod:`tfos._node.gpus`): the GPUs Spark
assigned to the task when Spark schedules GPUs; otherwise ``gpus_per_node`` free GPUs of the host, picked with
``nvidia-smi`` under a host-wide lock, so that instances on one host never share a GPU (TensorFlowOnSpark's
TFParallel chose GPUs the same way).

The cost is one Python start and one TensorFlow import per instance (a few seconds), small next to the work a
TF instance does.

Unlike TensorFlowOnSpark, ``run`` returns each instance's return value (in ``worker_num`` order) and raises
:class:`tfos.errors.ClusterFailedError` when instances fail, instead of failing Spark tasks (which Spark would
retry, re-running finished instances).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Callable

from ._driver import spark as _spark
from ._node.instance import DEFAULT_TIMEOUT, InstanceSpec, instance_task
from .errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["run"]


def run(sc, map_fn: Callable[[Any, Any], Any] | None = None, tf_args: Any = None, num_executors: int | None = None,
        use_barrier: bool = True, timeout: float | None = DEFAULT_TIMEOUT, *,
        map_fun: Callable[[Any, Any], Any] | None = None, **settings: Any) -> list:
    """Runs ``map_fn(tf_args, ctx)`` as ``num_executors`` independent single-node TF instances, one per task.

    ``ctx`` has ``worker_num``/``executor_id`` (0..num_executors-1), ``num_workers`` (= ``num_executors``),
    ``defaultFS``, ``working_dir``, ``absolute_path()``, ``host`` and ``spark_executor_id``. There is no
    ``TF_CONFIG``: every instance is a cluster of one.

    Each instance's process sees only its own GPUs (``CUDA_VISIBLE_DEVICES``): the GPUs Spark assigned to its
    task when Spark schedules GPUs (``spark.task.resource.gpu.amount``); otherwise ``gpus_per_node``
    (``TFOS_GPUS_PER_NODE``, or ``tf_args.num_gpus``; default 1) GPUs of the host that ``nvidia-smi`` shows
    free or least used and that no other tfos instance or node on the host holds (with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``); ``gpus_per_node=0`` hides every GPU. Where ``nvidia-smi`` is missing or
    finds no GPU the variable is left as the executor has it. Its environment also holds
    ``TF_USE_LEGACY_KERAS`` (``1`` or ``0``: the Keras :mod:`tfos._node.keras_choice` picks), ``TFOS_WORKER_NUM`` and
    ``PYTHONUNBUFFERED=1``.
    Its output goes to the executor's stderr, each line prefixed with ``[instance:N]``.

    Args:
        sc: a SparkContext, a classic SparkSession, or a Spark Connect SparkSession.
        map_fn: ``map_fn(tf_args, ctx)``; picklable with cloudpickle. Its return value (picklable, small:
            it travels through Spark's collect) is returned to the driver. TensorFlowOnSpark's name for it.
        tf_args: passed to ``map_fn``; a list is also set as ``sys.argv`` in the TF process.
        num_executors: number of instances (Spark tasks).
        use_barrier: run the instances as one Spark barrier stage, so they all start together, and check first
            that Spark has ``num_executors`` free task slots (raising :class:`PlacementError` otherwise).
            Without it the tasks run as slots free up, possibly several in turn on one executor.
        timeout: seconds an instance may run before it is stopped and reported as failed; None waits forever.
        map_fun: the same as ``map_fn`` (the name ``TFCluster.run`` uses), as a keyword; give one of the two.
        **settings: tfos settings (see :mod:`tfos.config`): ``slot_wait_timeout``, ``stop_grace_secs``,
            ``legacy_keras``, ``log_tail_lines``, ``gpus_per_node``, ``gpu_lock_dir``.

    Returns:
        The instances' return values, in ``worker_num`` order.

    Raises:
        ConfigError: invalid arguments, or ``map_fn``/``tf_args`` cannot be pickled.
        PlacementError: ``use_barrier`` and Spark cannot run ``num_executors`` tasks at once, or dynamic
            allocation is on.
        ClusterFailedError: instances failed (including an instance that found too few free GPUs on its
            host); the message starts with the first failure's traceback and the ``failures`` attribute lists
            every failed instance. The Spark job failing for another reason (e.g. a lost executor) is reported
            the same way.
    """
    from ._connect.session import is_connect
    from ._driver.backends import ClassicBackend
    from ._driver.launch import check_instance_count, instance_results, prepare_instances

    map_fn = _map_fn_argument(map_fn, map_fun)
    check_instance_count(num_executors, timeout)  # before the session: a wrong call fails the same everywhere
    if is_connect(sc):  # no SparkContext: the instances start through a DataFrame stage
        from ._connect.parallel import run as run_connect

        return run_connect(sc, map_fn, tf_args, num_executors, use_barrier, timeout, **settings)
    sc = _spark.spark_context(sc)
    spec = prepare_instances(ClassicBackend(sc), map_fn, tf_args, num_executors, use_barrier, timeout, settings)
    return instance_results(_collect(sc, spec), spec.num_executors)


def _map_fn_argument(map_fn: Any, map_fun: Any) -> Callable:
    """The function to run, given as ``map_fn`` (positional or keyword) or as the keyword ``map_fun``."""
    if map_fn is not None and map_fun is not None:
        raise ConfigError("TFParallel.run got both map_fn and map_fun; they are two names for the same argument, "
                          "pass one")
    if map_fn is None and map_fun is None:
        raise ConfigError("TFParallel.run needs the function to run: TFParallel.run(sc, map_fun, tf_args, "
                          "num_executors), or map_fun=... (alias map_fn=...)")
    name, fn = ("map_fn", map_fn) if map_fn is not None else ("map_fun", map_fun)
    if not callable(fn):
        raise ConfigError(f"{name} must be callable, got {type(fn).__name__}")
    return fn


def _collect(sc, spec: InstanceSpec) -> list[dict]:
    """Runs the instance stage as a tagged RDD job (a barrier job with ``use_barrier``)."""
    from ._driver.launch import run_instance_job

    n = spec.num_executors

    def action() -> list:
        rdd = sc.parallelize(range(n), n)
        rdd = rdd.barrier() if spec.use_barrier else rdd
        return rdd.mapPartitions(_spark.bind(instance_task, spec)).collect()

    return run_instance_job(lambda on_done: _spark.BackgroundJob(
        sc, action, f"tfos-parallel-{secrets.token_hex(4)}", f"tfos: {n} TFParallel instances", on_done=on_done), spec)
