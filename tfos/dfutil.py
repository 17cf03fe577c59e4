"""Spark DataFrames <-> TFRecord files of tf.train.Example, on local disk, S3 or HDFS; TensorFlow not needed.

TensorFlowOnSpark's functions, plus a Spark data source named ``tfrecord``::

    from tfos import dfutil

    dfutil.saveAsTFRecords(df, "s3://bucket/mnist/train", mode="overwrite", compression="gzip")
    df = dfutil.loadTFRecords(spark, "s3://bucket/mnist/train", binary_features=["image_png"])

    dfutil.register(spark)                      # once, after the storage settings are in place
    df = spark.read.format("tfrecord").load("hdfs://nn/data/train")
    df.write.format("tfrecord").mode("append").option("compression", "gzip").save("/data/out")

Types, nulls and schema inference are described in :mod:`tfos._data.columns`; in short: integer types and booleans
become int64 lists, float and double become float lists (float32), strings and binary become bytes lists, arrays
of those become lists of any length, ML vectors become float lists; a null is an absent feature. Reading infers
each column from a sample of records (``num_samples``, default 100, spread over the files): a feature with exactly
one value in every sampled record is a scalar column, else an array column; floats read as FloatType (TFoS read
DoubleType: pass ``schema=`` for that); bytes read as strings unless named in ``binary_features``.

Writing is atomic (a ``_temporary`` directory, then a commit that moves the files into place and writes
``_SUCCESS``); Spark's Python data sources only accept the ``append`` and ``overwrite`` modes (Spark's default
mode, ``errorifexists``, is refused by Spark itself), so :func:`saveAsTFRecords` is where all four modes are.

Paths are local, ``file://``, ``s3://``/``s3a://``, ``hdfs://`` or any fsspec scheme (:mod:`tfos.fs`). Storage
settings come from the driver: its ``AWS_*``, ``TFOS_S3_*``, ``TFOS_HDFS_*``, ``HADOOP_CONF_DIR`` variables and
Spark's ``spark.hadoop.fs.s3a.*`` settings (which win), read when the source is registered (:func:`register`,
which the two functions call for you) and carried to the executors inside the job, never in its options or logs.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from typing import Iterable, Sequence

from . import fs
from ._data import columns as _columns, example as _example
from ._data.source import FORMAT, TFRecordDataSource, fresh_filesystem, storage_env
from .errors import ConfigError, DataError, StorageError

logger = logging.getLogger(__name__)

__all__ = ["fromTFExample", "infer_schema", "isLoadedDF", "loadTFRecords", "register", "saveAsTFRecords",
           "toTFExample"]

SAVE_MODES = ("append", "overwrite", "errorifexists", "ignore")
_MODE_ALIASES = {"error": "errorifexists", "default": "errorifexists"}
_loaded: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # DataFrame -> the paths it was loaded from
loadedDF = _loaded  # TensorFlowOnSpark's name: DataFrames from loadTFRecords -> their source paths (a list)
# The text of a tfos error raised in a Spark task, inside the error Spark raises on the driver.
_REMOTE_ERROR = re.compile(
    r"tfos\.errors\.(DataError|StorageError|ConfigError): (.*?)(?:\n\n|\n\tat |\nJVM |\n SQLSTATE|$)", re.S)


def _session(spark_or_sc=None):
    from pyspark.sql import SparkSession

    if spark_or_sc is None or not isinstance(spark_or_sc, SparkSession):
        return SparkSession.builder.getOrCreate() if spark_or_sc is None \
            else SparkSession.builder.config(conf=spark_or_sc.getConf()).getOrCreate()
    return spark_or_sc


def driver_env(spark) -> dict[str, str]:
    """The storage settings readers and writers need: this process's ``AWS_*``/``TFOS_S3_*``/``TFOS_HDFS_*``/
    ``HADOOP_CONF_DIR`` variables, overridden by :func:`tfos.fs.s3a_env` of Spark's ``fs.s3a.*`` settings."""
    return {**storage_env(os.environ), **fs.spark_env(spark)}


