"""One TF node's supervisor: it reserves the port, registers with the driver, starts the TF process and
watches it until it ends, then reports how it ended.

It runs inside the Spark task (or, for ``driver_ps_nodes``, in a driver thread). The TF process is a child
started with an explicit environment, so the supervisor's own ``os.environ`` (a reused PySpark worker's) is
never changed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, Mapping

from ..errors import NodeFailure
from .._control.client import ClusterAborted, ControlClient
from .._control.reservation import ABORT, STOP, NodeInfo
from . import ERROR_FILE_ENV, PROGRESS_FILE_ENV
from .chatter import is_chatter
from .environment import node_threads, tf_process_env
from .spec import SPARK_MODE, LaunchSpec, NodePlace
from .memory import failure_hint, looks_like_memory
from .gpus import GpuClaim, claim_gpus
from .launcher import TFChild, describe_exit, progress_file, read_error_file, read_progress, spawn, stop_process_group
from .tf_config import role_of, tf_config_json

logger = logging.getLogger(__name__)


def reserve_port(host: str) -> socket.socket:
    """Binds a free port for the TF server and keeps it bound, so no other process can take it meanwhile.

    TensorFlow's gRPC server does not set SO_REUSEPORT (measured: it fails to bind a port held that way), so
    the hold ends just before the TF process starts (``release_port=True``, the default) or, with
    ``release_port=False``, when main_fun calls ``ctx.release_port()`` right before starting its server.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(("", 0))
    return sock


