"""The TF cluster's state on the driver, as a pure state machine.

No I/O and no waiting: every operation takes the current time from an injected clock, so unit tests drive it
with a fake one. The gRPC servicer (``server.py``) is a thin, locked shell around it.

Phases::

    RESERVING --all nodes registered--> RUNNING --training nodes exited 0--> STOPPING --all exited--> DONE
        \\__________________________________\\__ any node failed / lost / driver abort ______________--> FAILED

A node's heartbeat answers with a command: ``run`` (go on), ``stop`` (a service node, ps or evaluator, may
stop now: training is over) or ``abort`` (another node failed; stop at once).
"""

from __future__ import annotations

import dataclasses
import enum
import time
from typing import Callable, Mapping, Sequence

from ..errors import NodeFailure
from .._node.tf_config import make_cluster_spec, role_of, service_jobs

RUN, STOP, ABORT = "run", "stop", "abort"


class Phase(enum.Enum):
    RESERVING = "reserving"
    RUNNING = "running"
    STOPPING = "stopping"
    DONE = "done"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    """What a node tells the driver when it registers."""

    worker_num: int
    host: str
    port: int
    executor_id: str = ""
    pid: int = 0
    attempt: int = 0
    feed_port: int = 0

    @property
    def address(self) -> str:
        return _join(self.host, self.port)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclasses.dataclass
class _Node:
    info: NodeInfo
    job_name: str
    task_index: int
    last_seen: float
    exited: bool = False
    exit_ok: bool = False
    progress: dict = dataclasses.field(default_factory=dict)
    progress_at: float = 0.0  # when the node last made progress (driver clock)


# Heartbeat progress keys that are not progress: TensorBoard's address, and the age the supervisor reports.
_NOT_PROGRESS = frozenset({"tb_port", "tb_pid"})


def made_progress(before: Mapping, update: Mapping) -> bool:
    """Whether a heartbeat's progress ``update`` changes anything that counts as progress.

    Every key counts (steps, epochs, output activity, explicit reports) except TensorBoard's port and pid.
    """
    return any(before.get(key) != value for key, value in update.items() if key not in _NOT_PROGRESS)


