"""What the driver ships to every node: the launch spec (built once on the driver) and, from the task, the node's
place. Plain frozen data, so that the driver-side modules need not import the node supervisor."""

from __future__ import annotations

import dataclasses
from typing import Mapping

SPARK_MODE = 1  # cluster.InputMode.SPARK


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """Everything a node needs, built once on the driver and shipped to every task.

    ``fn`` and ``args`` stay cloudpickled bytes here: they are unpickled only in the TF process, after its
    environment is set, so that the user's imports (TensorFlow) see ``TF_CONFIG`` and friends.
    """

    cluster_id: str
    control_address: str
    secret: str = dataclasses.field(repr=False)
    template: Mapping[str, list] = dataclasses.field(default_factory=dict)
    fn: bytes = dataclasses.field(default=b"", repr=False)
    args: bytes = dataclasses.field(default=b"", repr=False)
    default_fs: str = "file://"
    working_dir: str = "."
    log_dir: str | None = None
    tensorboard: bool = False
    input_mode: int = 0
    release_port: bool = True
    legacy_keras: bool = True  # tf-keras 2 in the TF process (TF_USE_LEGACY_KERAS=1); False: Keras 3 (tfos._node.keras_choice)
    heartbeat_interval: float = 1.0
    reservation_timeout: float = 600.0
    stop_grace_secs: float = 10.0
    log_tail_lines: int = 100
    forward_logs: bool = True
    forward_all: bool = False  # forward TensorFlow's C++ INFO chatter too (forward_logs=all)
    extra_env: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)  # may hold credentials
    gpus_per_node: int = 1  # without Spark GPU scheduling (see gpus.claim_gpus)
    gpu_lock_dir: str = ""
    attempt: int = 0  # the cluster's restart attempt (0 first), ``ctx.attempt``
    backup_dir: str = ""  # ``ctx.backup_dir``: stable across attempts, for Keras BackupAndRestore
    control_cert: bytes = dataclasses.field(default=b"", repr=False)  # the control server's TLS certificate
    preimport: tuple = ()  # modules the TF process imports while the cluster is reserved (tfos._node.preimport)
    feed_queue_chunks: int = 16  # InputMode.SPARK: training chunks a node queues before it pushes back
    user_env: tuple = ()  # names the user set through spark.executorEnv.*: kept as they are (environment.py)
    node_threads: str = "task"  # the TF process's thread counts (tfos._node.environment.node_threads)
    memory_note: str = ""  # the executors' memory settings, quoted when a node dies for memory (tfos._node.memory)


@dataclasses.dataclass(frozen=True)
class NodePlace:
    """Where a node runs, as seen from its Spark task."""

    worker_num: int
    host: str
    executor_id: str = ""
    attempt: int = 0
    sys_path: tuple = ()
    gpus: str | None = None  # CUDA_VISIBLE_DEVICES for the child; None leaves the inherited value
    watch_pid: int | None = None  # stop the node when this process (the executor JVM) is gone
    cpus: int = 0  # the cores Spark gave the node's task (TaskContext.cpus()); 0 outside a task
