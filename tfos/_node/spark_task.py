"""The Spark side of a node: the function each (barrier) task runs, and what it learns from Spark."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Iterator

from .gpus import visible_devices
from .spec import SPARK_MODE, LaunchSpec, NodePlace
from .supervisor import run_node


def spark_executor() -> tuple[str, int | None]:
    """This Python worker's Spark executor: its id (from the JVM's command line) and the JVM's pid."""
    try:
        import psutil

        proc = psutil.Process().parent()
        for _ in range(4):
            if proc is None:
                break
            cmd = proc.cmdline()
            if "--executor-id" in cmd:
                return cmd[cmd.index("--executor-id") + 1], proc.pid
            if any("SparkSubmit" in part for part in cmd):
                return "driver", proc.pid
            proc = proc.parent()
    except Exception:  # noqa: BLE001 - only used for messages and liveness
        pass
    return os.environ.get("SPARK_EXECUTOR_ID", ""), None


def launch_detached(spec: LaunchSpec, place: NodePlace, timeout: float) -> dict:
    """Starts ``tfos._node.detached`` for this node and returns once its TF process is up (InputMode.SPARK)."""
    import pickle
    import select
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "tfos._node.detached"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, start_new_session=True)
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None  # both are pipes
    stdin.write(pickle.dumps((spec, place)))
    stdin.close()
    if not select.select([stdout], [], [], timeout)[0]:
        proc.kill()
        raise TimeoutError(f"node {place.worker_num} did not start within {timeout:.0f}s")
    line = stdout.readline().decode()
    stdout.close()
    word, _, rest = line.partition(" ")
    if word not in ("READY", "DONE"):
        code = proc.wait(timeout=10)
        raise RuntimeError(f"the detached supervisor of node {place.worker_num} exited with code {code} "
                           "before the node started; see this executor's stderr")
    return {"worker_num": place.worker_num, "outcome": "started" if word == "READY" else "ended",
            **json.loads(rest or "{}")}


def local_address_towards(address: str) -> str:
    """The local IP address this host uses to reach ``address`` (``host:port``); sends no packet."""
    host = address.rsplit(":", 1)[0].strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def node_host(task_address: str | None, control_address: str, environ=None,
              towards=local_address_towards) -> str:
    """The address other hosts reach this node at (it goes into ``TF_CONFIG``, the feed and TensorBoard's URL).

    1. The executor's address as Spark knows it (``BarrierTaskContext.getTaskInfos``): the host the worker
       registered on standalone and YARN, the pod IP on Kubernetes (Spark starts executors with it).
    2. When that is missing, or a loopback address (a hostname mapped to 127.0.1.1 in /etc/hosts) while the
       driver is on another host: ``SPARK_LOCAL_IP``, then ``SPARK_EXECUTOR_POD_IP``, then the local address
       that routes to the driver's control server.

    Args:
        task_address: ``host:port`` of this task's executor, or None.
        control_address: the driver's control server, ``host:port``.
        environ: the environment to read (``os.environ`` when None).
        towards: returns the local address that routes to a ``host:port``.
    """
    environ = os.environ if environ is None else environ
    driver_local = _is_loopback(control_address.rsplit(":", 1)[0].strip("[]"))
    if task_address:
        host = task_address.rsplit(":", 1)[0].strip("[]") if ":" in task_address else task_address
        if host and (driver_local or not _is_loopback(host)):
            return host
    for name in ("SPARK_LOCAL_IP", "SPARK_EXECUTOR_POD_IP"):
        value = environ.get(name, "").strip()
        if value and value not in ("0.0.0.0", "::") and (driver_local or not _is_loopback(value)):
            return value
    return towards(control_address)


def _task_host(ctx, partition: int, control_address: str) -> str:
    infos = getattr(ctx, "getTaskInfos", None)
    return node_host(infos()[partition].address if infos is not None else None, control_address)


def node_partition(spec: LaunchSpec, offset: int, iterator: Iterator) -> Iterator[str]:
    """``mapPartitions`` body of the node stage: partition ``i`` becomes TF node ``offset + i``."""
    for _ in iterator:  # consume the input so PySpark can reuse this worker
        pass
    from pyspark import BarrierTaskContext, TaskContext

    ctx: TaskContext | None
    try:
        ctx = BarrierTaskContext.get()
    except Exception:  # noqa: BLE001 - not a barrier stage
        ctx = TaskContext.get()
    if ctx is None:
        raise RuntimeError("a tfos node task runs only inside a Spark task (TaskContext.get() is None)")
    partition = ctx.partitionId()
    resources = ctx.resources() or {}
    assigned = list(resources["gpu"].addresses) if "gpu" in resources else None
    executor_id, executor_pid = spark_executor()
    place = NodePlace(
        worker_num=offset + partition,
        host=_task_host(ctx, partition, spec.control_address),
        executor_id=executor_id,
        attempt=ctx.attemptNumber(),
        sys_path=tuple(p for p in sys.path if p),
        gpus=visible_devices(assigned, os.environ.get("CUDA_VISIBLE_DEVICES")),
        watch_pid=executor_pid,
        cpus=ctx.cpus(),
    )
    if spec.input_mode == SPARK_MODE:
        yield json.dumps(launch_detached(spec, place, spec.reservation_timeout + 60))
    else:
        yield json.dumps(run_node(spec, place))
