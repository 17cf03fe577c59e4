"""TFRecords for main_fun (InputMode.TENSORFLOW) from local disk, S3, HDFS or any fsspec file system.

:func:`tfrecord_dataset` is the one call a main_fun needs::

    def main_fun(args, ctx):
        ds = tfos.data.tfrecord_dataset(ctx.absolute_path(args.data))   # s3://, hdfs://, file://, relative
        ds = ds.map(parse).batch(64)
        model.fit(ds, ...)

Remote files are streamed: background threads download the next few files into a private temporary directory
while TensorFlow reads the current one, and each file is deleted once read, so local disk holds at most
``prefetch_files + 1`` files at any time (memory holds none). Local files are read in place.
"""

from __future__ import annotations

import collections
import concurrent.futures
import gzip
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from typing import Iterator, Sequence

from . import fs
from ._data import tfrecord as _tfrecord
from .errors import ConfigError, DataError, StorageError

logger = logging.getLogger(__name__)

__all__ = ["SyncedDir", "describe_failure", "shard_of", "tfrecord_dataset"]

_COMPRESSIONS = {None: "", "": "", "NONE": "", "GZIP": "GZIP", "ZLIB": "ZLIB"}


def shard_of(tf_config: dict | None = None) -> tuple[int, int]:
    """This process's ``(num_shards, index)`` among the TF nodes that train (chief and workers).

    The chief, if any, is shard 0 and ``worker i`` is shard ``i + 1``; without a chief ``worker i`` is shard ``i``.
    ps and evaluator nodes (and processes without ``TF_CONFIG``) read everything: ``(1, 0)``.

    Args:
        tf_config: a parsed ``TF_CONFIG``; defaults to the ``TF_CONFIG`` environment variable.
    """
    if tf_config is None:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster, task = tf_config.get("cluster") or {}, tf_config.get("task") or {}
    chiefs = len(cluster.get("chief", ())) + len(cluster.get("master", ()))
    workers = len(cluster.get("worker", ()))
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in ("chief", "master"):
        return max(1, chiefs + workers), 0
    if kind == "worker":
        return chiefs + workers, chiefs + index
    return 1, 0


def tfrecord_dataset(
    paths: str | Sequence[str],
    compression: str | None = None,
    shard: bool = True,
    num_shards: int | None = None,
    index: int | None = None,
    prefetch_files: int = 2,
    verify: bool = False,
):
    """A ``tf.data.Dataset`` of the serialized records in TFRecord files, split across the training nodes.

    Sharding is by file when there are at least as many files as shards (each node reads whole files), else by
    record (each node reads every file and keeps every ``num_shards``-th record). tf.data's own auto-sharding is
    turned off on the result, so ``MultiWorkerMirroredStrategy`` does not shard it a second time.

    Args:
        paths: files, directories (their files, skipping ``_*`` and ``.*``) or globs; local paths, ``file://``,
            ``s3://`` (``s3a://``), ``hdfs://`` or another fsspec scheme. See :mod:`tfos.fs` for credentials.
        compression: ``None``/``""`` (default), ``"GZIP"`` or ``"ZLIB"``.
        shard: split the files across the nodes of ``TF_CONFIG`` (see :func:`shard_of`); False reads all.
        num_shards: override the number of shards (with ``index``).
        index: override this node's shard index.
        prefetch_files: remote files downloaded ahead of the one being read.
        verify: check every record's data CRC before TensorFlow reads each file, so that a damaged file fails
            with its name and byte offset before any of it is used (uncompressed files only; it costs a second
            pass over the data). Off by default: TensorFlow checks the CRCs as it reads, and when it reports a
            damaged record, :func:`describe_failure` (which tfos applies to main_fun's errors) finds the file.
            Either way each uncompressed file's framing (record lengths and their CRCs, not the data) is walked
            before TensorFlow reads it, in the background: TensorFlow takes a file cut short inside a record
            header for a complete one and silently drops the rest, where tfos raises a ``DataError`` naming the
            file and byte offset.

    Returns:
        A ``tf.data.Dataset`` of scalar ``tf.string`` records; it can be iterated again (each epoch streams the
        files again).

    Raises:
        ConfigError: bad ``compression``, ``index`` or ``prefetch_files``.
        tfos.errors.StorageError: no file matches, a path is missing or the storage cannot be reached.
    """
    import tensorflow as tf

    try:
        compression_type = _COMPRESSIONS[compression.upper() if compression else compression]
    except KeyError:
        raise ConfigError(f"compression must be None, 'GZIP' or 'ZLIB', not {compression!r}") from None
    if prefetch_files < 0:
        raise ConfigError(f"prefetch_files must be >= 0, not {prefetch_files}")
    files = _expand(paths)
    shards, me = _shards(shard, num_shards, index)
    by_record = len(files) < shards
    mine = files if by_record else files[me::shards]
    logger.info("tfrecord_dataset: %d of %d files (shard %d of %d, by %s)", len(mine), len(files), me, shards,
                "record" if by_record else "file")
    check = "" if compression_type else "data" if verify else "framing"
    local = _LocalFiles(mine, prefetch_files, check, compression_type)
    paths = tf.data.Dataset.from_generator(local, output_signature=tf.TensorSpec((), tf.string))
    # TFRecordDataset over the dataset of paths: one flat_map, as for a list of files. (flat_map with a
    # TFRecordDataset per path nests a second one, and a 1 MiB buffer, not TensorFlow's 256 KiB, read slower too.)
    ds = tf.data.TFRecordDataset(paths, compression_type or None)
    if by_record and shards > 1:
        ds = ds.shard(shards, me)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


