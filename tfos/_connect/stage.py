"""What Spark tasks run under Spark Connect: the barrier node stage and the small jobs that talk to node 0.

Node stage (``spark.range(0, n, 1, n).mapInArrow(node_batches, "summary string", barrier=True)``): each task
finds its address, node 0 starts the control server, one ``allGather`` hands node 0's address to every task,
then each task runs its node's supervisor exactly as in classic mode, with node 0 in the driver's place. Each
task yields one row: its node's JSON summary; node 0's row also carries the cluster's final state (phase,
failures with tracebacks, node table). No task raises for a node failure: Spark would retry the whole stage.

Finish job (``finish_batches``, one task): ends the feed, waits for training to end, stops the service nodes
and reads node 0's final state (InputMode.SPARK, where the nodes outlive the node stage).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Iterable, Iterator, Sequence

from .._control.finish import finish, nodes_gone
from .._node.gpus import visible_devices
from .._node.spark_task import launch_detached, node_host, spark_executor
from .._node.spec import SPARK_MODE, NodePlace
from .._node.supervisor import run_node
from ..errors import NodeFailure
from .control import ConnectSpec, ControlHost, StateClient, launch_detached_host

NODE_SCHEMA = "summary string"
FINISH_SCHEMA = "summary string"


def _row(summary: dict):
    import pyarrow as pa

    return pa.RecordBatch.from_pydict({"summary": [json.dumps(summary)]},
                                      schema=pa.schema([("summary", pa.string())]))


def node_batches(spec: ConnectSpec, batches: Iterable) -> Iterator:
    """``mapInArrow(..., barrier=True)`` body of the node stage: partition ``i`` becomes TF node ``i``."""
    for _ in batches:  # consume the input so PySpark can reuse this worker
        pass
    from pyspark import BarrierTaskContext

    yield _row(_run_task(spec, BarrierTaskContext.get()))


def _run_task(spec: ConnectSpec, ctx) -> dict:
    partition = ctx.partitionId()
    executor_id, executor_pid = spark_executor()
    summary = {"worker_num": partition, "executor_id": executor_id, "outcome": "failed", "control": ""}
    control, address, cert, error = None, "", b"", ""
    try:
        infos = ctx.getTaskInfos()
        host = node_host(infos[partition].address, infos[0].address)
        summary["host"] = host
        if partition == 0:
            if spec.launch.input_mode == SPARK_MODE:
                address, cert = launch_detached_host(spec, host, executor_pid)
            else:
                control = ControlHost(spec, host)
                address, cert = control.start(), control.certificate
    except Exception as exc:  # noqa: BLE001 - every task must reach allGather, or the others wait forever
        error = f"{type(exc).__name__}: {exc}"
    message = json.dumps({"control": address, "cert": cert.decode(), "error": error})
    gathered = [json.loads(m) for m in ctx.allGather(message)]
    errors = {n: m["error"] for n, m in enumerate(gathered) if m["error"]}
    address, cert = gathered[0]["control"], gathered[0]["cert"].encode()  # node 0's certificate is public
    summary["control"], summary["control_cert"] = address, gathered[0]["cert"]
    if errors:
        return _not_started(spec, control, address, partition, errors, summary, cert)
    launch = dataclasses.replace(spec.launch, control_address=address, control_cert=cert)
    place = NodePlace(
        worker_num=partition, host=host, executor_id=executor_id, attempt=ctx.attemptNumber(),
        sys_path=tuple(p for p in sys.path if p), watch_pid=executor_pid, cpus=ctx.cpus(),
        gpus=visible_devices(_assigned_gpus(ctx), os.environ.get("CUDA_VISIBLE_DEVICES")),
    )
    summary.update(_start_node(launch, place))
    if partition == 0:
        summary["state"] = _final_state(control, address, launch)
    return summary


def _assigned_gpus(ctx) -> list[str] | None:
    resources = ctx.resources() or {}
    return list(resources["gpu"].addresses) if "gpu" in resources else None


def _not_started(spec: ConnectSpec, control: ControlHost | None, address: str, partition: int,
                 errors: dict[int, str], summary: dict, cert: bytes = b"") -> dict:
    """Some task could not prepare its node (or node 0 its control server): no node starts."""
    summary["outcome"] = "aborted"
    if partition != 0:
        return summary
    if control is not None:
        control.stop()
    elif address:  # a detached control server: close it
        with StateClient(address, spec.launch.secret, unavailable_timeout=5, root_cert=cert) as client:
            client.call("Close")
    failures = [NodeFailure(n, host="", time=time.time(), message=(
        f"node {n} could not prepare: {text}" + (" (node 0 hosts the TF cluster's control server under Spark "
                                                "Connect)" if n == 0 else ""))) for n, text in errors.items()]
    summary["state"] = {"phase": "failed", "failures": [dataclasses.asdict(f) for f in failures], "nodes": []}
    return summary


def _start_node(launch, place: NodePlace) -> dict:
    """Runs the node (InputMode.TENSORFLOW) or starts it detached (InputMode.SPARK); never raises."""
    if launch.input_mode != SPARK_MODE:
        return run_node(launch, place)
    try:
        return launch_detached(launch, place, launch.reservation_timeout + 60)
    except Exception as exc:  # noqa: BLE001 - tell node 0, so the whole cluster stops and the client hears why
        from .._control.client import ControlClient

        failure = NodeFailure(place.worker_num, "", place.host, place.executor_id, time.time(),
                              message=f"the node's supervisor did not start: {type(exc).__name__}: {exc}")
        try:
            with ControlClient(launch.control_address, launch.secret, unavailable_timeout=10,
                               root_cert=launch.control_cert) as client:
                client.report_exit(place.worker_num, failure)
        except Exception:  # noqa: BLE001 - node 0 is gone too; its own row says why
            pass
        return {"outcome": "failed", "error": failure.message}


def _final_state(control: ControlHost | None, address: str, launch) -> dict:
    """Node 0: the cluster's state once it ended (in-task host), or right after every node started (detached)."""
    if control is not None:
        try:
            control.wait_ended()
            return control.state()
        finally:
            control.stop()
    with StateClient(address, launch.secret, root_cert=launch.control_cert) as client:
        return client.call("State")


