"""tfos.dfutil and the ``tfrecord`` data source on a real Spark cluster (local-cluster, 2 executor processes).

TensorFlow runs in a subprocess for the interop tests (it reads what we write and writes what we read).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from pyspark.sql import functions as F

from tfos import dfutil
from tfos.errors import ConfigError, DataError, StorageError

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

ALL_TYPES = ("id long, i int, sh short, by byte, t boolean, f float, d double, s string, b binary, "
             "af array<float>, ad array<double>, al array<long>, ai array<int>, ab array<boolean>, "
             "as_ array<string>, abin array<binary>")
ROWS = [
    (1, -7, 300, -128, True, 0.5, 2.25, "ünï", b"\x00\xff", [1.5, -2.0], [0.25], [2 ** 40, -1], [0, 127, 128],
     [True, False], ["a", ""], [b"\x01", b""]),
    (2, None, None, None, None, None, None, None, None, None, None, None, None, None, None, None),
    (3, 2 ** 31 - 1, -1, 7, False, -1e30, 1e-3, "", b"", [], [], [], [], [], [], []),
    (4, 0, 0, 0, True, 3.0, -4.0, "x" * 1000, bytes(range(256)), [0.0] * 784, [1.0, 2.0, 3.0], [5], [6],
     [True], ["p", "q", "r"], [b"z"]),
]


def _rows(df, order="id"):
    return [r.asDict(recursive=True) for r in df.orderBy(order).collect()]


def _part_files(path):
    return sorted(n for n in os.listdir(path) if n.startswith("part-"))


@pytest.fixture
def typed_df(spark_local_cluster):
    return spark_local_cluster.createDataFrame(ROWS, ALL_TYPES).repartition(3)


def test_round_trip_with_the_original_schema_is_exact(spark_local_cluster, typed_df, tmp_path):
    out = str(tmp_path / "all")
    dfutil.saveAsTFRecords(typed_df, out)
    assert os.listdir(out).count("_SUCCESS") == 1 and not os.path.exists(os.path.join(out, "_temporary"))
    assert 1 <= len(_part_files(out)) <= 3
    back = dfutil.loadTFRecords(spark_local_cluster, out, schema=typed_df.schema)
    want = [dict(r, f=None if r["f"] is None else float(__import__("numpy").float32(r["f"])))
            for r in _rows(typed_df)]
    # doubles are stored as float32: compare those at float32 precision
    got = _rows(back)
    for g, w in zip(got, want):
        for key in ("d",):
            if w[key] is not None:
                assert g[key] == pytest.approx(w[key], rel=1e-6)
                g[key] = w[key]
        if w["ad"]:
            assert g["ad"] == pytest.approx(w["ad"], rel=1e-6)
            g["ad"] = w["ad"]
    assert got == want


def test_inferred_schema_and_null_policy(spark_local_cluster, typed_df, tmp_path):
    out = str(tmp_path / "inferred")
    dfutil.saveAsTFRecords(typed_df, out)
    back = dfutil.loadTFRecords(spark_local_cluster, out, binary_features=["b", "abin"])
    assert dfutil.isLoadedDF(back) and not dfutil.isLoadedDF(typed_df)
    types = {f.name: f.dataType.simpleString() for f in back.schema.fields}
    assert types == {"id": "bigint", "i": "bigint", "sh": "bigint", "by": "bigint", "t": "bigint", "f": "float",
                     "d": "float", "s": "string", "b": "binary", "af": "array<float>", "ad": "array<float>",
                     "al": "array<bigint>", "ai": "array<bigint>", "ab": "array<bigint>", "as_": "array<string>",
                     "abin": "array<binary>"}
    assert back.columns == sorted(back.columns)  # TFoS's order: by name
    rows = {r["id"]: r for r in _rows(back)}
    assert all(v is None for k, v in rows[2].items() if k != "id")  # null -> absent feature -> null
    assert rows[3]["af"] == [] and rows[3]["as_"] == [] and rows[3]["s"] == ""  # empty stays empty
    assert rows[1]["t"] == 1 and rows[3]["t"] == 0 and rows[1]["ab"] == [1, 0]
    assert rows[1]["b"] == bytearray(b"\x00\xff") and rows[1]["s"] == "ünï"
    assert len(rows[4]["af"]) == 784


def test_gzip_compression_and_mixed_directory(spark_local_cluster, typed_df, tmp_path):
    out = str(tmp_path / "gz")
    dfutil.saveAsTFRecords(typed_df, out, compression="gzip")
    parts = _part_files(out)
    assert parts and all(p.endswith(".tfrecord.gz") for p in parts)
    with open(os.path.join(out, parts[0]), "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    typed_df.select("id", "s").write.format("tfrecord").mode("append").save(out)  # plain files beside gzip ones
    back = dfutil.loadTFRecords(spark_local_cluster, out, schema="id long, s string")
    assert sorted(r.id for r in back.collect()) == [1, 1, 2, 2, 3, 3, 4, 4]


def test_save_modes(spark_local_cluster, tmp_path):
    spark = spark_local_cluster
    out = str(tmp_path / "modes")
    one = spark.createDataFrame([(1,), (2,)], "x long").repartition(2)
    two = spark.createDataFrame([(10,)], "x long")

    def read():
        return sorted(r.x for r in dfutil.loadTFRecords(spark, out).collect())

    dfutil.saveAsTFRecords(one, out)  # errorifexists on a new path writes
    assert read() == [1, 2]
    with pytest.raises(StorageError, match="already exists; pass mode='overwrite'"):
        dfutil.saveAsTFRecords(two, out)
    dfutil.saveAsTFRecords(two, out, mode="ignore")
    assert read() == [1, 2]
    dfutil.saveAsTFRecords(two, out, mode="append")
    assert read() == [1, 2, 10]
    dfutil.saveAsTFRecords(two, out, mode="overwrite")
    assert read() == [10] and len(_part_files(out)) == 1
    dfutil.saveAsTFRecords(two, str(tmp_path / "new"), mode="ignore")  # ignore on a new path writes
    assert os.path.exists(tmp_path / "new" / "_SUCCESS")
    two.write.format("tfrecord").mode("overwrite").save(out)
    assert read() == [10]
    with pytest.raises(ConfigError, match="Unknown save mode 'replace'"):
        dfutil.saveAsTFRecords(two, out, mode="replace")
    with pytest.raises(Exception, match="UNSUPPORTED_DATA_SOURCE_SAVE_MODE"):  # Spark's own refusal
        two.write.format("tfrecord").save(out)


def test_failed_write_leaves_no_partial_output(spark_local_cluster, tmp_path):
    def failing(x):  # nested: pickled by value (test modules are not importable on executors)
        if x == 13:
            raise RuntimeError("boom in one partition")
        return x

    spark = spark_local_cluster
    boom = F.udf(failing, "long")
    bad = spark.range(0, 40, 1, 4).select(boom("id").alias("x"))
    fresh = str(tmp_path / "fresh")
    with pytest.raises(Exception, match="boom in one partition"):
        dfutil.saveAsTFRecords(bad, fresh)
    assert not os.path.exists(fresh) or os.listdir(fresh) == []
    kept = str(tmp_path / "kept")
    dfutil.saveAsTFRecords(spark.createDataFrame([(1,)], "x long"), kept)
    before = sorted(os.listdir(kept))
    with pytest.raises(Exception, match="boom in one partition"):
        dfutil.saveAsTFRecords(bad, kept, mode="overwrite")
    assert sorted(os.listdir(kept)) == before  # the old data is untouched, no _temporary left
    assert [r.x for r in dfutil.loadTFRecords(spark, kept).collect()] == [1]


def test_unsupported_column_type_names_the_column(spark_local_cluster, tmp_path):
    df = spark_local_cluster.createDataFrame([(1, {"a": 1})], "id long, m map<string,int>")
    with pytest.raises(DataError, match=r"Column 'm' has type map<string,int>, which cannot be written"):
        dfutil.saveAsTFRecords(df, str(tmp_path / "x"))
    with pytest.raises(Exception, match=r"Column 'm' has type map<string,int>"):
        df.write.format("tfrecord").mode("overwrite").save(str(tmp_path / "y"))
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y")


def test_null_inside_an_array_is_refused(spark_local_cluster, tmp_path):
    df = spark_local_cluster.createDataFrame([([1.0, None],)], "a array<double>")
    with pytest.raises(DataError, match="Column 'a' has a null element in an array"):
        dfutil.saveAsTFRecords(df, str(tmp_path / "x"))


def test_bad_compression_is_a_clear_error(spark_local_cluster, tmp_path):
    df = spark_local_cluster.createDataFrame([(1,)], "x long")
    with pytest.raises(ConfigError, match="Unknown TFRecord compression 'zip'"):
        dfutil.saveAsTFRecords(df, str(tmp_path / "x"), compression="zip")


def test_no_matching_files(spark_local_cluster, tmp_path):
    with pytest.raises(StorageError, match="No files match .*nothing-\\*"):
        dfutil.loadTFRecords(spark_local_cluster, str(tmp_path / "nothing-*"))
    with pytest.raises(StorageError, match="does not exist"):
        dfutil.loadTFRecords(spark_local_cluster, str(tmp_path / "missing"))


def test_corrupt_record_names_file_and_offset(spark_local_cluster, tmp_path):
    out = str(tmp_path / "c")
    dfutil.saveAsTFRecords(spark_local_cluster.createDataFrame([(i,) for i in range(5)], "x long").coalesce(1), out)
    part = os.path.join(out, _part_files(out)[0])
    data = bytearray(open(part, "rb").read())
    record = len(data) // 5
    data[2 * record + 14] ^= 0xFF  # the data of the third record
    open(part, "wb").write(bytes(data))
    df = dfutil.loadTFRecords(spark_local_cluster, out, schema="x long")
    with pytest.raises(Exception, match=rf"{part}: corrupted record data \(CRC mismatch\) at byte offset "
                                        rf"{2 * record}"):
        df.collect()
    open(part, "wb").write(bytes(data[:record + 5]))  # truncated in the second record
    with pytest.raises(Exception, match=rf"{part}: truncated record .* at byte offset {record}"):
        dfutil.loadTFRecords(spark_local_cluster, out, schema="x long").collect()


def test_schema_mismatch_between_files(spark_local_cluster, tmp_path):
    spark = spark_local_cluster
    out = str(tmp_path / "mixed")
    dfutil.saveAsTFRecords(spark.createDataFrame([(1,)], "v long"), out)
    dfutil.saveAsTFRecords(spark.createDataFrame([(1.5,)], "v float"), out, mode="append")
    with pytest.raises(DataError, match="Feature 'v' is (an int64|a float) list in some records and (a float|an "
                                        "int64) list in record 1 of the sample: the files do not share one schema"):
        dfutil.loadTFRecords(spark, out)
    df = dfutil.loadTFRecords(spark, out, schema="v long")
    with pytest.raises(Exception, match=r"has feature 'v' as a float list, but its column is bigint"):
        df.collect()


def test_scalar_column_with_several_values_says_what_to_do(spark_local_cluster, tmp_path):
    spark = spark_local_cluster
    out = str(tmp_path / "arr")
    dfutil.saveAsTFRecords(spark.createDataFrame([([1, 2],)], "v array<long>"), out)
    with pytest.raises(Exception, match=r"has 2 values in feature 'v', but its column is the scalar bigint"):
        dfutil.loadTFRecords(spark, out, schema="v long").collect()


def test_ml_vectors_are_written_as_float_lists(spark_local_cluster, tmp_path):
    from pyspark.ml.linalg import Vectors

    df = spark_local_cluster.createDataFrame(
        [(1, Vectors.dense([1.0, 2.5])), (2, Vectors.sparse(4, [1, 3], [5.0, 6.0])), (3, None)], ["id", "vec"])
    out = str(tmp_path / "vec")
    dfutil.saveAsTFRecords(df, out)
    back = dfutil.loadTFRecords(spark_local_cluster, out)
    assert [r["vec"] for r in _rows(back)] == [[1.0, 2.5], [0.0, 5.0, 0.0, 6.0], None]


def test_tfos_row_helpers_with_rdds(spark_local_cluster):
    df = spark_local_cluster.createDataFrame([(1, [1.0, 2.0], "a"), (2, [3.0], "b")], "id long, v array<float>, s string")
    records = df.rdd.mapPartitions(dfutil.toTFExample(df.dtypes))
    rows = sorted(records.mapPartitions(lambda it: dfutil.fromTFExample(it)).collect(), key=lambda r: r.id)
    assert rows[0].asDict() == {"id": 1, "s": "a", "v": [1.0, 2.0]}
    assert rows[1].asDict() == {"id": 2, "s": "b", "v": 3.0}  # TFoS: one value is a scalar
    schema = dfutil.infer_schema(bytes(records.first()[0]))
    assert schema.simpleString() == "struct<id:bigint,s:string,v:array<float>>"
    with pytest.raises(DataError, match="Column 'd' has type date"):
        dfutil.toTFExample([("d", "date")])


TF_READ = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    files, compression = json.loads(sys.argv[1]), sys.argv[2]
    spec = {"id": tf.io.FixedLenFeature([], tf.int64), "f": tf.io.FixedLenFeature([], tf.float32),
            "s": tf.io.FixedLenFeature([], tf.string), "af": tf.io.VarLenFeature(tf.float32),
            "al": tf.io.VarLenFeature(tf.int64)}
    out = []
    for rec in tf.data.TFRecordDataset(files, compression_type=compression):
        ex = tf.io.parse_single_example(rec, spec)
        out.append({"id": int(ex["id"]), "f": float(ex["f"]), "s": ex["s"].numpy().decode(),
                    "af": tf.sparse.to_dense(ex["af"]).numpy().tolist(),
                    "al": tf.sparse.to_dense(ex["al"]).numpy().tolist()})
    print(json.dumps(out))
""")

