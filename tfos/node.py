"""What ``main_fun(args, ctx)`` sees on an executor: the node context.

``ctx`` mirrors TensorFlowOnSpark's ``TFNodeContext``: ``executor_id``/``worker_num``, ``job_name``,
``task_index``, ``cluster_spec``, ``num_workers``, ``defaultFS``, ``working_dir``, ``absolute_path()``,
``release_port()``, ``export_saved_model()`` and (with ``InputMode.SPARK``) ``get_data_feed()``; tfos adds
``attempt``, ``backup_dir`` (for automatic restarts) and ``report_progress()`` (for hang detection and the
driver's progress display).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
from typing import Any, Mapping

from ._node.tf_config import make_tf_config, num_training_workers

logger = logging.getLogger(__name__)

__all__ = ["TFNodeContext", "absolute_path"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def absolute_path(path: str, default_fs: str, working_dir: str, user: str | None = None) -> str:
    """Resolves ``path`` against Spark's ``fs.defaultFS`` as TensorFlowOnSpark's ``TFNode.hdfs_path`` does.

    A path with a scheme (``s3://``, ``hdfs://``, ``file://``, ...) is returned unchanged; an absolute path gets
    the default file system's prefix; a relative one is resolved against the user's HDFS home
    (``/user/<name>``) on HDFS-like file systems, or against ``working_dir`` on the local one. A defaultFS
    without an authority keeps its ``//``: ``hdfs://`` and ``/foo`` give ``hdfs:///foo``, as TensorFlowOnSpark
    gives; a trailing slash after an authority or a path is dropped (``file:///`` and ``/foo`` give
    ``file:///foo``).
    """
    if _SCHEME.match(path):
        return path
    fs = default_fs or "file://"
    if not fs.endswith("://"):
        fs = fs.rstrip("/")
        if fs.endswith(":/") or fs.endswith(":"):  # "file:///" stripped to "file:": the scheme's empty authority
            fs = fs.rstrip(":/") + "://"
    if path.startswith("/"):
        return fs + path
    if fs.startswith(("hdfs://", "viewfs://")):
        return f"{fs}/user/{user or getpass.getuser()}/{path}"
    if fs.startswith("file://"):
        return "file://" + os.path.join(os.path.abspath(working_dir), path)
    return f"{fs}/{path}"


class TFNodeContext:
    """Metadata and helpers for one TF node, passed to ``main_fun`` as ``ctx``.

    Attributes:
        executor_id: the node's index in the TF cluster (TensorFlowOnSpark's name; same as ``worker_num``).
        worker_num: the node's index in the TF cluster.
        job_name: ``chief``, ``master``, ``worker``, ``ps`` or ``evaluator``.
        task_index: the node's index within its job.
        cluster_spec: ``{job: ["host:port", ...]}`` for the whole cluster (evaluator included).
        num_workers: the number of chief/master/worker nodes.
        defaultFS: Spark's ``fs.defaultFS``, e.g. ``file://`` or ``hdfs://namenode:8020``.
        working_dir: the driver's working directory when the cluster started.
        log_dir: the TensorBoard log directory given to ``TFCluster.run`` (None if none).
        host: the address of this node.
        port: the TF server port reserved for this node.
        spark_executor_id: the Spark executor this node runs on ("driver" for ps nodes on the driver).
        tf_config: this node's ``TF_CONFIG`` as a dict (also in ``os.environ["TF_CONFIG"]``).
        tmp_socket: with ``release_port=False``, the socket that holds ``port`` until ``release_port()``.
        mgr: with ``InputMode.SPARK``, this node's feed (what ``TFNode.DataFeed(ctx.mgr)`` takes).
        attempt: 0 on the cluster's first start, then 1, 2, ... each time tfos restarted it after a node was lost
            (``TFCluster.run(max_restarts=...)``).
        backup_dir: a directory that stays the same across attempts, for ``tf.keras.callbacks.BackupAndRestore``
            (``<log_dir>/backup``, else ``<working_dir>/tfos_backup/<cluster id>``); None outside tfos.
        checkpoint_dir: the same as ``backup_dir``.
    """

    def __init__(
        self,
        worker_num: int = 0,
        job_name: str = "",
        task_index: int = 0,
        cluster_spec: Mapping[str, list] | None = None,
        defaultFS: str = "file://",
        working_dir: str = ".",
        log_dir: str | None = None,
        host: str = "",
        port: int = 0,
        spark_executor_id: str = "",
        tmp_socket: socket.socket | None = None,
        input_mode: int = 0,
        mgr: Any = None,
        attempt: int = 0,
        backup_dir: str | None = None,
    ) -> None:
        self.worker_num = worker_num
        self.executor_id = worker_num
        self.job_name = job_name
        self.task_index = task_index
        self.cluster_spec = dict(cluster_spec or {})
        self.num_workers = num_training_workers(self.cluster_spec)
        self.defaultFS = defaultFS
        self.default_fs = defaultFS
        self.working_dir = working_dir
        self.log_dir = log_dir
        self.host = host
        self.port = port
        self.spark_executor_id = spark_executor_id
        self.tmp_socket = tmp_socket
        self.input_mode = input_mode
        self.mgr = mgr
        self.attempt = attempt
        self.backup_dir = backup_dir or None
        self.checkpoint_dir = self.backup_dir
        self._progress: Any = None  # a ProgressFile once report_progress() is called in a node

    @property
    def tf_config(self) -> dict:
        raw = os.environ.get("TF_CONFIG")
        if raw:
            return json.loads(raw)
        return make_tf_config(self.cluster_spec, self.job_name, self.task_index)

    @property
    def is_chief(self) -> bool:
        """True on the node that should save models and write summaries (chief/master, else worker 0)."""
        if self.job_name in ("chief", "master"):
            return True
        has_chief = any(job in self.cluster_spec for job in ("chief", "master"))
        return self.job_name == "worker" and self.task_index == 0 and not has_chief

    def absolute_path(self, path: str) -> str:
        """Resolves ``path`` against ``defaultFS`` (see :func:`tfos.node.absolute_path`)."""
        return absolute_path(path, self.defaultFS, self.working_dir)

    def release_port(self) -> None:
        """Releases the port reserved for this node's TF server (needed only with ``release_port=False``)."""
        if self.tmp_socket is not None:
            self.tmp_socket.close()
            self.tmp_socket = None

    def export_saved_model(self, model: Any, export_dir: str, *args: Any, **kwargs: Any) -> str | None:
        """Saves ``model`` as a SavedModel on the chief only; other nodes write to a throwaway directory.

        Under MultiWorkerMirroredStrategy every worker must take part in saving (the save runs collectives),
        but only the chief's copy is kept. Returns the directory written by this node, or None if discarded.

        Args:
            model: a Keras model or a ``tf.Module``.
            export_dir: where the chief writes the SavedModel: a local path or a scheme TensorFlow writes itself
                (``gs://``) is written in place; ``s3://``, ``hdfs://`` and the other schemes of :mod:`tfos.fs`
                are written to a local temporary directory first and uploaded once complete
                (:func:`tfos.fs.uploaded_dir`), so readers never see half a model.
        """
        from .compat import export_saved_model

        if len(args) >= 2 or "signatures" in kwargs:
            # TensorFlowOnSpark's TF1 form was (sess, export_dir, tag_set, signatures): not available in TF 2.
            raise TypeError(
                "export_saved_model(model, export_dir) takes a Keras model or tf.Module in tfos; the TF1 "
                "(sess, export_dir, tag_set, signatures) form needs sessions, which TensorFlow 2 does not have."
            )
        return export_saved_model(model, export_dir, self.is_chief)

    def report_progress(self, step: int | None = None, epoch: int | None = None, **fields: Any) -> None:
        """Tells the driver this node is making progress (for custom training loops; Keras' ``fit`` output is
        read without it).

        Cheap enough to call every step: the latest values are written in the background at most twice a
        second and travel with the next heartbeat. They show in ``TFCluster.progress()`` and the progress
        display, and every call counts as progress for hang detection (``hang_timeout``).

        Args:
            step: the current step (any int).
            epoch: the current epoch.
            **fields: other numbers or strings to show, e.g. ``loss=0.25``.

        Raises:
            TypeError: a value is not a number, string, boolean or None.
        """
        from ._node import PROGRESS_FILE_ENV
        from ._node.progress import ProgressFile

        values = {**({"step": step} if step is not None else {}), **({"epoch": epoch} if epoch is not None else {}),
                  **fields}
        if self._progress is None:
            path = os.environ.get(PROGRESS_FILE_ENV)
            if not path:
                logger.debug("report_progress outside a tfos node: %s", values)
                return
            self._progress = ProgressFile(path)
        self._progress.report(values)

    def get_data_feed(self, train_mode: bool = True, qname_in: str = "input", qname_out: str = "output",
                      input_mapping: Any = None):
        """Returns the Spark data feed of this node (``InputMode.SPARK`` only); see :class:`tfos.TFNode.DataFeed`."""
        if self.mgr is None:
            raise RuntimeError(
                "ctx.get_data_feed() needs a cluster started with input_mode=TFCluster.InputMode.SPARK (and a "
                "chief/worker node; ps and evaluator nodes get no data); this node reads its own data."
            )
        from ._feed.datafeed import DataFeed

        return DataFeed(self.mgr, train_mode, qname_in, qname_out, input_mapping)

    def __repr__(self) -> str:
        return (
            f"TFNodeContext(worker_num={self.worker_num}, job_name={self.job_name!r}, task_index={self.task_index}, "
            f"host={self.host!r}, port={self.port}, num_workers={self.num_workers}, attempt={self.attempt})"
        )