def bind_feed_socket(host: str) -> socket.socket:
    """A listening socket for the node's feed server on ``host`` (the address the node advertises), not on
    every interface; on every interface only if ``host`` is not an address of this machine (then warns)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
    except OSError as exc:
        logger.warning("cannot bind the feed server to %s (%s); binding it to every interface", host, exc)
        sock.bind(("", 0))
    sock.listen(64)  # feeding tasks may connect before main_fun runs; they wait in the backlog
    return sock


# TensorFlow's gRPC channels wait gRPC's initial reconnect backoff (1 s) after a refused connection. A worker whose
# TF server comes up before the chief's therefore waits up to 1 s more for MWMS's collective group; 100 ms here.
TF_GRPC_BACKOFF = "grpc.initial_reconnect_backoff_ms=100"


def tf_grpc_options(current: str | None) -> str:
    """``TF_GRPC_DEFAULT_OPTIONS`` for the TF process: the user's options, plus the short reconnect backoff
    unless they set one themselves."""
    if not current:
        return TF_GRPC_BACKOFF
    if "grpc.initial_reconnect_backoff_ms=" in current:
        return current
    return f"{current},{TF_GRPC_BACKOFF}"


def child_env(base: Mapping[str, str], spec: LaunchSpec, place: NodePlace, tf_config: str, error_file: str,
              job_name: str, task_index: int, log_dir: str | None = None) -> dict[str, str]:
    """The TF process's environment: the Python worker's, without its internals, plus what tfos sets
    (the policy is stated in :mod:`tfos._node.environment`)."""
    tfos_vars = {
        "TF_CONFIG": tf_config,
        "TF_GRPC_DEFAULT_OPTIONS": tf_grpc_options(base.get("TF_GRPC_DEFAULT_OPTIONS")),
        ERROR_FILE_ENV: error_file,
        PROGRESS_FILE_ENV: progress_file(error_file),
        "TFOS_WORKER_NUM": str(place.worker_num),
        "TFOS_JOB_NAME": job_name,
        "TFOS_TASK_INDEX": str(task_index),
    }
    if log_dir:
        tfos_vars["TFOS_LOG_DIR"] = log_dir
    return tf_process_env(base, user_names=spec.user_env, threads=node_threads(spec.node_threads, place.cpus),
                          legacy_keras=spec.legacy_keras, gpus=place.gpus, sys_path=place.sys_path,
                          tfos_vars=tfos_vars, extra=spec.extra_env)


def tensorboard_node(template: Mapping[str, list]) -> int:
    """The node that runs TensorBoard: the chief (or master), else worker 0."""
    for job in ("chief", "master", "worker"):
        if template.get(job):
            return template[job][0]
    raise ValueError("no training node in the template")


def start_tensorboard(log_dir: str, host: str) -> tuple[subprocess.Popen, int]:
    """Starts the tensorboard package's server for ``log_dir`` on a free port of ``host``; it exits with this
    process (see ``tfos._node.tensorboard``)."""
    os.makedirs(log_dir, exist_ok=True)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfos._node.tensorboard", str(os.getpid()), "--logdir", log_dir, "--host", host,
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    return proc, port


EXECUTOR_LOST = "executor_lost"


def run_node(spec: LaunchSpec, place: NodePlace, client_factory: Callable[..., ControlClient] = ControlClient,
             on_started: Callable[[dict], None] | None = None) -> dict:
    """Runs one TF node to the end. Returns a summary; failures are reported to the driver, not raised.

    With ``spec.preimport``, the TF process starts before the node registers and imports those modules
    (TensorFlow) while the cluster is reserved; it gets ``TF_CONFIG`` and main_fun once the spec is known.

    Returns:
        ``{"worker_num", "role", "outcome": "ok"|"stopped"|"failed"|"aborted", "exit_code"}``.
    """
    job_name, task_index = role_of(spec.template, place.worker_num)
    role = f"{job_name}:{task_index}"
    sock = reserve_port(place.host)
    port = sock.getsockname()[1]
    feed_sock = None
    if spec.input_mode == SPARK_MODE and job_name not in ("ps", "evaluator"):
        feed_sock = bind_feed_socket(place.host)
    info = NodeInfo(place.worker_num, place.host, port, place.executor_id, os.getpid(), place.attempt,
                    feed_sock.getsockname()[1] if feed_sock else 0)
    client = client_factory(spec.control_address, spec.secret, root_cert=spec.control_cert)
    summary = {"worker_num": place.worker_num, "role": role, "outcome": "failed", "exit_code": None}
    node = _Node(spec, place, job_name, task_index, sock, feed_sock)
    try:
        try:
            node.prepare()
            client.register(info)
            cluster_spec = client.wait_for_spec(spec.reservation_timeout)
        except ClusterAborted as exc:
            logger.info("node %s (%s) not started: %s", place.worker_num, role, exc)
            summary["outcome"] = "aborted"
            return summary
        logger.info("node %s is %s at %s; cluster %s", place.worker_num, role, info.address, cluster_spec)
        return _supervise(node, client, cluster_spec, summary, on_started)
    except Exception as exc:  # noqa: BLE001 - the driver must hear about anything that stops this node
        failure = NodeFailure(place.worker_num, role, place.host, place.executor_id, time.time(),
                              message=f"tfos node supervisor failed: {type(exc).__name__}: {exc}")
        try:
            client.report_exit(place.worker_num, failure)
        except Exception:  # noqa: BLE001 - the driver is gone; Spark reports the task failure instead
            raise exc from None
        return summary
    finally:
        node.close()
        client.close()


class _Node:
    """What one node holds on its host: its ports, work directory, GPUs and (once started) its TF process."""

    def __init__(self, spec: LaunchSpec, place: NodePlace, job_name: str, task_index: int, sock: socket.socket,
                 feed_sock: socket.socket | None) -> None:
        self.spec, self.place, self.job_name, self.task_index = spec, place, job_name, task_index
        self.role = f"{job_name}:{task_index}"
        self.sock, self.feed_sock = sock, feed_sock
        self.workdir = tempfile.mkdtemp(prefix=f"tfos-node{place.worker_num}-")
        self.error_file = os.path.join(self.workdir, "error.json")
        self.gpus: GpuClaim | None = None
        self.child: TFChild | None = None
        self.log_dir = spec.log_dir
        if spec.tensorboard and place.worker_num == tensorboard_node(spec.template):
            # TensorFlowOnSpark's default: a directory in the executor's working directory.
            self.log_dir = self.log_dir or os.path.abspath(f"tensorboard_{place.worker_num}")

    def prepare(self) -> None:
        """Claims GPUs (when Spark assigned none) and, with ``preimport``, starts the TF process early."""
        if self.place.gpus is None:  # Spark does not schedule GPUs: take free ones of this host (nvidia-smi)
            self.gpus = _claim_gpus(self.spec, self.place, self.job_name, self.role)
            if self.gpus is not None:
                self.place = dataclasses.replace(self.place, gpus=self.gpus.devices)
                self.spec = dataclasses.replace(self.spec, extra_env={**self.spec.extra_env, **self.gpus.env})
        if self.spec.preimport:
            self.start_process(None)

    def start_process(self, tf_config: str | None) -> None:
        """Starts the TF process; ``tf_config`` None means it comes later, with the payload."""
        env = child_env(os.environ, self.spec, self.place, tf_config or "", self.error_file, self.job_name,
                        self.task_index, self.log_dir)
        if tf_config is None:
            env.pop("TF_CONFIG", None)
        keep = [] if self.spec.release_port else [self.sock.fileno()]
        if self.feed_sock is not None:
            keep.append(self.feed_sock.fileno())
        # Everything the TF process prints reaches the executor log; the driver gets it without TensorFlow's C++
        # start-up chatter (tfos._node.chatter) unless forward_logs=all or the user set TF_CPP_MIN_LOG_LEVEL.
        everything = self.spec.forward_all or "TF_CPP_MIN_LOG_LEVEL" in os.environ
        cpu_only = env.get("CUDA_VISIBLE_DEVICES") == "" or shutil.which("nvidia-smi") is None
        self.child = spawn(env, self.role, self.spec.log_tail_lines, forward=self.spec.forward_logs,
                           skip=None if everything else functools.partial(is_chatter, cpu_only=cpu_only),
                           pass_fds=keep, preimport=self.spec.preimport if tf_config is None else ())

    def close(self) -> None:
        """Stops a TF process still running (the node never got its spec) and releases everything."""
        if self.child is not None:
            self.child.finish(min(self.spec.stop_grace_secs, 3))
        self.sock.close()
        if self.feed_sock is not None:
            self.feed_sock.close()
        if self.gpus is not None:
            self.gpus.release()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _supervise(node: _Node, client: ControlClient, cluster_spec, summary, on_started) -> dict:
    board, progress = None, {}
    try:
        if node.spec.tensorboard and node.place.worker_num == tensorboard_node(node.spec.template):
            assert node.log_dir is not None  # _Node gives the TensorBoard node a default one
            board, tb_port = start_tensorboard(node.log_dir, node.place.host)
            progress = {"tb_port": tb_port, "tb_pid": board.pid}
        return _run_child(node, client, cluster_spec, summary, on_started, board, progress)
    finally:
        if board is not None:
            stop_process_group(board, 2.0)


def _claim_gpus(spec: LaunchSpec, place: NodePlace, job_name: str, role: str) -> GpuClaim | None:
    """GPUs for a node Spark gave none: ``gpus_per_node`` free ones of this host, none for a ps node."""
    count = 0 if job_name == "ps" else spec.gpus_per_node
    return claim_gpus(count, f"cluster {spec.cluster_id} node {place.worker_num} ({role})", spec.gpu_lock_dir,
                      os.environ.get("CUDA_VISIBLE_DEVICES"))


def _run_child(node: _Node, client, cluster_spec, summary, on_started, board, progress) -> dict:
    """Starts the TF process (or hands the one already importing its payload), watches it to its end and
    reports how it ended."""
    spec, place, job_name, task_index = node.spec, node.place, node.job_name, node.task_index
    tf_config = tf_config_json(cluster_spec, job_name, task_index)
    if spec.release_port:
        node.sock.close()  # as late as possible: the TF process binds it moments from now
    ctx_fields = {
        "worker_num": place.worker_num, "job_name": job_name, "task_index": task_index,
        "cluster_spec": cluster_spec, "defaultFS": spec.default_fs, "working_dir": spec.working_dir,
        "log_dir": node.log_dir, "host": place.host,
        "port": int(cluster_address_port(cluster_spec, job_name, task_index)),
        "spark_executor_id": place.executor_id, "input_mode": spec.input_mode,
        "attempt": spec.attempt, "backup_dir": spec.backup_dir,
    }
    feed_fd = node.feed_sock.fileno() if node.feed_sock is not None else None
    payload = {
        "parent_pid": os.getpid(), "fn": spec.fn, "args": spec.args, "ctx": ctx_fields,
        "sys_path": list(place.sys_path), "tmp_fd": None if spec.release_port else node.sock.fileno(),
        "feed_fd": feed_fd, "secret": spec.secret if feed_fd is not None else None,
        "feed_queue_chunks": spec.feed_queue_chunks, "keras3": not spec.legacy_keras,
        "env": {"TF_CONFIG": tf_config},
    }
    if node.child is None:
        node.start_process(tf_config)
    child = node.child
    assert child is not None  # start_process made it
    child.send(payload)
    node.sock.close()  # with release_port=False the child holds its own copy until ctx.release_port()
    if node.feed_sock is not None:
        node.feed_sock.close()  # the child serves the feed on its own copy
    if on_started is not None:
        on_started({"worker_num": place.worker_num, "role": summary["role"], "pid": child.pid})
    try:
        ended_by, reason = _watch(child, client, place.worker_num, spec, progress, place.watch_pid, node.error_file)
    finally:
        child.finish(spec.stop_grace_secs)
    if spec.forward_logs:
        client.heartbeat(place.worker_num, child.pump.drain())  # the last lines, before the exit report
    return _report(spec, place, client, child.returncode, ended_by, reason, node.error_file, child, summary, board)


def _report(spec, place, client, code, ended_by, reason, error_file, child, summary, board) -> dict:
    role = summary["role"]
    summary["exit_code"] = code
    if ended_by == STOP or (code == 0 and ended_by is None):
        client.report_exit(place.worker_num, None)
        summary["outcome"] = "ok" if ended_by is None else "stopped"
        if board is not None and ended_by is None:
            _serve_until_stopped(client, place.worker_num, spec)
        return summary
    record = read_error_file(error_file)
    tail = "\n".join(child.pump.tail)
    if ended_by == EXECUTOR_LOST:
        failure = NodeFailure(place.worker_num, role, place.host, place.executor_id, time.time(),
                              message=f"{reason}. If its container was killed for memory (the usual cause on YARN "
                                      f"and Kubernetes): {memory_hint(spec)}", log_tail=tail)
        summary["outcome"] = "failed"
    elif ended_by == ABORT:
        failure = NodeFailure(place.worker_num, role, place.host, place.executor_id, time.time(),
                              exit_code=code if code and code > 0 else None,
                              signal=-code if code and code < 0 else None,
                              message=f"stopped because the cluster failed ({reason})", secondary=True)
        summary["outcome"] = "aborted"
    else:
        message = record.get("message") or describe_exit(code)
        traceback = record.get("traceback", "")
        if code == -signal.SIGKILL or looks_like_memory("\n".join((message, traceback, tail))):
            message = f"{message}\n{memory_hint(spec)}"  # a SIGKILL tfos did not send: the OOM killer's mark
        failure = NodeFailure(
            place.worker_num, role, place.host, place.executor_id, record.get("time", time.time()),
            exit_code=code if code >= 0 else None, signal=-code if code < 0 else None,
            message=message, traceback=traceback, log_tail=tail,
        )
    client.report_exit(place.worker_num, failure)
    return summary


def memory_hint(spec: LaunchSpec) -> str:
    """What a node that died for memory says: the likely cause, this cluster's figures, the setting to raise."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]  # the TF process inherited this process's limit
    limit = None if soft == resource.RLIM_INFINITY else soft // 2**20
    return failure_hint(spec.memory_note, limit)