def register(spark=None) -> None:
    """Registers the ``tfrecord`` data source with ``spark``, with the storage settings as they are now.

    Call it again after changing ``AWS_*`` variables or ``fs.s3a.*`` settings: the data source's planning and
    tasks run in other processes, which only see the settings captured here.

    Args:
        spark: a SparkSession (or SparkContext); defaults to the active session.
    """
    spark = _session(spark)
    env = driver_env(spark)
    source = type("TFRecordDataSource", (TFRecordDataSource,), {"_driver_env": env, "__module__": __name__})
    source.__qualname__ = "register.<locals>.TFRecordDataSource"  # not importable: cloudpickle sends it by value
    spark.dataSource.register(source)
    logger.debug("registered the %r data source (storage settings: %s)", FORMAT, sorted(env))


def _mode(mode: str) -> str:
    name = _MODE_ALIASES.get(str(mode).strip().lower(), str(mode).strip().lower())
    if name not in SAVE_MODES:
        raise ConfigError(f"Unknown save mode {mode!r}; use one of {', '.join(SAVE_MODES)}")
    return name


def _exists(url: str, env) -> bool:
    fsys, path = fresh_filesystem(url, env)
    with fs.translated(url):
        return fsys.exists(path)


def _reraise_remote(exc: Exception) -> None:
    """Raises the tfos error a Spark task raised, if ``exc`` (Spark's error on the driver) carries one."""
    match = _REMOTE_ERROR.search(str(exc))
    if match:
        kind = {"DataError": DataError, "StorageError": StorageError, "ConfigError": ConfigError}[match.group(1)]
        raise kind(match.group(2).strip()) from exc


def saveAsTFRecords(df, output_dir: str, mode: str = "errorifexists", compression: str = "none") -> None:
    """Saves a DataFrame as TFRecord files of tf.train.Example, one file per non-empty partition.

    Args:
        df: the DataFrame; its column types must be supported (see the module docstring).
        output_dir: the output directory (local, ``file://``, ``s3://``/``s3a://``, ``hdfs://``, ...).
        mode: Spark's save modes: ``errorifexists`` (the default, like TensorFlowOnSpark, which failed on an
            existing directory), ``overwrite`` (replaces the directory's content when the write commits),
            ``append`` (adds files), ``ignore`` (does nothing if the directory exists).
        compression: ``"none"`` or ``"gzip"`` (files are then named ``part-*.tfrecord.gz``).

    Raises:
        DataError: a column type cannot be written, or an array holds a null.
        StorageError: ``output_dir`` exists (mode ``errorifexists``), or the storage failed (missing bucket,
            refused credentials, unreachable endpoint).
        ConfigError: unknown ``mode`` or ``compression``.
    """
    mode = _mode(mode)
    _columns.check_schema(df.schema)
    spark = df.sparkSession
    register(spark)
    env = driver_env(spark)
    if mode in ("errorifexists", "ignore") and _exists(output_dir, env):
        if mode == "ignore":
            logger.info("%s exists; nothing written (mode='ignore')", output_dir)
            return
        raise StorageError(f"{output_dir} already exists; pass mode='overwrite' to replace it or mode='append' to "
                           "add files to it")
    writer = df.write.format(FORMAT).mode("overwrite" if mode == "overwrite" else "append")
    try:
        writer.option("compression", compression).save(output_dir)
    except Exception as exc:
        _reraise_remote(exc)
        raise


def loadTFRecords(sc, input_dir: str | Sequence[str], binary_features: Iterable[str] = (), schema=None,
                  num_samples: int = 100):
    """Loads TFRecord files of tf.train.Example into a DataFrame, one partition per file.

    Args:
        sc: a SparkContext or SparkSession.
        input_dir: a directory (its files, skipping ``_``/``.``-prefixed names), a file, a glob, or a list of them.
        binary_features: bytes features to read as BinaryType; the others are StringType (UTF-8).
        schema: the DataFrame schema (a StructType or DDL string), instead of inferring it. Features that are not
            columns are skipped; columns with no feature are null.
        num_samples: records read to infer the schema (spread over the files).

    Returns:
        The DataFrame; :func:`isLoadedDF` is true for it.

    Raises:
        StorageError: no file matches ``input_dir``, or the storage failed.
        DataError: the records disagree on a feature's kind, or hold none to infer from.
    """
    spark = _session(sc)
    register(spark)
    reader = spark.read.format(FORMAT).option("num_samples", str(num_samples))
    names = list(binary_features or ())
    if names:
        reader = reader.option("binary_features", ",".join(names))
    if schema is not None:
        reader = reader.schema(schema)
    paths = [input_dir] if isinstance(input_dir, str) else list(input_dir)
    if not paths:
        raise ConfigError("loadTFRecords needs at least one path")
    try:
        df = reader.load(paths[0] if len(paths) == 1 else paths)
    except Exception as exc:
        _reraise_remote(exc)
        raise
    _loaded[df] = paths
    return df