TF_WRITE = textwrap.dedent("""
    import sys
    import tensorflow as tf
    path, compression = sys.argv[1], sys.argv[2]
    with tf.io.TFRecordWriter(path, options=compression or None) as w:
        for i in range(5):
            f = tf.train.Feature
            ex = tf.train.Example(features=tf.train.Features(feature={
                "id": f(int64_list=tf.train.Int64List(value=[i])),
                "x": f(float_list=tf.train.FloatList(value=[i * 0.5, -i])),
                "name": f(bytes_list=tf.train.BytesList(value=[f"n{i}".encode()])),
                "raw": f(bytes_list=tf.train.BytesList(value=[bytes([i, 255])])),
                "many": f(int64_list=tf.train.Int64List(value=list(range(i)))),
            }))
            w.write(ex.SerializeToString())
""")


def _tf(script, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_tensorflow_reads_what_tfos_writes(spark_local_cluster, tmp_path, compression):
    df = spark_local_cluster.createDataFrame(
        [(i, i / 4, f"r{i}", [float(i)] * i, list(range(-i, 1))) for i in range(6)],
        "id long, f float, s string, af array<float>, al array<long>").repartition(2)
    out = str(tmp_path / "for-tf")
    dfutil.saveAsTFRecords(df, out, compression=compression)
    files = [os.path.join(out, p) for p in _part_files(out)]
    got = sorted(json.loads(_tf(TF_READ, json.dumps(files), "GZIP" if compression == "gzip" else "")),
                 key=lambda r: r["id"])
    assert got == [{"id": i, "f": i / 4, "s": f"r{i}", "af": [float(i)] * i, "al": list(range(-i, 1))}
                   for i in range(6)]


@pytest.mark.parametrize("compression", ["", "GZIP"])
def test_tfos_reads_what_tensorflow_writes(spark_local_cluster, tmp_path, compression):
    path = str(tmp_path / "from-tf.tfrecord")
    _tf(TF_WRITE, path, compression)
    if compression:
        with open(path, "rb") as f:
            assert f.read(2) == b"\x1f\x8b"
    df = dfutil.loadTFRecords(spark_local_cluster, path, binary_features=["raw"])
    assert df.schema.simpleString() == "struct<id:bigint,many:array<bigint>,name:string,raw:binary,x:array<float>>"
    rows = _rows(df)
    assert rows == [{"id": i, "many": list(range(i)), "name": f"n{i}", "raw": bytearray([i, 255]),
                     "x": [i * 0.5, float(-i)]} for i in range(5)]


# ---------------------------------------------------------------------------------------- on a real S3 server

def _s3_keys(server, bucket):
    return sorted(obj["Key"] for obj in server.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def test_s3_round_trip_with_aws_variables(spark_local_cluster, s3_env, typed_df):
    spark = spark_local_cluster
    s3_env.make_bucket("dfutil")
    url = "s3a://dfutil/typed"  # as Spark users spell it
    dfutil.saveAsTFRecords(typed_df, url, mode="overwrite", compression="gzip")
    keys = _s3_keys(s3_env, "dfutil")
    assert "typed/_SUCCESS" in keys and not any("_temporary" in k for k in keys)
    assert all(k.endswith(".tfrecord.gz") for k in keys if "/part-" in k)
    back = dfutil.loadTFRecords(spark, "s3://dfutil/typed", schema=typed_df.schema)
    assert [r["id"] for r in _rows(back)] == [1, 2, 3, 4]
    assert _rows(back.select("id", "s", "al", "abin")) == _rows(typed_df.select("id", "s", "al", "abin"))
    dfutil.saveAsTFRecords(typed_df.select("id"), url, mode="append")
    assert dfutil.loadTFRecords(spark, url + "/part-*", schema="id long").count() == 8
    plan = back._jdf.queryExecution().toString()
    assert s3_env.secret_key not in plan and s3_env.access_key not in plan


def test_s3_with_spark_s3a_settings_only(spark_local_cluster, s3_server, monkeypatch):
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    spark = spark_local_cluster
    s3_server.make_bucket("dfutil-s3a")
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    settings = {"fs.s3a.endpoint": s3_server.endpoint, "fs.s3a.path.style.access": "true",
                "fs.s3a.access.key": s3_server.access_key, "fs.s3a.secret.key": s3_server.secret_key}
    try:
        for key, value in settings.items():
            hadoop.set(key, value)
        df = spark.createDataFrame([(i, [float(i)] * 3) for i in range(10)], "id long, v array<float>")
        dfutil.saveAsTFRecords(df, "s3a://dfutil-s3a/v", mode="overwrite")
        back = spark.read.format("tfrecord").load("s3a://dfutil-s3a/v")  # registered by saveAsTFRecords
        assert _rows(back) == _rows(df)
    finally:
        for key in settings:
            hadoop.unset(key)


def test_s3_missing_bucket_and_bad_credentials(spark_local_cluster, s3_env, monkeypatch):
    spark = spark_local_cluster
    df = spark.createDataFrame([(1,)], "x long")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        dfutil.saveAsTFRecords(df, "s3://no-such-bucket/x", mode="overwrite")
    with pytest.raises(StorageError, match="no-such-bucket"):
        dfutil.loadTFRecords(spark, "s3://no-such-bucket/x")
    s3_env.make_bucket("dfutil-creds")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(StorageError, match="refused the credentials|denied"):
        dfutil.saveAsTFRecords(df, "s3://dfutil-creds/x", mode="overwrite")
