"""One ``TFParallel`` instance on an executor: what its task is given, its TF process, and its report.

Shared by :func:`tfos.TFParallel.run` (an RDD ``mapPartitions`` stage) and its Spark Connect form
(:mod:`tfos._connect.parallel`, a ``mapInArrow`` stage), which both build an :class:`InstanceSpec` on the driver
and run :func:`instance_task` once per Spark task.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..errors import NodeFailure, PlacementError
from . import ERROR_FILE_ENV
from .environment import node_threads, tf_process_env
from .gpus import GpuClaim, claim_gpus, visible_devices
from .launcher import describe_exit, read_error_file, spawn

RESULT_FILE_ENV = "TFOS_RESULT_FILE"
# Three days, as TFCluster.shutdown: every instance ends, or is killed, within this.
DEFAULT_TIMEOUT = 259200.0


@dataclasses.dataclass(frozen=True)
class InstanceSpec:
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
    timeout: float | None  # seconds; None waits forever
    # Defaults as in tfos.config, for callers that build the spec without them.
    gpus_per_node: int = 1
    gpu_lock_dir: str = ""
    user_env: tuple = ()  # names the user set through spark.executorEnv.* (tfos._node.environment)
    node_threads: str = "task"


class ReturnsResult:
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


def instance_env(base: Mapping[str, str], spec: InstanceSpec, gpus: str | None, sys_path: tuple, error_file: str,
                 result_file: str, worker_num: int, extra: dict | None = None, cpus: int = 0) -> dict[str, str]:
    """The environment of one instance's TF process: the policy of :mod:`tfos._node.environment`, no ``TF_CONFIG``.

    ``extra`` holds what the GPU choice adds (``CUDA_DEVICE_ORDER``, see :class:`tfos._node.gpus.GpuClaim`);
    ``cpus`` is the task's cores (``TaskContext.cpus()``).
    """
    tfos_vars = {ERROR_FILE_ENV: error_file, RESULT_FILE_ENV: result_file, "TFOS_WORKER_NUM": str(worker_num)}
    return tf_process_env(base, user_names=spec.user_env, threads=node_threads(spec.node_threads, cpus),
                          legacy_keras=spec.legacy_keras, gpus=gpus, sys_path=sys_path, tfos_vars=tfos_vars,
                          extra=extra)


def _task_context(use_barrier: bool):
    from pyspark import BarrierTaskContext, TaskContext

    return BarrierTaskContext.get() if use_barrier else TaskContext.get()


@dataclasses.dataclass(frozen=True)
class _Where:
    """Where one instance runs."""

    worker_num: int
    executor_id: str
    host: str
    cpus: int = 0


def instance_task(spec: InstanceSpec, iterator: Iterable) -> Iterator[dict]:
    """``mapPartitions`` body: partition ``i`` runs instance ``i`` in a child process and reports how it ended."""
    import socket

    for _ in iterator:  # consume the input so PySpark can reuse this worker
        pass
    from .spark_task import spark_executor

    ctx = _task_context(spec.use_barrier)
    resources = ctx.resources() or {}
    assigned = list(resources["gpu"].addresses) if "gpu" in resources else None
    gpus = visible_devices(assigned, os.environ.get("CUDA_VISIBLE_DEVICES"))
    where = _Where(ctx.partitionId(), spark_executor()[0], socket.gethostname(), ctx.cpus())
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


def _claim_gpus(spec: InstanceSpec, worker_num: int) -> GpuClaim | None:
    """``gpus_per_node`` GPUs of this host for an instance Spark gave none (see :func:`tfos._node.gpus.claim_gpus`)."""
    return claim_gpus(spec.gpus_per_node, f"TFParallel instance {worker_num}", spec.gpu_lock_dir,
                      os.environ.get("CUDA_VISIBLE_DEVICES"))


def _report(where: _Where, failure: NodeFailure | None = None, result: bytes | None = None) -> dict:
    return {"worker_num": where.worker_num, "executor_id": where.executor_id, "host": where.host,
            "result": result, "failure": failure}


def _run_instance(spec: InstanceSpec, where: _Where, gpus: str | None, gpu_env: dict, workdir: str) -> dict:
    worker_num = where.worker_num
    error_file = os.path.join(workdir, "error.json")
    result_file = os.path.join(workdir, "result.pkl")
    sys_path = tuple(p for p in sys.path if p)
    env = instance_env(os.environ, spec, gpus, sys_path, error_file, result_file, worker_num, gpu_env, where.cpus)
    payload = {
        "parent_pid": os.getpid(), "fn": spec.fn, "args": spec.args, "sys_path": list(sys_path),
        "tmp_fd": None, "feed_fd": None, "secret": None,
        "ctx": {"worker_num": worker_num, "job_name": "worker", "task_index": worker_num, "cluster_spec": {},
                "defaultFS": spec.default_fs, "working_dir": spec.working_dir, "host": where.host,
                "spark_executor_id": where.executor_id},
    }
    child = spawn(env, f"instance:{worker_num}", spec.log_tail_lines)
    child.send(payload)
    try:
        timed_out = not child.wait(spec.timeout)
    finally:
        child.finish(spec.stop_grace_secs)
    code = child.returncode
    if code == 0 and not timed_out:
        if os.path.exists(result_file):
            with open(result_file, "rb") as f:
                return _report(where, result=f.read())
        return _report(where)
    record = read_error_file(error_file)
    message = (f"did not finish within timeout={spec.timeout:.0f}s and was stopped" if timed_out
               else record.get("message") or describe_exit(code))
    return _report(where, NodeFailure(
        worker_num, f"instance:{worker_num}", where.host, where.executor_id, record.get("time", time.time()),
        exit_code=code if code is not None and code >= 0 else None,
        signal=-code if code is not None and code < 0 else None,
        message=message, traceback=record.get("traceback", ""), log_tail="\n".join(child.pump.tail),
    ))
