"""The ``tfrecord`` Spark data source (PySpark's Python Data Source API): read and write tf.train.Example files.

Where each part runs: Spark calls :meth:`TFRecordDataSource.schema`, ``reader()``, ``writer()`` and the writer's
``commit()``/``abort()`` in Python workers on the driver's host (not in the driver's own Python process), and
``read()``/``write()`` in executor tasks. None of them sees the driver process's environment as it is now, nor
Spark's Hadoop configuration, so :func:`tfos.dfutil.register` bakes the storage settings of the driver (``AWS_*``,
``TFOS_S3_*``, ``TFOS_HDFS_*``, ``HADOOP_CONF_DIR``, Spark's ``fs.s3a.*``) into the registered class as
``_driver_env``; readers and writers carry that mapping to the executors (pickled with them, never in options,
which Spark shows in plans, and never logged).

Writing is atomic per job: each task writes ``<path>/_temporary/<job>/<attempt>-part-NNNNN-<job>.tfrecord[.gz]``;
``commit()`` (on the driver, once every task succeeded) moves the files of the successful attempts into
``<path>``, after removing the old content in overwrite mode, then writes ``<path>/_SUCCESS`` and removes the
job's temporary directory; ``abort()`` removes the temporary directory. Readers skip ``_``- and ``.``-prefixed
names, so a job in progress is never read.

A failed job leaves nothing behind, although Spark calls ``abort()`` as soon as one task has failed for good,
while tasks of other partitions may still be writing: the writer marks the job open (``<job>/_OPEN``, made when
the writer is created, before any task runs); ``abort()`` removes the mark first, then the directory; a task
checks the mark after closing its file and, when it is gone, removes its own file. Either the task saw the mark
(so its file existed before ``abort()`` listed the directory) or it cleans up after itself.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import os
import posixpath
import time
import uuid
import zlib
from typing import Iterator, Mapping

from pyspark.sql.datasource import (DataSource, DataSourceArrowWriter, DataSourceReader, InputPartition,
                                    WriterCommitMessage)
from pyspark.sql.types import StructType

from .. import fs
from ..errors import ConfigError, DataError, StorageError
from . import columns as _columns, example as _example, tfrecord as _tfrecord

logger = logging.getLogger(__name__)

FORMAT = "tfrecord"
TEMPORARY = "_temporary"
SUCCESS = "_SUCCESS"
OPEN = "_OPEN"
_ABORT_TRIES = 5
DEFAULT_NUM_SAMPLES = 100
_BATCH_ROWS = 2048
_BATCH_BYTES = 8 << 20
_READ_BUFFER = 1 << 20
_COMPRESSIONS = {"none": "", "uncompressed": "", "": "", "gzip": ".gz"}
_GZIP_MAGIC = b"\x1f\x8b"

# Which process variables carry storage settings (see tfos.fs).
ENV_PREFIXES = ("AWS_", "TFOS_S3_", "TFOS_HDFS_")
ENV_NAMES = ("HADOOP_CONF_DIR", "KRB5CCNAME")


def storage_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The storage settings among ``environ`` (see ``ENV_PREFIXES`` and ``ENV_NAMES``)."""
    return {k: v for k, v in environ.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}


# --------------------------------------------------------------------------------------------------- reading

def _is_plain_tfrecord(head: bytes) -> bool:
    """Whether ``head`` (a file's first 12 bytes) is a valid TFRecord header (length and its masked CRC)."""
    return len(head) == 12 and _tfrecord.masked_crc(head[:8]) == int.from_bytes(head[8:], "little")


def _open(url: str, env: Mapping[str, str]):
    """``url`` opened for reading behind a C buffer (three small reads a record cost little then)."""
    if fs.is_local(url):
        return open(fs.normalize(url), "rb", buffering=_READ_BUFFER)
    fsys, path = fs.filesystem(url, env)
    return io.BufferedReader(fsys.open(path, "rb"), _READ_BUFFER)