class Reservation:
    """Tracks registration, liveness and exit of every node of one TF cluster.

    Args:
        template: ``{job_name: [worker_num, ...]}`` from ``make_template``.
        node_lost_timeout: seconds without a heartbeat after which a running node counts as lost.
        hang_timeout: seconds without progress after which a running chief/worker node counts as hung
            (0: never); service nodes (ps, evaluator) are not watched.
        clock: returns seconds; ``time.monotonic`` by default.
        wall_clock: returns seconds since the epoch, for failure timestamps.
    """

    def __init__(
        self,
        template: Mapping[str, Sequence[int]],
        node_lost_timeout: float = 30.0,
        hang_timeout: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.template = {job: list(nums) for job, nums in template.items()}
        self.expected = sorted(n for nums in self.template.values() for n in nums)
        self.service_jobs = service_jobs(self.template)
        self.node_lost_timeout = node_lost_timeout
        self.hang_timeout = hang_timeout
        self._clock = clock
        self._wall = wall_clock
        self.phase = Phase.RESERVING
        self.nodes: dict[int, _Node] = {}
        self.failures: list[NodeFailure] = []
        self.abort_reason = ""
        self._spec: dict[str, list[str]] | None = None

    # ----- node operations -------------------------------------------------------------------------------
    def register(self, info: NodeInfo) -> str:
        """Records a node. Returns ``run``, or ``abort`` when the cluster can no longer take it."""
        if info.worker_num not in self.expected:
            raise ValueError(f"node {info.worker_num} is not part of this cluster (nodes {self.expected})")
        if self.phase is not Phase.RESERVING:
            if self.phase is Phase.RUNNING and info.worker_num in self.nodes:
                # A task Spark retried after the cluster formed cannot rejoin a running TF cluster.
                self._fail(
                    NodeFailure(
                        worker_num=info.worker_num,
                        role=self._role_label(info.worker_num),
                        host=info.host,
                        executor_id=info.executor_id,
                        time=self._wall(),
                        message=(
                            f"Spark restarted node {info.worker_num} (attempt {info.attempt}) after the TF "
                            "cluster had formed; its previous attempt failed (see the executor log)"
                        ),
                    )
                )
            return ABORT
        job, index = role_of(self.template, info.worker_num)
        self.nodes[info.worker_num] = _Node(info, job, index, last_seen=self._clock())
        if len(self.nodes) == len(self.expected):
            now = self._clock()
            for node in self.nodes.values():
                node.last_seen = now  # liveness is counted from here: nodes heartbeat once they run
                node.progress_at = now
            addresses = {n: node.info.address for n, node in self.nodes.items()}
            self._spec = make_cluster_spec(self.template, addresses)
            self.phase = Phase.RUNNING
        return RUN

    def cluster_spec(self) -> dict[str, list[str]] | None:
        """The full cluster spec once every node registered, else None."""
        return self._spec

    def heartbeat(self, worker_num: int, progress: Mapping | None = None) -> str:
        node = self.nodes.get(worker_num)
        if node is None:
            return ABORT if self.phase is Phase.FAILED else RUN
        node.last_seen = self._clock()
        if progress:
            if made_progress(node.progress, progress):
                node.progress_at = node.last_seen
            node.progress.update(progress)
        return self.command_for(worker_num)

    def command_for(self, worker_num: int) -> str:
        if self.phase is Phase.FAILED:
            return ABORT
        node = self.nodes.get(worker_num)
        if self.phase in (Phase.STOPPING, Phase.DONE) and node is not None and (
            node.job_name in self.service_jobs or node.exited
        ):
            return STOP
        return RUN

    def report_exit(self, worker_num: int, failure: NodeFailure | None) -> None:
        """A node's TF process ended: ``failure`` is None on success (or when a service node was stopped)."""
        node = self.nodes.get(worker_num)
        if node is not None:
            node.exited = True
            node.exit_ok = failure is None
            node.last_seen = self._clock()
        if failure is not None:
            self._fail(failure)
            return
        # A service node (ps, evaluator) that returns early is fine, as in TensorFlowOnSpark.
        self._advance()

    # ----- driver operations -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """The driver is shutting down: service nodes (ps, evaluator, PS-strategy workers) may stop now."""
        if self.phase in (Phase.RUNNING, Phase.RESERVING):
            self.phase = Phase.STOPPING
        self._advance()

    def abort(self, failure: NodeFailure) -> None:
        """The driver saw a failure the nodes could not report (lost executor, Spark job failure)."""
        self._fail(failure)

    def check_lost(self) -> list[NodeFailure]:
        """Marks running nodes silent for longer than node_lost_timeout as lost; returns the new failures."""
        if self.phase not in (Phase.RUNNING, Phase.STOPPING):
            return []
        now = self._clock()
        lost = []
        for num, node in sorted(self.nodes.items()):
            if not node.exited and now - node.last_seen > self.node_lost_timeout:
                lost.append(
                    NodeFailure(
                        worker_num=num,
                        role=f"{node.job_name}:{node.task_index}",
                        host=node.info.host,
                        executor_id=node.info.executor_id,
                        time=self._wall(),
                        message=(
                            f"no heartbeat for {now - node.last_seen:.0f}s (node_lost_timeout="
                            f"{self.node_lost_timeout:.0f}s): its executor or Python worker was lost or is "
                            "stuck; see the executor log. Raise TFOS_NODE_LOST_TIMEOUT if nodes are just busy."
                        ),
                    )
                )
        for failure in lost:
            self.nodes[failure.worker_num].exited = True
            self._fail(failure)
        return lost

    def check_hung(self) -> list[NodeFailure]:
        """Fails the cluster if a running chief/worker node made no progress for ``hang_timeout`` seconds.

        Progress is any change in what the node's heartbeats report (output, Keras steps and epochs,
        ``ctx.report_progress``). Returns the hung nodes' failures (empty when none, or when turned off).
        """
        if self.phase is not Phase.RUNNING or self.hang_timeout <= 0:
            return []
        now = self._clock()
        hung = [
            (num, node) for num, node in sorted(self.nodes.items())
            if not node.exited and node.job_name not in self.service_jobs
            and now - node.progress_at > self.hang_timeout
        ]
        failures = [
            NodeFailure(
                worker_num=num, role=f"{node.job_name}:{node.task_index}", host=node.info.host,
                executor_id=node.info.executor_id, time=self._wall(),
                message=(
                    f"no progress for {now - node.progress_at:.0f}s (hang_timeout={self.hang_timeout:.0f}s); "
                    f"{describe_progress(node.progress)}. Likely causes: a collective op waiting for a peer that "
                    "stopped, a deadlocked input pipeline, or a long silent step. Print output, call "
                    "ctx.report_progress(), or raise TFOS_HANG_TIMEOUT (0 turns hang detection off)."
                ),
            )
            for num, node in hung
        ]
        for failure in failures:
            self._fail(failure)
        return failures

    def progress_table(self) -> list[dict]:
        """The latest progress of every registered node: role, step/epoch fields, seconds since progress."""
        now = self._clock()
        rows = []
        for num, node in sorted(self.nodes.items()):
            fields = {k: v for k, v in node.progress.items() if k not in _NOT_PROGRESS}
            rows.append({**fields, "worker_num": num, "role": f"{node.job_name}:{node.task_index}",
                         "exited": node.exited, "heartbeat_secs": round(now - node.last_seen, 1),
                         "idle_secs": round(now - node.progress_at, 1) if self.phase is not Phase.RESERVING else 0.0})
        return rows

    # ----- queries ---------------------------------------------------------------------------------------
    def missing(self) -> list[int]:
        return [n for n in self.expected if n not in self.nodes]

    def training_done(self) -> bool:
        """Every chief/master/worker node exited successfully."""
        training = [n for job, nums in self.template.items() if job not in self.service_jobs for n in nums]
        return all(n in self.nodes and self.nodes[n].exited and self.nodes[n].exit_ok for n in training)

    def all_exited(self) -> bool:
        return len(self.nodes) == len(self.expected) and all(node.exited for node in self.nodes.values())

    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)

    def node_table(self) -> list[dict]:
        """TensorFlowOnSpark-style ``cluster_info``: one dict per registered node, by worker_num."""
        rows = []
        for num, node in sorted(self.nodes.items()):
            rows.append(
                {
                    "executor_id": num,
                    "worker_num": num,
                    "host": node.info.host,
                    "port": node.info.port,
                    "job_name": node.job_name,
                    "task_index": node.task_index,
                    "spark_executor_id": node.info.executor_id,
                    "pid": node.info.pid,
                    "addr": node.info.address,
                    "feed_addr": _join(node.info.host, node.info.feed_port) if node.info.feed_port else "",
                    "tb_port": int(node.progress.get("tb_port", 0)),
                    "tb_pid": int(node.progress.get("tb_pid", 0)),
                }
            )
        return rows

    # ----- internals -------------------------------------------------------------------------------------
    def _role_label(self, worker_num: int) -> str:
        job, index = role_of(self.template, worker_num)
        return f"{job}:{index}"

    def _fail(self, failure: NodeFailure) -> None:
        if self.phase is Phase.DONE:
            return
        if self.phase is Phase.FAILED:
            failure = dataclasses.replace(failure, secondary=True) if not failure.secondary else failure
        self.failures.append(failure)
        if self.phase is not Phase.FAILED:
            self.phase = Phase.FAILED
            self.abort_reason = f"{failure.where()} failed: {failure.message or failure.describe_exit()}"

    def _advance(self) -> None:
        if self.phase is Phase.STOPPING and self.all_exited():
            self.phase = Phase.DONE


def describe_progress(progress: Mapping) -> str:
    """``last progress: epoch 3/10, step 12/100; last output: '...'`` from a node's heartbeat progress."""
    parts = []
    for key, total in (("epoch", "epochs"), ("step", "steps")):
        if progress.get(key) is not None:
            parts.append(f"{key} {progress[key]}" + (f"/{progress[total]}" if progress.get(total) else ""))
    text = "last progress: " + (", ".join(parts) if parts else "none reported")
    last = str(progress.get("last_line") or "").strip()
    return text + (f"; last output line: {last[-200:]!r}" if last else "; no output")
