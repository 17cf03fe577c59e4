"""The Spark side of a node: the function each (barrier) task runs, and what it learns from Spark."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Iterator

from .gpus import visible_devices
from .supervisor import LaunchSpec, NodePlace, run_node


def spark_executor_id() -> str:
    """The Spark executor id of this Python worker, read from the executor JVM's command line."""
    if os.environ.get("SPARK_EXECUTOR_ID"):
        return os.environ["SPARK_EXECUTOR_ID"]
    try:
        import psutil

        proc = psutil.Process().parent()
        for _ in range(4):
            if proc is None:
                break
            cmd = proc.cmdline()
            if "--executor-id" in cmd:
                return cmd[cmd.index("--executor-id") + 1]
            if any("SparkSubmit" in part for part in cmd):
                return "driver"
            proc = proc.parent()
    except Exception:  # noqa: BLE001 - only used for messages
        pass
    return ""


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


def _task_host(ctx, partition: int, control_address: str) -> str:
    infos = getattr(ctx, "getTaskInfos", None)
    if infos is not None:
        address = infos()[partition].address
        host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address.rsplit(":", 1)[0].strip("[]")
        if host:
            return host
    return local_address_towards(control_address)


def node_partition(spec: LaunchSpec, offset: int, iterator: Iterator) -> Iterator[str]:
    """``mapPartitions`` body of the node stage: partition ``i`` becomes TF node ``offset + i``."""
    for _ in iterator:  # consume the input so PySpark can reuse this worker
        pass
    from pyspark import BarrierTaskContext, TaskContext

    try:
        ctx = BarrierTaskContext.get()
    except Exception:  # noqa: BLE001 - not a barrier stage
        ctx = TaskContext.get()
    partition = ctx.partitionId()
    resources = ctx.resources() or {}
    assigned = list(resources["gpu"].addresses) if "gpu" in resources else None
    place = NodePlace(
        worker_num=offset + partition,
        host=_task_host(ctx, partition, spec.control_address),
        executor_id=spark_executor_id(),
        attempt=ctx.attemptNumber(),
        sys_path=tuple(p for p in sys.path if p),
        gpus=visible_devices(assigned, os.environ.get("CUDA_VISIBLE_DEVICES")),
    )
    yield json.dumps(run_node(spec, place))