def iter_records(url: str, env: Mapping[str, str]) -> Iterator[tuple[int, bytes]]:
    """Yields ``(offset, record)`` for each record of the TFRecord file ``url``, gzip-compressed or not.

    Compression is detected per file: a file that does not start with a valid TFRecord header but with gzip's
    magic bytes is read through gzip (offsets are then in the uncompressed stream).

    Raises:
        StorageError: the file cannot be opened or read.
        DataError: a truncated or corrupt record (file and byte offset in the message).
    """
    with fs.translated(url):
        with _open(url, env) as raw:
            head = raw.read(12)
            raw.seek(0)
            compressed = not _is_plain_tfrecord(head) and head.startswith(_GZIP_MAGIC)
            src = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
            name = url + (" (gzip; offsets in the uncompressed data)" if compressed else "")
            offset = 0
            try:
                for record in _tfrecord.read_records(src, name):
                    yield offset, record
                    offset += 16 + len(record)
            except (EOFError, zlib.error, OSError) as exc:
                if isinstance(exc, StorageError) or not compressed:
                    raise
                raise DataError(f"{name}: the gzip stream is damaged or truncated after {offset} bytes of "
                                f"records ({exc})") from None


def iter_examples(url: str, env: Mapping[str, str]) -> Iterator[tuple[int, dict, int]]:
    """Yields ``(record index, decoded Example, record size)`` for each record of ``url`` (:func:`iter_records`)."""
    for index, (offset, record) in enumerate(iter_records(url, env)):
        try:
            yield index, _example.decode(record), len(record)
        except DataError as exc:
            raise DataError(f"{url}: record {index} at byte offset {offset}: {exc}") from None