# The files this process's tfrecord_datasets started reading last (url, compression), newest last.
_RECENT: collections.deque = collections.deque(maxlen=8)
_DAMAGE = re.compile(r"(corrupted|truncated) record at \d+")


def describe_failure(exc: BaseException) -> str | None:
    """Names the damaged file behind TensorFlow's "corrupted record at N" error, which names no file.

    Re-reads the files that :func:`tfrecord_dataset` started last in this process, newest first, and returns the
    first damage found ("<url>: corrupted record data (CRC mismatch) at byte offset N; ..."), or which files were
    being read if none is found. tfos adds this to the failure report of a main_fun that raised such an error.

    Returns:
        The description, or None when ``exc`` is not about a damaged TFRecord or no file was being read.
    """
    if not _DAMAGE.search(str(exc)) or not _RECENT:
        return None
    recent = list(dict.fromkeys(reversed(_RECENT)))
    for url, compression in recent:
        try:
            _check_url(url, compression)
        except DataError as damage:
            return str(damage)
        except Exception:  # noqa: BLE001 - best effort: the original error stands
            continue
    return "tfos.data was reading " + ", ".join(url for url, _ in recent) + " when TensorFlow reported this"


def _check_url(url: str, compression: str) -> None:
    with tempfile.TemporaryDirectory(prefix="tfos-check-") as tmp:
        path = fs.normalize(url) if fs.is_local(url) else fs.download(url, os.path.join(tmp, "file"))
        if not compression:
            _tfrecord.check_file(path, name=url)
            return
        opener = gzip.open if compression == "GZIP" else _zlib_stream
        with opener(path) as src:
            for _ in _tfrecord.read_records(src, url):
                pass


def _zlib_stream(path: str):
    import io
    import zlib

    with open(path, "rb") as f:
        return io.BytesIO(zlib.decompress(f.read()))


def _expand(paths: str | Sequence[str]) -> list[str]:
    """fs.expand, except that schemes TensorFlow reads itself (``gs://``) are listed and read by TensorFlow."""
    import tensorflow as tf

    paths = [paths] if isinstance(paths, str) else list(paths)
    found: list[str] = []
    for pattern in paths:
        if fs.is_local(pattern) or not fs.writable_by_tensorflow(pattern):
            found += fs.expand(pattern)
            continue
        matches = sorted(tf.io.gfile.glob(pattern)) if any(c in pattern for c in "*?[") else (
            sorted(f"{pattern.rstrip('/')}/{n}" for n in tf.io.gfile.listdir(pattern)
                   if not n.startswith(("_", ".")) and not n.endswith("/"))
            if tf.io.gfile.isdir(pattern) else [pattern])
        if not matches:
            raise StorageError(f"No files match {pattern}")
        found += matches
    return list(dict.fromkeys(found))


def _shards(shard: bool, num_shards: int | None, index: int | None) -> tuple[int, int]:
    if num_shards is None and index is None:
        return shard_of() if shard else (1, 0)
    if num_shards is None or index is None:
        raise ConfigError("num_shards and index go together: give both or neither")
    if not 0 <= index < num_shards:
        raise ConfigError(f"index must be in [0, num_shards={num_shards}), not {index}")
    return num_shards, index


