"""One home for tfos settings.

Precedence: an argument of ``TFCluster.run`` > a ``TFOS_*`` environment variable > the default below.
Environment variables are read once, when :func:`from_env` builds the config; nothing deeper reads them.

=============================  ==========================  =========  ===================================================
setting                        environment variable        default    meaning
=============================  ==========================  =========  ===================================================
reservation_timeout            TFOS_RESERVATION_TIMEOUT    600        seconds for every node to register with the driver
slot_wait_timeout              TFOS_SLOT_WAIT_TIMEOUT      60         seconds to wait for enough Spark task slots
heartbeat_interval             TFOS_HEARTBEAT_INTERVAL     1.0        seconds between a node's heartbeats
node_lost_timeout              TFOS_NODE_LOST_TIMEOUT      30         seconds without a heartbeat before a node is lost
stop_grace_secs                TFOS_STOP_GRACE_SECS        10         seconds between SIGTERM and SIGKILL of a TF process
legacy_keras                   TFOS_LEGACY_KERAS           auto       which Keras the TF process gets: auto (Keras 3 if
                                                                      main_fun imports keras or uses Keras 3 objects,
                                                                      else tf-keras 2), 1 (tf-keras 2: sets
                                                                      TF_USE_LEGACY_KERAS=1), 0 (Keras 3); see tfos._node.keras_choice
control_host                   TFOS_CONTROL_HOST           (driver)   address the driver's control server binds to
log_tail_lines                 TFOS_LOG_TAIL_LINES         100        lines of a TF process's output kept for reports
feed_chunk_rows                TFOS_FEED_CHUNK_ROWS        1024       rows a feeding task sends a node per message
                                                                      (InputMode.SPARK)
feed_queue_chunks              TFOS_FEED_QUEUE_CHUNKS      16         messages of training rows a node queues before
                                                                      the feeding tasks wait (its memory bound)
feed_stall_timeout             TFOS_FEED_STALL_TIMEOUT     60         seconds a feeding task waits on a node whose reader
                                                                      takes no rows before train() fails as stalled
feed_path                      TFOS_FEED_PATH              auto       how train() feeds a DataFrame: parquet (the nodes
                                                                      read Parquet: a plain Parquet scan's own files,
                                                                      else a cache Spark writes once; see
                                                                      tfos._feed.parquet), spark (every epoch through
                                                                      Spark tasks), auto (own files for a plain scan;
                                                                      the cache from 10 epochs or with feed_cache_dir,
                                                                      when every node can read it; else spark); RDDs:
                                                                      always spark
feed_cache_dir                 TFOS_FEED_CACHE_DIR         (auto)     where the parquet path writes (a directory every
                                                                      node can read: HDFS, S3, or local disk on one
                                                                      host); unset: the temp directory on a one-host
                                                                      cluster, else <fs.defaultFS>/tmp/tfos-feed-cache
feed_shuffle                   TFOS_FEED_SHUFFLE           1          shuffle the training rows every epoch: the order
                                                                      of the parquet path's row groups, and the rows
                                                                      within each 32 MB block of a row group, or each
                                                                      Spark-path message
feed_seed                      TFOS_FEED_SEED              -1         seed of that shuffle (-1: a new one per train())
feed_local_cache               TFOS_FEED_LOCAL_CACHE       1          parquet path, several epochs: each node keeps the
                                                                      same share for the whole train() call (its row
                                                                      groups and rows still reshuffled every epoch)
                                                                      and a decoded copy of it (memory up to 256 MiB,
                                                                      then local disk), so it decodes Parquet once,
                                                                      not every epoch; 0: the row groups are dealt to
                                                                      the nodes anew every epoch and decoded each time
forward_logs                   TFOS_FORWARD_LOGS           1          copy the nodes' output to the driver's stderr: 1
                                                                      (without TensorFlow's C++ start-up chatter, see
                                                                      tfos._node.chatter), all (every line), 0 (none)
gpus_per_node                  TFOS_GPUS_PER_NODE          1          GPUs a node takes with nvidia-smi when Spark does
                                                                      not schedule GPUs (0: hide GPUs from the node)
gpu_lock_dir                   TFOS_GPU_LOCK_DIR           (tmp dir)  host directory for the GPU lock and claims files
hang_timeout                   TFOS_HANG_TIMEOUT           0          seconds a chief/worker may go without progress
                                                                      (output, Keras steps, ctx.report_progress)
                                                                      before the run fails as hung; 0 = off
max_restarts                   TFOS_MAX_RESTARTS           0          times to restart the whole TF cluster after a node
                                                                      was lost or killed (InputMode.TENSORFLOW)
progress                       TFOS_PROGRESS               auto       driver progress display: auto (on a terminal,
                                                                      else off), on (always, on stderr), off, log
                                                                      (INFO log records instead)
progress_interval              TFOS_PROGRESS_INTERVAL      10         seconds between progress display updates
preimport                      TFOS_PREIMPORT              off        modules a node's TF process imports while the cluster
                                                                      is reserved: off, auto (TensorFlow if main_fun uses
                                                                      it), or a comma-separated list of modules
node_threads                   TFOS_NODE_THREADS           task       threads a TF process uses (OMP_NUM_THREADS,
                                                                      TF_NUM_INTRAOP_THREADS): task (the cores Spark
                                                                      gave its task, spark.task.cpus), tf (TensorFlow's
                                                                      default: every core of the host), or a number;
                                                                      see tfos._node.environment
node_memory_mb                 TFOS_NODE_MEMORY_MB         1024       MiB a TF process is taken to need outside the
                                                                      executor's JVM heap, for the container memory
                                                                      check on YARN and Kubernetes (0: no check)
control_tls                    TFOS_CONTROL_TLS            0          serve the control plane over TLS with a certificate
                                                                      made per cluster (needs ``cryptography``)
control_tls_cert               TFOS_CONTROL_TLS_CERT       (none)     PEM certificate (chain) for the control server
                                                                      instead; it must name the driver's address
control_tls_key                TFOS_CONTROL_TLS_KEY        (none)     PEM private key of control_tls_cert
hdfs_client                    TFOS_HDFS_CLIENT            native     client for hdfs:// and viewfs:// paths: native
                                                                      (hdfs-native) or pyarrow (libhdfs); read by tfos.fs
                                                                      where a path is used (FsSettings)
s3_addressing_style            TFOS_S3_ADDRESSING_STYLE    path/auto  botocore's S3 addressing style: path, virtual or
                                                                      auto; unset: path when an S3 endpoint is set, else
                                                                      auto; read by tfos.fs (FsSettings)
=============================  ==========================  =========  ===================================================
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Mapping

from .errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["FsSettings", "Settings", "from_env"]

_ENV_PREFIX = "TFOS_"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Tunables shared by the driver and the nodes. Frozen and validated at construction."""

    reservation_timeout: float = 600.0
    slot_wait_timeout: float = 60.0
    heartbeat_interval: float = 1.0
    node_lost_timeout: float = 30.0
    stop_grace_secs: float = 10.0
    legacy_keras: str = "auto"
    control_host: str = ""
    log_tail_lines: int = 100
    feed_chunk_rows: int = 1024
    feed_queue_chunks: int = 16
    feed_stall_timeout: float = 60.0
    feed_path: str = "auto"
    feed_cache_dir: str = ""
    feed_shuffle: bool = True
    feed_seed: int = -1
    feed_local_cache: bool = True
    forward_logs: str = "1"
    gpus_per_node: int = 1
    gpu_lock_dir: str = ""
    hang_timeout: float = 0.0
    max_restarts: int = 0
    progress: str = "auto"
    progress_interval: float = 10.0
    preimport: str = "off"
    node_threads: str = "task"
    node_memory_mb: int = 1024
    control_tls: bool = False
    control_tls_cert: str = ""
    control_tls_key: str = ""

    def __post_init__(self) -> None:
        from ._node.keras_choice import normalize

        object.__setattr__(self, "legacy_keras", normalize(self.legacy_keras))
        object.__setattr__(self, "forward_logs", _forward_logs(self.forward_logs))
        object.__setattr__(self, "node_threads", _node_threads(self.node_threads))
        if self.node_memory_mb < 0:
            raise ConfigError(f"node_memory_mb must be >= 0 (0 turns the container memory check off), got "
                              f"{self.node_memory_mb} (TFOS_NODE_MEMORY_MB)")
        for name in ("reservation_timeout", "slot_wait_timeout", "heartbeat_interval", "node_lost_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.stop_grace_secs < 0:
            raise ConfigError(f"stop_grace_secs must be >= 0, got {self.stop_grace_secs}")
        if self.node_lost_timeout < 3 * self.heartbeat_interval:
            raise ConfigError(
                f"node_lost_timeout ({self.node_lost_timeout}s) must be at least 3 heartbeats "
                f"({3 * self.heartbeat_interval}s); raise TFOS_NODE_LOST_TIMEOUT or lower TFOS_HEARTBEAT_INTERVAL."
            )
        if self.feed_chunk_rows < 1:
            raise ConfigError(f"feed_chunk_rows must be >= 1, got {self.feed_chunk_rows}")
        if self.feed_queue_chunks < 1:
            raise ConfigError(f"feed_queue_chunks must be >= 1, got {self.feed_queue_chunks} (TFOS_FEED_QUEUE_CHUNKS)")
        if self.feed_stall_timeout <= 0:
            raise ConfigError(f"feed_stall_timeout must be > 0, got {self.feed_stall_timeout} "
                              "(TFOS_FEED_STALL_TIMEOUT)")
        if self.feed_path not in ("auto", "parquet", "spark"):
            raise ConfigError(f"feed_path must be 'auto', 'parquet' or 'spark', got {self.feed_path!r} (TFOS_FEED_PATH)")
        if self.feed_seed < -1:
            raise ConfigError(f"feed_seed must be >= 0, or -1 for a new seed per train() call, got {self.feed_seed} "
                              "(TFOS_FEED_SEED)")
        if self.gpus_per_node < 0:
            raise ConfigError(f"gpus_per_node must be >= 0, got {self.gpus_per_node} (TFOS_GPUS_PER_NODE)")
        if self.hang_timeout < 0:
            raise ConfigError(f"hang_timeout must be >= 0 (0 turns it off), got {self.hang_timeout} (TFOS_HANG_TIMEOUT)")
        if self.hang_timeout and self.hang_timeout < 3 * self.heartbeat_interval:
            raise ConfigError(
                f"hang_timeout ({self.hang_timeout}s) must be at least 3 heartbeats ({3 * self.heartbeat_interval}s) "
                "or 0 (off); raise TFOS_HANG_TIMEOUT."
            )
        if self.max_restarts < 0:
            raise ConfigError(f"max_restarts must be >= 0, got {self.max_restarts} (TFOS_MAX_RESTARTS)")
        if self.progress not in ("auto", "on", "off", "log"):
            raise ConfigError(f"progress must be 'auto', 'on', 'off' or 'log' (INFO log records), got "
                              f"{self.progress!r} (TFOS_PROGRESS)")
        if self.progress_interval <= 0:
            raise ConfigError(f"progress_interval must be > 0, got {self.progress_interval} (TFOS_PROGRESS_INTERVAL)")
        if bool(self.control_tls_cert) != bool(self.control_tls_key):
            raise ConfigError(
                "control-plane TLS needs both a certificate and its key: set both TFOS_CONTROL_TLS_CERT and "
                f"TFOS_CONTROL_TLS_KEY (got cert={self.control_tls_cert!r}, key={self.control_tls_key!r}), or "
                "neither (TFOS_CONTROL_TLS=1 makes a certificate per cluster)."
            )
        if not all(n.strip().replace("_", "a").replace(".", "a").isalnum() for n in self.preimport.split(",") if n.strip()):
            raise ConfigError(f"preimport must be 'auto', 'off' or a comma-separated list of module names, got "
                              f"{self.preimport!r} (TFOS_PREIMPORT)")
        if self.log_tail_lines < 1:
            raise ConfigError(f"log_tail_lines must be >= 1, got {self.log_tail_lines}")


def _forward_logs(value) -> str:
    """``forward_logs`` as ``"1"``, ``"0"`` or ``"all"`` (booleans and their usual spellings accepted)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    low = str(value).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return "1"
    if low in ("0", "false", "no", "off", ""):
        return "0"
    if low == "all":
        return "all"
    raise ConfigError(f"forward_logs must be 1 (the nodes' output without TensorFlow's C++ start-up chatter), all "
                      f"(every line) or 0 (none), got {value!r} (TFOS_FORWARD_LOGS)")


def _node_threads(value) -> str:
    """``node_threads`` as ``"task"``, ``"tf"`` or a positive number (as text)."""
    low = str(value).strip().lower()
    if low in ("task", "tf"):
        return low
    if low.isdigit() and int(low) > 0:
        return str(int(low))
    raise ConfigError(f"node_threads must be 'task' (the cores of the node's Spark task), 'tf' (TensorFlow's "
                      f"default) or a number of threads > 0, got {value!r} (TFOS_NODE_THREADS)")


def _parse(field: dataclasses.Field, raw: str):
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{_ENV_PREFIX}{field.name.upper()}={raw!r} is not a valid {kind}") from None


def from_env(environ: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Builds :class:`Settings` from ``TFOS_*`` variables, then explicit ``overrides`` (None = not given)."""
    environ = os.environ if environ is None else environ
    values = {}
    for field in dataclasses.fields(Settings):
        raw = environ.get(_ENV_PREFIX + field.name.upper())
        if raw is not None:
            values[field.name] = _parse(field, raw)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise ConfigError(f"unknown settings: {sorted(unknown)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


_HDFS_CLIENTS = ("native", "pyarrow")
_S3_ADDRESSING_STYLES = ("path", "virtual", "auto")


@dataclasses.dataclass(frozen=True)
class FsSettings:
    """The file-system settings of :mod:`tfos.fs`. Frozen and validated at construction.

    They are apart from :class:`Settings` because :mod:`tfos.fs` runs wherever a path is read or written (the
    driver, a Spark task, a node's TF process), with the environment of that process and no ``Settings`` at hand;
    :meth:`from_env` builds them from that environment.

    Attributes:
        hdfs_client: the client for ``hdfs://`` and ``viewfs://`` paths: ``"native"`` (hdfs-native) or
            ``"pyarrow"`` (pyarrow's libhdfs client).
        s3_addressing_style: botocore's S3 addressing style, ``"path"``, ``"virtual"`` or ``"auto"``; ``""`` (not
            set) leaves the choice to :mod:`tfos.fs`: path when an S3 endpoint is set, else auto.
    """

    hdfs_client: str = "native"
    s3_addressing_style: str = ""

    def __post_init__(self) -> None:
        client = self.hdfs_client.strip().lower()
        if client not in _HDFS_CLIENTS:
            raise ConfigError(f"TFOS_HDFS_CLIENT must be 'native' (hdfs-native, the default) or 'pyarrow' (pyarrow's "
                              f"libhdfs client), not {self.hdfs_client!r}")
        style = self.s3_addressing_style.strip().lower()
        if style and style not in _S3_ADDRESSING_STYLES:
            raise ConfigError(f"TFOS_S3_ADDRESSING_STYLE must be 'path', 'virtual' or 'auto' (botocore's S3 addressing "
                              f"style; unset: path when an S3 endpoint is set, else auto), not "
                              f"{self.s3_addressing_style!r}")
        object.__setattr__(self, "hdfs_client", client)
        object.__setattr__(self, "s3_addressing_style", style)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FsSettings:
        """Builds the settings from ``TFOS_HDFS_CLIENT`` and ``TFOS_S3_ADDRESSING_STYLE`` (empty = the default).

        Args:
            environ: where the variables come from; defaults to ``os.environ``.

        Raises:
            ConfigError: a variable holds a value it does not accept; the message names the accepted ones.
        """
        environ = os.environ if environ is None else environ
        return cls(hdfs_client=environ.get("TFOS_HDFS_CLIENT") or "native",
                   s3_addressing_style=environ.get("TFOS_S3_ADDRESSING_STYLE") or "")