def sample_examples(files: list[str], env: Mapping[str, str], num_samples: int) -> list[dict]:
    """Up to ``num_samples`` decoded Examples, spread over the files: about ``num_samples / len(files)`` from each
    of the first files, at least one per file, in file order."""
    per_file = max(1, -(-num_samples // len(files)))
    sample: list[dict] = []
    for url in files:
        for index, example, _ in iter_examples(url, env):
            sample.append(example)
            if index + 1 >= per_file or len(sample) >= num_samples:
                break
        if len(sample) >= num_samples:
            break
    return sample


def infer_schema(files: list[str], env: Mapping[str, str], num_samples: int, binary_features) -> StructType:
    """The schema of the files from a sample of their records (see :func:`tfos._data.columns.infer_schema`).

    Raises:
        DataError: the files hold no record, or their records disagree on a feature's kind.
    """
    sample = sample_examples(files, env, num_samples)
    if not sample:
        raise DataError(f"{len(files)} TFRecord file(s) ({files[0]}{', ...' if len(files) > 1 else ''}) hold no "
                        "record to infer a schema from; pass a schema (spark.read.schema(...) or "
                        "loadTFRecords(..., schema=...))")
    schema = _columns.infer_schema(sample, binary_features)
    logger.info("inferred TFRecord schema from %d record(s) of %d file(s): %s", len(sample), len(files),
                schema.simpleString())
    return schema


class TFRecordReader(DataSourceReader):
    """Reads each file as one partition, in Arrow record batches.

    Args:
        files: the file URLs.
        schema: the DataFrame schema to produce.
        env: storage settings (see the module docstring).
    """

    def __init__(self, files: list[str], schema: StructType, env: Mapping[str, str]) -> None:
        self.files = files
        self.schema = schema
        self.env = dict(env)
        _columns.check_schema(schema, reading=True)

    def partitions(self):
        return [InputPartition(url) for url in self.files]

    def read(self, partition):
        builder = _columns.BatchBuilder(self.schema)
        url, pending, first, size = partition.value, [], 0, 0
        for index, example, nbytes in iter_examples(url, self.env):
            if not pending:
                first = index
            pending.append(example)
            size += nbytes
            if len(pending) >= _BATCH_ROWS or size >= _BATCH_BYTES:
                yield builder.build(pending, url, first)
                pending, size = [], 0
        if pending:
            yield builder.build(pending, url, first)

    def __repr__(self) -> str:  # never the env: it may hold secrets
        return f"TFRecordReader({len(self.files)} files, {self.schema.simpleString()})"


# --------------------------------------------------------------------------------------------------- writing

@dataclasses.dataclass
class WrittenFile(WriterCommitMessage):
    """What one write task reports: its temporary file (``None`` for an empty partition) and final name."""

    temp: str | None
    final: str
    rows: int
    size: int


class TFRecordWriter(DataSourceArrowWriter):
    """Writes one TFRecord file per non-empty partition and commits them atomically (module docstring).

    Args:
        url: the output directory.
        schema: the DataFrame schema (checked here, on the driver).
        overwrite: replace the directory's content at commit (else add to it).
        compression: ``"none"`` or ``"gzip"``.
        env: storage settings.
    """

    def __init__(self, url: str, schema: StructType, overwrite: bool, compression: str,
                 env: Mapping[str, str]) -> None:
        _columns.check_schema(schema)
        suffix = _COMPRESSIONS.get((compression or "").strip().lower())
        if suffix is None:
            raise ConfigError(f"Unknown TFRecord compression {compression!r}; use 'none' or 'gzip'")
        self.url, self.schema, self.overwrite, self.env = url, schema, overwrite, dict(env)
        self.suffix = suffix
        self.job = uuid.uuid4().hex[:12]
        fsys, self.root = fresh_filesystem(url, self.env)
        self.root = self.root.rstrip("/")
        self.job_dir = posixpath.join(self.root, TEMPORARY, self.job)
        self.open_mark = posixpath.join(self.job_dir, OPEN)
        _check_bucket(fsys, url, self.root)
        with fs.translated(url):
            if fs.scheme(url) != "s3":
                fsys.makedirs(self.job_dir, exist_ok=True)
            fsys.pipe_file(self.open_mark, b"")

    def __repr__(self) -> str:  # never the env: it may hold secrets
        return f"TFRecordWriter({self.url!r}, job {self.job}, overwrite={self.overwrite})"

    def write(self, iterator) -> WrittenFile:
        from pyspark import TaskContext

        task = TaskContext.get()
        part, attempt = (task.partitionId(), task.attemptNumber()) if task else (0, uuid.uuid4().hex[:6])
        name = f"part-{part:05d}-{self.job}.tfrecord{self.suffix}"
        final = posixpath.join(self.root, name)
        temp = posixpath.join(self.job_dir, f"{attempt}-{name}")
        fsys, _ = fs.filesystem(self.url, self.env)
        rows = size = 0
        out = sink = None
        with fs.translated(self.url):
            try:
                for batch in iterator:
                    if batch.num_rows == 0:
                        continue
                    if out is None:
                        if fs.scheme(self.url) != "s3":
                            fsys.makedirs(self.job_dir, exist_ok=True)
                        out = fsys.open(temp, "wb")
                        sink = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) \
                            if self.suffix else out
                    chunk = b"".join(_tfrecord.frame(r) for r in _columns.encode_batch(batch, self.schema))
                    assert sink is not None  # opened with the first rows
                    sink.write(chunk)
                    rows += batch.num_rows
                    size += len(chunk)
            finally:
                if sink is not None and sink is not out:
                    sink.close()
                if out is not None:
                    out.close()
            fsys.invalidate_cache()
            if out is not None and not fsys.exists(self.open_mark):  # aborted while this task wrote
                _remove_quietly(fsys, temp)
                _remove_job_dir(fsys, self.root, self.job_dir, quiet=True)
                return WrittenFile(None, final, 0, 0)
        return WrittenFile(temp if out is not None else None, final, rows, size)

    def commit(self, messages) -> None:
        fsys, _ = fresh_filesystem(self.url, self.env)
        files = [m for m in messages if m is not None and m.temp]
        with fs.translated(self.url):
            if self.overwrite:
                _remove_content(fsys, self.root)
            for message in files:
                fsys.mv(message.temp, message.final)
            fsys.pipe_file(posixpath.join(self.root, SUCCESS), b"")
            _remove_job_dir(fsys, self.root, self.job_dir)
        logger.info("wrote %d TFRecord file(s), %d rows, to %s", len(files), sum(m.rows for m in files), self.url)

    def abort(self, messages) -> None:
        fsys, _ = fresh_filesystem(self.url, self.env)
        with fs.translated(self.url):
            _remove_quietly(fsys, self.open_mark)  # first: a task that finishes from now on cleans up itself
            _remove_job_dir(fsys, self.root, self.job_dir, quiet=True)
        logger.warning("TFRecord write to %s failed; its temporary files were removed", self.url)


def _check_bucket(fsys, url: str, root: str) -> None:
    if fs.scheme(url) != "s3":
        return
    bucket = root.partition("/")[0]
    with fs.translated(url):
        try:
            fsys.call_s3("head_bucket", Bucket=bucket)
        except FileNotFoundError:
            raise StorageError(f"Cannot write {url}: bucket {bucket!r} does not exist at this S3 endpoint "
                               f"({fsys.storage_options.get('endpoint_url') or 'AWS'}); create it first, or check "
                               "AWS_ENDPOINT_URL / spark.hadoop.fs.s3a.endpoint") from None


def fresh_filesystem(url: str, env: Mapping[str, str]):
    """:func:`tfos.fs.filesystem` with its listing cache dropped: fsspec keeps one instance per settings in a
    process, and Spark reuses its Python workers, so a listing cached by an earlier job would be stale."""
    fsys, path = fs.filesystem(url, env)
    fsys.invalidate_cache()
    return fsys, path


def _remove_content(fsys, root: str) -> None:
    """Removes everything in ``root`` except the temporary directory of jobs in progress."""
    if not fsys.exists(root):
        return
    if not fsys.isdir(root):
        fsys.rm(root)
        return
    for entry in fsys.ls(root, detail=False):
        if posixpath.basename(entry.rstrip("/")) != TEMPORARY:
            fsys.rm(entry, recursive=True)


def _remove_quietly(fsys, path: str) -> None:
    try:
        fsys.rm(path)
    except FileNotFoundError:
        pass


def _remove_job_dir(fsys, root: str, job_dir: str, quiet: bool = False) -> None:
    """Removes the job's temporary directory, then ``_temporary`` if no other job uses it.

    With ``quiet`` (an aborted job, whose tasks may still be finishing and removing their own files at the same
    time), a removal that races with them is tried again, and one that still fails is logged, not raised: the
    job's own error is what the user must see.
    """
    temporary = posixpath.join(root, TEMPORARY)
    for attempt in range(_ABORT_TRIES if quiet else 1):
        try:
            fsys.invalidate_cache()
            if fsys.exists(job_dir):
                fsys.rm(job_dir, recursive=True)
            if fsys.exists(temporary) and not fsys.ls(temporary, detail=False):
                fsys.rm(temporary, recursive=True)
            return
        except OSError as exc:  # FileNotFoundError, or "directory not empty": a task is removing its file
            if not quiet:
                raise
            if attempt == _ABORT_TRIES - 1:
                logger.warning("Could not remove %s after a failed write (%s); it is never read and can be "
                               "deleted", job_dir, exc)
            time.sleep(0.05 * (attempt + 1))


# ---------------------------------------------------------------------------------------------- data source

class TFRecordDataSource(DataSource):
    """``spark.read.format("tfrecord")`` and ``df.write.format("tfrecord")``; see :mod:`tfos.dfutil`.

    Options: ``path`` (or several paths given to ``load``), ``binary_features`` (comma-separated names of bytes
    features to read as binary), ``num_samples`` (records sampled for schema inference, default 100),
    ``compression`` (writing: ``none`` or ``gzip``; reading detects it per file).
    """

    _driver_env: dict = {}

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def _env(self) -> dict:
        return {**storage_env(os.environ), **self._driver_env}

    def _paths(self) -> list[str]:
        paths = self.options.get("paths")
        found = json.loads(paths) if paths else []
        if self.options.get("path"):
            found.insert(0, self.options["path"])
        if not found:
            raise ConfigError("No path given: spark.read.format('tfrecord').load(path) or "
                              "df.write.format('tfrecord').save(path)")
        return found

    def _files(self) -> list[str]:
        paths, env = self._paths(), self._env()
        for path in paths:
            fresh_filesystem(path, env)
        return fs.expand(paths, env)

    def _binary_features(self) -> list[str]:
        return [n.strip() for n in (self.options.get("binary_features") or "").split(",") if n.strip()]

    def _num_samples(self) -> int:
        text = self.options.get("num_samples") or str(DEFAULT_NUM_SAMPLES)
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(f"num_samples must be a positive integer, not {text!r}")
        return value

    def schema(self) -> StructType:
        return infer_schema(self._files(), self._env(), self._num_samples(), self._binary_features())

    def reader(self, schema: StructType) -> TFRecordReader:
        return TFRecordReader(self._files(), schema, self._env())

    def writer(self, schema: StructType, overwrite: bool) -> TFRecordWriter:
        paths = self._paths()
        if len(paths) != 1:
            raise ConfigError(f"Writing TFRecords needs exactly one path, not {len(paths)}")
        return TFRecordWriter(paths[0], schema, overwrite, self.options.get("compression") or "none", self._env())