def cluster_address_port(cluster_spec, job_name: str, task_index: int) -> str:
    return cluster_spec[job_name][task_index].rsplit(":", 1)[1]


def _serve_until_stopped(client: ControlClient, worker_num: int, spec: LaunchSpec) -> None:
    """Keeps this node's TensorBoard up after main_fun returned, until the driver shuts the cluster down."""
    while client.heartbeat(worker_num)[0] not in (STOP, ABORT):
        time.sleep(spec.heartbeat_interval)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _watch(child: TFChild, client: ControlClient, worker_num: int, spec: LaunchSpec, progress: dict,
           watch_pid: int | None = None, error_file: str | None = None) -> tuple[str | None, str]:
    """Waits for the child, heartbeating; returns ``(None, "")`` when it ended by itself, else the command.

    Each heartbeat carries the node's progress: ``progress`` (TensorBoard's port), what the output showed
    (activity, last line, Keras epoch/step), what ``ctx.report_progress`` wrote (beside ``error_file``), and the
    output lines not yet forwarded.
    """
    next_beat = 0.0
    while True:
        if child.wait(0.1):
            return None, ""
        now = time.monotonic()
        if now >= next_beat:
            reported = read_progress(error_file) if error_file else {}
            beat = {**progress, **child.pump.progress.snapshot(), **reported, **child.pump.drain()}
            command, reason = client.heartbeat(worker_num, beat)
            next_beat = now + spec.heartbeat_interval
            if watch_pid and not _alive(watch_pid):
                child.stop(min(spec.stop_grace_secs, 3))
                return EXECUTOR_LOST, f"its Spark executor (pid {watch_pid}) exited; the TF process was stopped"
            if command in (ABORT, STOP):
                logger.info("node %s: driver says %s (%s)", worker_num, command, reason)
                child.stop(spec.stop_grace_secs if command == STOP else min(spec.stop_grace_secs, 3))
                return command, reason