class _LocalFiles:
    """A generator factory for ``Dataset.from_generator``: yields local paths of the files, in order.

    Remote files are downloaded ``prefetch`` ahead by a thread pool into a temporary directory; a file is deleted
    when the next one is requested (TensorFlow has then read it through) and the directory when the iteration
    ends or is abandoned. The pool also checks each file (``check``: ``"data"`` every CRC, ``"framing"`` record
    lengths and header CRCs only, ``""`` nothing) before it is handed on.
    """

    def __init__(self, urls: list[str], prefetch: int, check: str, compression: str = "") -> None:
        self._urls, self._prefetch, self._check, self._compression = urls, prefetch, check, compression

    def __call__(self) -> Iterator[str]:
        tmp = tempfile.mkdtemp(prefix="tfos-tfrecords-")
        pool = concurrent.futures.ThreadPoolExecutor(max(1, self._prefetch), thread_name_prefix="tfos-fetch")
        pending: list[tuple[str, concurrent.futures.Future]] = []
        try:
            upcoming = iter(enumerate(self._urls))
            for _ in range(self._prefetch + 1):
                self._submit(pool, pending, upcoming, tmp)
            while pending:
                url, future = pending.pop(0)
                path = future.result()
                self._submit(pool, pending, upcoming, tmp)
                _RECENT.append((url, self._compression))
                yield path
                if path.startswith(tmp):
                    os.remove(path)
        finally:
            for _, future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(tmp, ignore_errors=True)

    def _submit(self, pool, pending, upcoming, tmp: str) -> None:
        item = next(upcoming, None)
        if item is not None:
            number, url = item
            pending.append((url, pool.submit(self._fetch, url, os.path.join(tmp, f"{number:06d}.tfrecord"))))

    def _fetch(self, url: str, target: str) -> str:
        if not fs.is_local(url) and fs.writable_by_tensorflow(url):
            return url  # TensorFlow reads this scheme itself (gs://)
        path = fs.normalize(url) if fs.is_local(url) else fs.download(url, target)
        if self._check:
            _tfrecord.check_file(path, check_data=self._check == "data", name=url)
        return path


def _tree_state(root: str) -> dict[str, tuple[int, float]]:
    state = {}
    for folder, _, names in os.walk(root):
        for name in names:
            full = os.path.join(folder, name)
            try:
                st = os.stat(full)
            except FileNotFoundError:
                continue
            state[os.path.relpath(full, root)] = (st.st_size, st.st_mtime)
    return state


class SyncedDir:
    """A local directory mirrored to a remote ``url`` (S3, HDFS, ...): for checkpoints and TensorBoard logs.

    On :meth:`start` (or entering the ``with`` block) the remote contents are copied down, so a job can resume
    from checkpoints saved by an earlier attempt; then every ``interval`` seconds, and once more on :meth:`close`,
    files that are new or changed are uploaded, each one atomically (see :func:`tfos.fs.upload`). Deletions are
    not mirrored. TensorFlow writes to :attr:`path` as to any local directory::

        with tfos.data.SyncedDir("s3://bucket/run7/backup") as backup:
            model.fit(ds, callbacks=[tf.keras.callbacks.BackupAndRestore(backup.path)])

    Args:
        url: the remote directory.
        interval: seconds between uploads.
        local_dir: the local directory to use (default: a new temporary one, removed on close).
    """

    def __init__(self, url: str, interval: float = 30.0, local_dir: str | None = None) -> None:
        if interval <= 0:
            raise ConfigError(f"interval must be > 0, not {interval}")
        self.url, self.interval = url.rstrip("/"), interval
        self._own = local_dir is None
        self.path = local_dir or tempfile.mkdtemp(prefix="tfos-synced-")
        self._uploaded: dict[str, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> "SyncedDir":
        """Copies the remote contents down and starts the periodic upload."""
        fs.download_tree(self.url, self.path)
        self._uploaded = _tree_state(self.path)
        self._thread = threading.Thread(target=self._loop, name="tfos-synced-dir", daemon=True)
        self._thread.start()
        return self

    def sync(self) -> int:
        """Uploads new or changed files now; returns how many were uploaded."""
        with self._lock:
            count = 0
            for rel, stamp in _tree_state(self.path).items():
                if self._uploaded.get(rel) != stamp:
                    fs.upload(os.path.join(self.path, rel), f"{self.url}/{rel}")
                    self._uploaded[rel] = stamp
                    count += 1
            return count

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - a failed periodic upload is retried; close() reports for real
                logger.warning("periodic upload of %s to %s failed; retrying in %.0f s", self.path, self.url,
                               self.interval, exc_info=True)

    def close(self) -> None:
        """Stops the periodic upload, uploads what changed since the last one, and removes a temporary dir."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.sync()
        finally:
            if self._own:
                shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "SyncedDir":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()
