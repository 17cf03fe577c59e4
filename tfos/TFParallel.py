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

import dataclasses
import logging
import os
import pickle
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterator

from . import _keras, _spark
from ._pickle import dumps_for_nodes
from ._node import ERROR_FILE_ENV
from ._node.gpus import GpuClaim, claim_gpus, visible_devices
from ._node.supervisor import _OutputPump, _describe_exit, _read_error_file, _stop_process_group
from .config import from_env
from .errors import ClusterFailedError, ConfigError, NodeFailure, PlacementError

logger = logging.getLogger(__name__)

__all__ = ["run"]

RESULT_FILE_ENV = "TFOS_RESULT_FILE"
# Three days, as TFCluster.shutdown: every instance ends, or is killed, within this.
DEFAULT_TIMEOUT = 259200.0


@dataclasses.dataclass(frozen=True)
class _InstanceSpec:
    """What every instance task needs, built once on the driver."""

    fn: bytes = dataclasses.field(repr=False)
    args: bytes = dataclasses.field(repr=False)
    num_executors: int
    use_barrier: bool
    default_fs: str
    working_dir: str
    legacy_keras: bool
    stop_grace_secs: float
    log_tail_lines: int
    timeout: float
    # Defaults as in tfos.config, for callers that build the spec without them.
    gpus_per_node: int = 1
    gpu_lock_dir: str = ""


class _ReturnsResult:
    """Wraps ``map_fun`` in the TF process: gives ctx the instance count and pickles the return value."""

    def __init__(self, fn: Callable, num_workers: int) -> None:
        self.fn = fn
        self.num_workers = num_workers

    def __call__(self, args: Any, ctx: Any) -> None:
        import cloudpickle

        ctx.num_workers = self.num_workers
        result = self.fn(args, ctx)
        path = os.environ.get(RESULT_FILE_ENV)
        if path:
            try:
                data = cloudpickle.dumps(result)
            except Exception as exc:
                raise TypeError(f"TFParallel: map_fun's return value cannot be pickled "
                                f"({type(exc).__name__}: {exc}); return plain data (numbers, dicts, lists)") from exc
            with open(path, "wb") as f:
                f.write(data)


def instance_env(base: dict, legacy_keras: bool, gpus: str | None, sys_path: tuple, error_file: str,
                 result_file: str, worker_num: int, extra: dict | None = None) -> dict[str, str]:
    """The environment of one instance's TF process: the executor's, minus ``TF_CONFIG``, plus tfos's.

    ``extra`` holds what the GPU choice adds (``CUDA_DEVICE_ORDER``, see :class:`tfos._node.gpus.GpuClaim`).
    """
    env = {k: v for k, v in base.items() if k != "TF_CONFIG"}
    env["TF_USE_LEGACY_KERAS"] = "1" if legacy_keras else "0"  # one Keras in the instance (tfos._keras)
    env.update(extra or {})
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*sys_path, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env[ERROR_FILE_ENV] = error_file
    env[RESULT_FILE_ENV] = result_file
    env["TFOS_WORKER_NUM"] = str(worker_num)
    return env


def _task_context(use_barrier: bool):
    from pyspark import BarrierTaskContext, TaskContext

    return BarrierTaskContext.get() if use_barrier else TaskContext.get()


@dataclasses.dataclass(frozen=True)
class _Where:
    """Where one instance runs."""

    worker_num: int
    executor_id: str
    host: str


def instance_task(spec: _InstanceSpec, iterator: Iterator) -> Iterator[dict]:
    """``mapPartitions`` body: partition ``i`` runs instance ``i`` in a child process and reports how it ended."""
    import socket

    for _ in iterator:  # consume the input so PySpark can reuse this worker
        pass
    from ._node.spark_task import spark_executor

    ctx = _task_context(spec.use_barrier)
    resources = ctx.resources() or {}
    assigned = list(resources["gpu"].addresses) if "gpu" in resources else None
    gpus = visible_devices(assigned, os.environ.get("CUDA_VISIBLE_DEVICES"))
    where = _Where(ctx.partitionId(), spark_executor()[0], socket.gethostname())
    workdir = tempfile.mkdtemp(prefix=f"tfos-parallel{where.worker_num}-")
    claim = None
    try:
        if gpus is None:  # Spark does not schedule GPUs: take free ones of this host, as TFCluster's nodes do
            claim = _claim_gpus(spec, where.worker_num)
        report = _run_instance(spec, where, claim.devices if claim else gpus, claim.env if claim else {}, workdir)
    except PlacementError as exc:  # too few free GPUs: the driver reports it, rather than Spark retrying the task
        report = _report(where, NodeFailure(where.worker_num, f"instance:{where.worker_num}", where.host,
                                            where.executor_id, time.time(), message=str(exc)))
    finally:
        if claim is not None:
            claim.release()
        shutil.rmtree(workdir, ignore_errors=True)
    yield report


def _claim_gpus(spec: _InstanceSpec, worker_num: int) -> GpuClaim | None:
    """``gpus_per_node`` GPUs of this host for an instance Spark gave none (see :func:`tfos._node.gpus.claim_gpus`)."""
    return claim_gpus(spec.gpus_per_node, f"TFParallel instance {worker_num}", spec.gpu_lock_dir,
                      os.environ.get("CUDA_VISIBLE_DEVICES"))


def _report(where: _Where, failure: NodeFailure | None = None, result: bytes | None = None) -> dict:
    return {"worker_num": where.worker_num, "executor_id": where.executor_id, "host": where.host,
            "result": result, "failure": failure}