# ----- the finish job (InputMode.SPARK) ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FinishSpec:
    """What the finish job does. ``mode``: ``shutdown`` (end feed, wait, stop), ``state`` (read; if the cluster
    failed, wait for its nodes to stop and close the host), ``peek`` (read only) or ``abort`` (fail the
    cluster, wait, close)."""

    control: str
    secret: str = dataclasses.field(repr=False)
    mode: str = "shutdown"
    feed_addresses: Sequence[str] = ()
    timeout: float | None = None
    grace_secs: float = 0.0
    stop_wait: float = 30.0
    reason: str = ""
    control_cert: bytes = dataclasses.field(default=b"", repr=False)  # node 0's TLS certificate, if it serves TLS


def finish_batches(spec: FinishSpec, batches: Iterable) -> Iterator:
    """``mapInArrow`` body of the one-task finish job; yields ``{"state": ..., "timed_out": bool}``."""
    for _ in batches:
        pass
    with StateClient(spec.control, spec.secret, root_cert=spec.control_cert) as client:
        yield _row(_finish(spec, client))


def _finish(spec: FinishSpec, client: StateClient) -> dict:
    timed_out = False
    if spec.mode == "shutdown":
        from .._feed.client import end_feed

        end_feed(spec.feed_addresses, spec.secret)
        timed_out = finish(_Node0(client), spec.timeout, spec.grace_secs, spec.stop_wait)[1] == "timeout"
    elif spec.mode == "abort":
        client.call("Abort", {"who": "client", "reason": spec.reason or "stopped by the client"})
    state = client.call("State")
    if spec.mode == "peek":
        return {"state": state, "timed_out": False}
    if spec.mode != "state" or state["phase"] == "failed":
        _Node0(client).wait(nodes_gone, spec.stop_wait)
        state = client.call("Close")
    return {"state": state, "timed_out": timed_out}


class _Node0:
    """Node 0's cluster state, through its state service (a :class:`~tfos._control.finish.ClusterState`)."""

    def __init__(self, client: StateClient, poll: float = 0.5) -> None:
        self.client = client
        self.poll = poll

    def wait(self, done, timeout: float | None) -> tuple[dict, bool]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.client.call("State")
            if done(state):
                return state, False
            if deadline is not None and time.monotonic() >= deadline:
                return state, True
            time.sleep(self.poll)

    def stop(self) -> None:
        self.client.call("Stop")

    def abort(self, reason: str) -> None:
        self.client.call("Abort", {"who": "client", "reason": reason})
