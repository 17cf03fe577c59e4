"""DataFrame <-> TFRecord throughput of tfos.dfutil, against Spark's own parquet on the same DataFrame.

One cached DataFrame of N rows (784 random float32 in an ``array<float>`` + an int64 label), on a
``local-cluster[2,1,1024]`` master (2 executors of 1 core, the integration tests' size), 4 partitions:

- write: ``saveAsTFRecords`` (plain and gzip) vs ``df.write.parquet`` (Spark's default snappy), overwrite mode.
- read: ``loadTFRecords`` with a given schema, and with the schema inferred (100 records sampled) vs
  ``spark.read.parquet``; each read is consumed whole by Spark's ``noop`` writer (every column of every row).
- codec alone, one process, no Spark: our wire-format encoder/decoder (``tfos._data.example``) vs the ``protobuf``
  package (upb) with tf.train.Example's message definition built at run time, on the same records.

MB/s counts the rows' payload (785 x 4 bytes a row), the same figure for every variant, so the ratios are
ratios of rows/s. Run: ``.venv/bin/python bench/dfutil_throughput.py [--rows 60000] [--repeats 3]``; writes
``bench/results/dfutil_throughput.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

import _results  # bench/_results.py (the script's own directory is on sys.path)

FEATURES = 784
ROW_BYTES = FEATURES * 4 + 8
PARTITIONS = 4
MASTER = "local-cluster[2,1,1024]"


def make_df(spark, rows: int):
    import pyarrow as pa

    def generate(batches):
        for batch in batches:
            ids = batch.column(0).to_numpy()
            rng = np.random.default_rng(int(ids[0]) if len(ids) else 0)
            values = rng.random((len(ids), FEATURES), dtype=np.float32)
            image = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), FEATURES).cast(
                pa.list_(pa.float32()))
            yield pa.RecordBatch.from_arrays([image, pa.array(ids % 10)], names=["image", "label"])

    df = spark.range(0, rows, 1, PARTITIONS).mapInArrow(generate, "image array<float>, label long").cache()
    assert df.count() == rows
    return df


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _consume(df) -> None:
    df.write.format("noop").mode("overwrite").save()


def _dir_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 1e6


def spark_variants(spark, df, rows: int, work: str, runs: dict, sizes: dict) -> None:
    from tfos import dfutil

    tfr, gz, pq = (os.path.join(work, name) for name in ("tfrecord", "tfrecord_gz", "parquet"))
    schema = "image array<float>, label long"
    steps = {
        "write_parquet": lambda: df.write.mode("overwrite").parquet(pq),
        "write_tfrecord": lambda: dfutil.saveAsTFRecords(df, tfr, mode="overwrite"),
        "write_tfrecord_gzip": lambda: dfutil.saveAsTFRecords(df, gz, mode="overwrite", compression="gzip"),
        "read_parquet": lambda: _consume(spark.read.parquet(pq)),
        "read_tfrecord": lambda: _consume(dfutil.loadTFRecords(spark, tfr, schema=schema)),
        "read_tfrecord_inferred": lambda: _consume(dfutil.loadTFRecords(spark, tfr)),
        "read_tfrecord_gzip": lambda: _consume(dfutil.loadTFRecords(spark, gz, schema=schema)),
    }
    for name, step in steps.items():
        runs.setdefault(name, []).append(rows / _timed(step))
    sizes.update(parquet=_dir_mb(pq), tfrecord=_dir_mb(tfr), tfrecord_gzip=_dir_mb(gz))


def _protobuf_example_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="bench_example.proto", package="bench", syntax="proto3")
    f = descriptor_pb2.FieldDescriptorProto
    for name, kind in (("BytesList", f.TYPE_BYTES), ("FloatList", f.TYPE_FLOAT), ("Int64List", f.TYPE_INT64)):
        fdp.message_type.add(name=name).field.add(name="value", number=1, type=kind, label=f.LABEL_REPEATED)
    feature = fdp.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate((("bytes_list", "BytesList"), ("float_list", "FloatList"),
                                                 ("int64_list", "Int64List")), start=1):
        feature.field.add(name=name, number=number, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                          type_name=f".bench.{type_name}", oneof_index=0)
    features = fdp.message_type.add(name="Features")
    features.field.add(name="feature", number=1, type=f.TYPE_MESSAGE, label=f.LABEL_REPEATED,
                       type_name=".bench.Features.FeatureEntry")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL, type_name=".bench.Feature")
    fdp.message_type.add(name="Example").field.add(name="features", number=1, type=f.TYPE_MESSAGE,
                                                   label=f.LABEL_OPTIONAL, type_name=".bench.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench.Example"))


def codec_variants(rows: int, runs: dict) -> None:
    """Encode and decode ``rows`` records to/from numpy, with our codec and with protobuf (upb)."""
    import pyarrow as pa
    from pyspark.sql.types import ArrayType, FloatType, LongType, StructField, StructType

    from tfos._data import columns as _columns, example as _example

    Example = _protobuf_example_class()
    values = np.random.default_rng(0).random((rows, FEATURES), dtype=np.float32)
    labels = np.arange(rows, dtype=np.int64) % 10
    schema = StructType([StructField("image", ArrayType(FloatType())), StructField("label", LongType())])
    batch = pa.RecordBatch.from_arrays(
        [pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), FEATURES).cast(pa.list_(pa.float32())),
         pa.array(labels)], names=["image", "label"])

    def ours_encode():
        return _columns.encode_batch(batch, schema)

    def pb_encode():
        out = []
        for row, label in zip(values, labels):
            msg = Example()
            feats = msg.features.feature
            feats["image"].float_list.value.extend(row.tolist())
            feats["label"].int64_list.value.append(int(label))
            out.append(msg.SerializeToString())
        return out

    records = ours_encode()

    def ours_decode():
        builder = _columns.BatchBuilder(schema)
        builder.build([_example.decode(r) for r in records], "bench", 0)

    def pb_decode():  # the same result as ours: decoded features, then the same Arrow batch
        decoded = []
        for record in records:
            msg = Example()
            msg.ParseFromString(record)
            features = {}
            for name, feat in msg.features.feature.items():
                kind = feat.WhichOneof("kind")
                if kind == "float_list":
                    features[name] = ("float", np.array(feat.float_list.value, dtype=np.float32))
                elif kind == "int64_list":
                    features[name] = ("int64", list(feat.int64_list.value))
                elif kind == "bytes_list":
                    features[name] = ("bytes", list(feat.bytes_list.value))
                else:
                    features[name] = (None, [])
            decoded.append(features)
        _columns.BatchBuilder(schema).build(decoded, "bench", 0)

    for name, step in (("codec_encode_ours", ours_encode), ("codec_encode_protobuf", pb_encode),
                       ("codec_decode_ours", ours_decode), ("codec_decode_protobuf", pb_decode)):
        runs.setdefault(name, []).append(rows / _timed(step))


LABELS = [
    ("write_parquet", "write: Spark parquet (baseline)", "write_parquet"),
    ("write_tfrecord", "write: saveAsTFRecords", "write_parquet"),
    ("write_tfrecord_gzip", "write: saveAsTFRecords, gzip", "write_parquet"),
    ("read_parquet", "read: Spark parquet (baseline)", "read_parquet"),
    ("read_tfrecord", "read: loadTFRecords, schema given", "read_parquet"),
    ("read_tfrecord_inferred", "read: loadTFRecords, schema inferred", "read_parquet"),
    ("read_tfrecord_gzip", "read: loadTFRecords, gzip", "read_parquet"),
    ("codec_encode_protobuf", "codec: encode, protobuf (upb) message", "codec_encode_protobuf"),
    ("codec_encode_ours", "codec: encode, tfos._example (Arrow batch)", "codec_encode_protobuf"),
    ("codec_decode_protobuf", "codec: decode, protobuf (upb) message, to Arrow batch", "codec_decode_protobuf"),
    ("codec_decode_ours", "codec: decode, tfos._example, to Arrow batch", "codec_decode_protobuf"),
]


def write_report(args, runs: dict, sizes: dict) -> None:
    med = {k: statistics.median(v) for k, v in runs.items()}
    lines = [
        "# dfutil throughput: DataFrame <-> TFRecord vs Spark parquet",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"date {time.strftime('%Y-%m-%d')}. {args.rows} rows of {FEATURES} random float32 (`array<float>`) + int64 "
        f"label ({ROW_BYTES} bytes of payload a row), {PARTITIONS} partitions, cached, on {MASTER}; median of "
        f"{args.repeats} runs after one warm-up run; the codec rows run in one process without Spark on {args.codec_rows} rows. "
        "Produced by `bench/dfutil_throughput.py`.",
        "",
        "| path | rows/s (median) | MB/s | min | max | vs baseline |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, base in LABELS:
        v = runs[key]
        lines.append(f"| {label} | {med[key]:,.0f} | {med[key] * ROW_BYTES / 1e6:,.1f} | {min(v):,.0f} | "
                     f"{max(v):,.0f} | {med[key] / med[base]:.0%} |")
    lines += ["", "Output sizes: " + ", ".join(f"{k} {v:,.0f} MB" for k, v in sizes.items()) + "."]
    _results.save(args.out, lines, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--codec-rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "dfutil_throughput.md"))
    args = parser.parse_args()

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(MASTER).appName("tfos-bench-dfutil")
             .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "2g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    runs: dict[str, list[float]] = {}
    sizes: dict[str, float] = {}
    work = tempfile.mkdtemp(prefix="tfos-bench-dfutil-")
    try:
        df = make_df(spark, args.rows)
        spark_variants(spark, df, args.rows, work, {}, {})  # warm-up, not counted: Python workers, JIT, caches
        for i in range(args.repeats):
            spark_variants(spark, df, args.rows, work, runs, sizes)
            codec_variants(args.codec_rows, runs)
            print(f"run {i + 1}: " + ", ".join(f"{k}={v[-1]:,.0f}" for k, v in runs.items()), flush=True)
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    write_report(args, runs, sizes)


if __name__ == "__main__":
    main()