def _run_instance(spec: _InstanceSpec, where: _Where, gpus: str | None, gpu_env: dict, workdir: str) -> dict:
    worker_num = where.worker_num
    error_file = os.path.join(workdir, "error.json")
    result_file = os.path.join(workdir, "result.pkl")
    sys_path = tuple(p for p in sys.path if p)
    env = instance_env(dict(os.environ), spec.legacy_keras, gpus, sys_path, error_file, result_file, worker_num,
                       gpu_env)
    payload = {
        "parent_pid": os.getpid(), "fn": spec.fn, "args": spec.args, "sys_path": list(sys_path),
        "tmp_fd": None, "feed_fd": None, "secret": None,
        "ctx": {"worker_num": worker_num, "job_name": "worker", "task_index": worker_num, "cluster_spec": {},
                "defaultFS": spec.default_fs, "working_dir": spec.working_dir, "host": where.host,
                "spark_executor_id": where.executor_id},
    }
    proc = subprocess.Popen([sys.executable, "-m", "tfos._node.child"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=os.getcwd())
    pump = _OutputPump(proc.stdout, f"instance:{worker_num}", spec.log_tail_lines)
    pump.start()
    try:
        proc.stdin.write(pickle.dumps(payload))
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died at once; its exit status tells why
    timed_out = False
    try:
        proc.wait(timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.poll() is None:
            _stop_process_group(proc, spec.stop_grace_secs)
        pump.join(timeout=5)
    code = proc.returncode
    if code == 0 and not timed_out:
        if os.path.exists(result_file):
            with open(result_file, "rb") as f:
                return _report(where, result=f.read())
        return _report(where)
    record = _read_error_file(error_file)
    message = (f"did not finish within timeout={spec.timeout:.0f}s and was stopped" if timed_out
               else record.get("message") or _describe_exit(code))
    return _report(where, NodeFailure(
        worker_num, f"instance:{worker_num}", where.host, where.executor_id, record.get("time", time.time()),
        exit_code=code if code is not None and code >= 0 else None,
        signal=-code if code is not None and code < 0 else None,
        message=message, traceback=record.get("traceback", ""), log_tail="\n".join(pump.tail),
    ))


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
    ``TF_USE_LEGACY_KERAS`` (``1`` or ``0``: the Keras :mod:`tfos._keras` picks), ``TFOS_WORKER_NUM`` and
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
    import cloudpickle

    from ._connect.session import is_connect
    from .cluster import _num_gpus

    map_fn = _map_fn_argument(map_fn, map_fun)
    _check_arguments(num_executors, timeout)
    if settings.get("gpus_per_node") is None and _num_gpus(tf_args) is not None:
        settings["gpus_per_node"] = _num_gpus(tf_args)  # TensorFlowOnSpark's tf_args.num_gpus
    if is_connect(sc):  # no SparkContext: the instances start through a DataFrame stage
        from ._connect.parallel import run as run_connect

        return run_connect(sc, map_fn, tf_args, num_executors, use_barrier, timeout, **settings)
    sc = _spark.spark_context(sc)
    config = from_env(**settings)
    spec = _InstanceSpec(
        fn=dumps_for_nodes(_ReturnsResult(map_fn, num_executors), "map_fn",
                           " It must not capture the SparkContext, open files, locks or sockets; define it at module "
                           "level and pass what it needs through tf_args."),
        args=dumps_for_nodes(tf_args, "tf_args", ""),
        num_executors=num_executors, use_barrier=bool(use_barrier), default_fs=_spark.default_fs(sc),
        working_dir=os.getcwd(), legacy_keras=_keras.choose(config.legacy_keras, map_fn) == _keras.TF_KERAS,
        stop_grace_secs=config.stop_grace_secs,
        log_tail_lines=config.log_tail_lines, timeout=float(timeout) if timeout is not None else None,
        gpus_per_node=config.gpus_per_node, gpu_lock_dir=config.gpu_lock_dir,
    )
    if use_barrier:
        _spark.check_placement(sc, num_executors, config.slot_wait_timeout, parallel=True)
    reports = _collect(sc, spec)
    failures = [r["failure"] for r in reports if r["failure"] is not None]
    if failures:
        raise ClusterFailedError(failures, f"{len(failures)} of {num_executors} TFParallel instances failed.")
    return [cloudpickle.loads(r["result"]) if r["result"] is not None else None
            for r in sorted(reports, key=lambda r: r["worker_num"])]


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


def _check_arguments(num_executors: Any, timeout: Any) -> None:
    if not isinstance(num_executors, int) or isinstance(num_executors, bool) or num_executors < 1:
        raise ConfigError(f"num_executors must be an int >= 1, got {num_executors!r}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be > 0 seconds or None, got {timeout!r}")



def _collect(sc, spec: _InstanceSpec) -> list[dict]:
    """Runs the instance stage as a tagged Spark job; a Spark failure becomes a ClusterFailedError."""
    n = spec.num_executors

    def action() -> list:
        rdd = sc.parallelize(range(n), n)
        rdd = rdd.barrier() if spec.use_barrier else rdd
        return rdd.mapPartitions(_spark.bind(instance_task, spec)).collect()

    done = threading.Event()
    tag = f"tfos-parallel-{secrets.token_hex(4)}"
    job = _spark.BackgroundJob(sc, action, tag, f"tfos: {n} TFParallel instances", on_done=done.set)
    logger.info("starting %s TFParallel instances (barrier=%s)", n, spec.use_barrier)
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