def isLoadedDF(df) -> bool:
    """Whether ``df`` was returned by :func:`loadTFRecords` (TensorFlowOnSpark's Spark ML pipeline check)."""
    try:
        return df in _loaded
    except TypeError:
        return False


# ------------------------------------------------------------------------------- TensorFlowOnSpark's row helpers

_DTYPE_KINDS = {"boolean": _example.INT64, "tinyint": _example.INT64, "smallint": _example.INT64,
                "int": _example.INT64, "bigint": _example.INT64, "float": _example.FLOAT,
                "double": _example.FLOAT, "string": _example.BYTES, "binary": _example.BYTES}


def _dtype_kind(name: str, dtype: str) -> tuple[str, bool]:
    inner = dtype[len("array<"):-1] if dtype.startswith("array<") and dtype.endswith(">") else None
    kind = _DTYPE_KINDS.get(inner if inner is not None else dtype)
    if kind is None:
        raise DataError(f"Column {name!r} has type {dtype}, which cannot be written as a TFRecord feature. "
                        "Supported: integer types, boolean, float, double, string, binary and arrays of those")
    return kind, inner is not None


def toTFExample(dtypes: Sequence[tuple[str, str]]):
    """A ``mapPartitions`` function: Rows with these ``DataFrame.dtypes`` -> ``(serialized Example, None)``.

    The row-by-row path of TensorFlowOnSpark (``df.rdd.mapPartitions(toTFExample(df.dtypes))``);
    :func:`saveAsTFRecords` is much faster.

    Raises:
        DataError: a column type cannot be written (raised here, before any row is converted).
    """
    plan = [(name, *_dtype_kind(name, dtype)) for name, dtype in dtypes]

    def convert(rows):
        for row in rows:
            features = {}
            for name, kind, array in plan:
                value = row[name]
                if value is not None:
                    features[name] = (kind, value if array else (value,))
            yield bytearray(_example.encode(features)), None

    return convert


def _as_example(example) -> dict:
    if isinstance(example, dict):
        return example
    if hasattr(example, "SerializeToString"):  # a tf.train.Example
        example = example.SerializeToString()
    return _example.decode(bytes(example))


def infer_schema(example, binary_features: Iterable[str] = ()):
    """The DataFrame schema of one tf.train.Example (TensorFlowOnSpark's function; see the module docstring).

    Args:
        example: a ``tf.train.Example``, its serialized bytes, or a decoded Example.
        binary_features: bytes features to type as BinaryType.

    Returns:
        A StructType, columns sorted by name.
    """
    return _columns.infer_schema([_as_example(example)], list(binary_features or ()))


def fromTFExample(iter, binary_features: Iterable[str] = ()):  # noqa: A002 - TensorFlowOnSpark's signature
    """A ``mapPartitions`` body: serialized Examples (or ``(bytes, None)`` pairs) -> Rows.

    As in TensorFlowOnSpark: a feature with one value becomes a scalar, with several a list, with none ``None``;
    bytes become ``str`` unless named in ``binary_features`` (then ``bytearray``); fields are sorted by name.

    Returns:
        A list of ``pyspark.sql.Row``.
    """
    from pyspark.sql import Row

    binary = set(binary_features or ())
    rows = []
    for record in iter:
        data = record[0] if isinstance(record, tuple) else record
        decoded = _example.decode(bytes(data))
        values = {}
        for name in sorted(decoded):
            kind, items = decoded[name]
            items = [float(v) for v in items] if kind == _example.FLOAT else list(items)
            if kind == _example.BYTES:
                items = [bytearray(v) if name in binary else v.decode("utf-8") for v in items]
            values[name] = None if not items else items[0] if len(items) == 1 else items
        rows.append(Row(**values))
    return rows
