"""tfos._data.example (tf.train.Example wire format) against the protobuf runtime; Arrow batches <-> Examples
(tfos._data.columns); reading local TFRecord files (tfos._data.source). No Spark cluster, no TensorFlow.

The oracle is the ``protobuf`` package with tf.train.Example's message definitions written out here (no
TensorFlow): what we encode must parse there, and what it serializes must decode here.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import pyarrow as pa
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from pyspark.sql.types import (ArrayType, BinaryType, BooleanType, DateType, DoubleType, FloatType, IntegerType,
                               LongType, MapType, StringType, StructField, StructType)

from tfos._data import columns as _columns, example as _example, source as _tfrecord_source, tfrecord as _tfrecord
from tfos.errors import DataError


def _example_class():
    """tf.train.Example as a protobuf class built at run time from our copy of its definition."""
    fdp = descriptor_pb2.FileDescriptorProto(name="tfos_test_example.proto", package="tfos_test", syntax="proto3")
    f = descriptor_pb2.FieldDescriptorProto

    def message(name, *fields, options=None):
        msg = fdp.message_type.add(name=name)
        for number, (field_name, kind, label, type_name, oneof) in enumerate(fields, start=1):
            fld = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                fld.type_name = type_name
            if oneof is not None:
                fld.oneof_index = oneof
        return msg

    rep, opt = f.LABEL_REPEATED, f.LABEL_OPTIONAL
    message("BytesList", ("value", f.TYPE_BYTES, rep, None, None))
    message("FloatList", ("value", f.TYPE_FLOAT, rep, None, None))
    message("Int64List", ("value", f.TYPE_INT64, rep, None, None))
    feature = message("Feature", ("bytes_list", f.TYPE_MESSAGE, opt, ".tfos_test.BytesList", 0),
                      ("float_list", f.TYPE_MESSAGE, opt, ".tfos_test.FloatList", 0),
                      ("int64_list", f.TYPE_MESSAGE, opt, ".tfos_test.Int64List", 0))
    feature.oneof_decl.add(name="kind")
    features = message("Features", ("feature", f.TYPE_MESSAGE, rep, ".tfos_test.Features.FeatureEntry", None))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=f.TYPE_MESSAGE, label=opt, type_name=".tfos_test.Feature")
    entry.options.map_entry = True
    message("Example", ("features", f.TYPE_MESSAGE, opt, ".tfos_test.Features", None))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tfos_test.Example"))


Example = _example_class()

FEATURES = {
    "label": (_example.INT64, [7]),
    "ints": (_example.INT64, [0, 1, 127, 128, 300, -1, -(2 ** 63), 2 ** 63 - 1]),
    "floats": (_example.FLOAT, np.array([0.5, -1.25, 3.0e38, np.inf], dtype=np.float32)),
    "names": (_example.BYTES, [b"", b"abc", "ünï".encode(), bytes(range(256))]),
    "empty_ints": (_example.INT64, []),
    "nothing": (None, []),
    "ключ": (_example.FLOAT, np.array([1.0], dtype=np.float32)),
}


def _assert_same(got, want):
    assert set(got) == set(want)
    for name, (kind, values) in want.items():
        assert got[name][0] == kind, name
        assert list(got[name][1]) == list(values), name


def test_encoded_example_parses_with_protobuf():
    msg = Example()
    msg.ParseFromString(_example.encode(FEATURES))
    feats = msg.features.feature
    assert list(feats["ints"].int64_list.value) == FEATURES["ints"][1]
    assert list(feats["floats"].float_list.value) == FEATURES["floats"][1].tolist()
    assert list(feats["names"].bytes_list.value) == FEATURES["names"][1]
    assert feats["empty_ints"].WhichOneof("kind") == "int64_list" and not feats["empty_ints"].int64_list.value
    assert feats["nothing"].WhichOneof("kind") is None
    assert list(feats["ключ"].float_list.value) == [1.0]


def test_protobuf_serialized_example_decodes():
    msg = Example()
    feats = msg.features.feature
    feats["ints"].int64_list.value.extend(FEATURES["ints"][1])
    feats["floats"].float_list.value.extend(FEATURES["floats"][1].tolist())
    feats["names"].bytes_list.value.extend(FEATURES["names"][1])
    feats["empty_ints"].int64_list.SetInParent()
    feats["nothing"].SetInParent()
    got = _example.decode(msg.SerializeToString())
    want = {k: v for k, v in FEATURES.items() if k in feats}
    _assert_same(got, want)
    assert got["floats"][1].dtype == np.float32


def test_round_trip():
    _assert_same(_example.decode(_example.encode(FEATURES)), FEATURES)


def test_unpacked_repeated_fields_and_unknown_fields_decode():
    # FloatList with two unpacked fixed32 values, Int64List with unpacked varints, an unknown varint field 9.
    float_list = b"\x0d" + np.float32(1.5).tobytes() + b"\x0d" + np.float32(-2).tobytes()
    int_list = b"\x08\x05\x08\x96\x01"
    unknown = b"\x48\x01"
    entries = [_example.entry(_example.entry_prefix("f"), _example.feature_from_list(_example.FLOAT, float_list)),
               _example.entry(_example.entry_prefix("i"), _example.feature_from_list(_example.INT64, int_list))]
    data = unknown + _example.example_from_entries(entries)
    got = _example.decode(data)
    assert got["f"][1].tolist() == [1.5, -2.0]
    assert got["i"][1] == [5, 150]


def test_repeated_key_last_wins_and_split_features_merge():
    first = _example.example_from_entries([_example.entry(_example.entry_prefix("a"), _example.feature("int64", [1]))])
    second = _example.example_from_entries([_example.entry(_example.entry_prefix("a"), _example.feature("int64", [2])),
                                            _example.entry(_example.entry_prefix("b"), _example.feature("float", [1]))])
    got = _example.decode(first + second)  # two Example.features fields: protobuf merges them
    assert got["a"] == ("int64", [2]) and got["b"][1].tolist() == [1.0]


def test_empty_record_is_an_example_without_features():
    assert _example.decode(b"") == {}


@pytest.mark.parametrize("data, why", [
    (b"\x0a\x05\x0a", "runs past the end"),
    (b"\x0a\x02\x0a\x80", "truncated varint"),
    (b"\x0b", "unsupported wire type 3"),
    (_example.example_from_entries([_example.entry(_example.entry_prefix("f"),
                                                   _example.feature_from_list("float", b"\x0a\x03abc"))]),
     "multiple of 4"),
])
def test_malformed_records_are_data_errors(data, why):
    with pytest.raises(DataError, match=f"not a serialized tf.train.Example.*{why}"):
        _example.decode(data)


def test_feature_rejects_unknown_kind():
    with pytest.raises(DataError, match="Unknown feature kind 'double'"):
        _example.feature("double", [1.0])


def test_varint_matches_protobuf_for_large_values():
    msg = Example()
    values = [2 ** k for k in range(63)] + [-(2 ** k) for k in range(64)]
    msg.features.feature["v"].int64_list.value.extend(values)
    assert _example.encode({"v": ("int64", values)}) == msg.SerializeToString()


# ------------------------------------------------------------------------------ Arrow batches <-> Examples

def _schema(**types):
    return StructType([StructField(name, dtype) for name, dtype in types.items()])


def test_inference_uses_every_sampled_record():
    examples = [{"a": ("int64", [1]), "b": ("float", np.array([1.0], np.float32)), "c": ("bytes", [b"x"])},
                {"a": ("int64", [2]), "b": ("float", np.array([1.0, 2.0], np.float32))},  # b: 2 values, c absent
                {"a": ("int64", [3]), "c": ("bytes", [b"y"]), "e": (None, [])}]
    schema = _columns.infer_schema(examples, binary_features=["c"])
    assert schema.simpleString() == "struct<a:bigint,b:array<float>,c:binary,e:array<string>>"
    assert all(f.nullable for f in schema.fields)


def test_inference_refuses_a_feature_of_two_kinds():
    with pytest.raises(DataError, match="Feature 'v' is an int64 list in some records and a float list in record 1"):
        _columns.infer_schema([{"v": ("int64", [1])}, {"v": ("float", np.zeros(1, np.float32))}])


@pytest.mark.parametrize("dtype, text", [(DateType(), "date"), (MapType(StringType(), LongType()),
                                                                  "map<string,bigint>"),
                                         (ArrayType(ArrayType(LongType())), "array<array<bigint>>")])
def test_unsupported_types_name_the_column(dtype, text):
    with pytest.raises(DataError, match=rf"Column 'col' has type {text}, which cannot be written"):
        _columns.check_schema(_schema(col=dtype))


def test_encode_batch_leaves_nulls_out_and_keeps_empty_lists():
    schema = _schema(i=IntegerType(), t=BooleanType(), d=DoubleType(), s=StringType(), a=ArrayType(LongType()))
    batch = pa.RecordBatch.from_pylist(
        [{"i": 5, "t": True, "d": 0.5, "s": "é", "a": [1, -2, 300]}, {"i": None, "t": None, "d": None, "s": None,
                                                                       "a": None},
         {"i": -1, "t": False, "d": 1.0, "s": "", "a": []}], schema=_columns.arrow_schema(schema))
    first, second, third = (_example.decode(r) for r in _columns.encode_batch(batch, schema))
    assert first["i"] == ("int64", [5]) and first["t"] == ("int64", [1]) and first["s"] == ("bytes", [b"\xc3\xa9"])
    assert first["d"][1].tolist() == [0.5] and first["a"] == ("int64", [1, -2, 300])
    assert second == {}
    assert third["a"] == ("int64", []) and third["t"] == ("int64", [0]) and third["s"] == ("bytes", [b""])


def test_encode_batch_of_a_sliced_batch_uses_the_right_rows():
    schema = _schema(v=ArrayType(FloatType()))
    batch = pa.RecordBatch.from_pylist([{"v": [float(i)] * i} for i in range(6)], schema=_columns.arrow_schema(schema))
    decoded = [_example.decode(r) for r in _columns.encode_batch(batch.slice(2, 3), schema)]
    assert [d["v"][1].tolist() for d in decoded] == [[2.0] * 2, [3.0] * 3, [4.0] * 4]


def test_encode_batch_refuses_nulls_inside_arrays():
    schema = _schema(v=ArrayType(DoubleType()))
    batch = pa.RecordBatch.from_pylist([{"v": [1.0]}, {"v": [1.0, None]}], schema=_columns.arrow_schema(schema))
    with pytest.raises(DataError, match=r"Column 'v' has a null element in an array \(row 1 of its batch\)"):
        _columns.encode_batch(batch, schema)


def test_batch_builder_converts_to_the_schema():
    schema = _schema(i=IntegerType(), t=BooleanType(), d=DoubleType(), s=StringType(), b=BinaryType(),
                     a=ArrayType(LongType()), f=ArrayType(FloatType()), missing=LongType())
    examples = [{"i": ("int64", [7]), "t": ("int64", [2]), "d": ("float", np.array([0.5], np.float32)),
                 "s": ("bytes", ["ü".encode()]), "b": ("bytes", [b"\xff"]), "a": ("int64", [1, 2]),
                 "f": ("float", np.array([1.5], np.float32)), "extra": ("int64", [1])},
                {"i": ("int64", []), "a": ("int64", []), "f": (None, [])}]
    batch = _columns.BatchBuilder(schema).build(examples, "file", 0)
    assert batch.to_pylist() == [
        {"i": 7, "t": True, "d": 0.5, "s": "ü", "b": b"\xff", "a": [1, 2], "f": [1.5], "missing": None},
        {"i": None, "t": None, "d": None, "s": None, "b": None, "a": [], "f": [], "missing": None}]
    assert batch.schema == _columns.arrow_schema(schema)


@pytest.mark.parametrize("schema, example, message", [
    (_schema(v=LongType()), {"v": ("int64", [1, 2])},
     r"f.tfrecord: record 3 has 2 values in feature 'v', but its column is the scalar bigint"),
    (_schema(v=LongType()), {"v": ("float", np.ones(1, np.float32))},
     r"record 3 has feature 'v' as a float list, but its column is bigint \(an int64 list\)"),
    (_schema(v=StringType()), {"v": ("bytes", [b"\xff"])}, r"does not fit column type string.*binary_features"),
    (_schema(v=IntegerType()), {"v": ("int64", [2 ** 40])}, r"feature 'v' \(records 3..3\) does not fit column "
                                                           r"type int"),
])
def test_batch_builder_errors_name_file_record_and_feature(schema, example, message):
    with pytest.raises(DataError, match=message):
        _columns.BatchBuilder(schema).build([example], "f.tfrecord", 3)


def test_vectors_are_written_as_dense_float_lists():
    from pyspark.ml.linalg import VectorUDT

    schema = StructType([StructField("vec", VectorUDT())])
    struct = pa.struct([("type", pa.int8()), ("size", pa.int32()), ("indices", pa.list_(pa.int32())),
                        ("values", pa.list_(pa.float64()))])
    arr = pa.array([{"type": 1, "size": None, "indices": None, "values": [1.0, 2.0]},
                    {"type": 0, "size": 4, "indices": [1, 3], "values": [5.0, 6.0]}, None], struct)
    decoded = [_example.decode(r) for r in _columns.encode_batch(pa.RecordBatch.from_arrays([arr], ["vec"]), schema)]
    assert decoded[0]["vec"][1].tolist() == [1.0, 2.0] and decoded[1]["vec"][1].tolist() == [0, 5.0, 0, 6.0]
    assert decoded[2] == {}


# ----------------------------------------------------------------------------------------- files (local disk)

def _write(path, records, compress=False):
    opener = gzip.open if compress else open
    with opener(path, "wb") as out:
        _tfrecord.write_records(out, records)


def test_files_are_read_plain_or_gzip_whatever_their_name(tmp_path):
    records = [_example.encode({"x": ("int64", [i])}) for i in range(3)]
    _write(tmp_path / "a.tfrecord", records)
    _write(tmp_path / "b.tfrecord", records, compress=True)  # gzip without .gz
    for name in ("a.tfrecord", "b.tfrecord"):
        got = [ex["x"][1][0] for _, ex, _ in _tfrecord_source.iter_examples(str(tmp_path / name), {})]
        assert got == [0, 1, 2]


def test_a_truncated_gzip_file_is_a_data_error(tmp_path):
    path = tmp_path / "t.tfrecord.gz"
    _write(path, [_example.encode({"x": ("bytes", [bytes(1000)])})] * 20, compress=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t.tfrecord.gz \(gzip; offsets in the uncompressed data\)"):
        list(_tfrecord_source.iter_examples(str(path), {}))


def test_a_record_that_is_not_an_example_names_file_record_and_offset(tmp_path):
    path = tmp_path / "bad.tfrecord"
    first = _example.encode({"x": ("int64", [1])})
    _write(path, [first, b"\x0b garbage"])
    with pytest.raises(DataError, match=rf"bad.tfrecord: record 1 at byte offset {16 + len(first)}: record is not"):
        list(_tfrecord_source.iter_examples(str(path), {}))


def test_sample_spreads_over_files(tmp_path):
    files = []
    for f in range(4):
        path = str(tmp_path / f"p{f}.tfrecord")
        _write(path, [_example.encode({"f": ("int64", [f]), "i": ("int64", [i])}) for i in range(10)])
        files.append(path)
    sample = _tfrecord_source.sample_examples(files, {}, 8)
    assert [ex["f"][1][0] for ex in sample] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len(_tfrecord_source.sample_examples(files, {}, 100)) == 40
    with pytest.raises(DataError, match="hold no record to infer a schema from; pass a schema"):
        _write(tmp_path / "empty.tfrecord", [])
        _tfrecord_source.infer_schema([str(tmp_path / "empty.tfrecord")], {}, 10, ())


def _writer(tmp_path, overwrite=False):
    schema = StructType([StructField("x", LongType())])
    return _tfrecord_source.TFRecordWriter(str(tmp_path / "out"), schema, overwrite, "none", {}), schema


def _batches(schema, n, during=None):
    for i in range(n):
        if i == 1 and during is not None:
            during()
        yield pa.RecordBatch.from_pydict({"x": [i]}, schema=pa.schema([("x", pa.int64())]))


def test_a_task_still_writing_when_the_job_aborts_removes_its_own_file(tmp_path):
    # Spark aborts the job as soon as one task failed for good; tasks of other partitions may still be running
    writer, schema = _writer(tmp_path)
    message = writer.write(_batches(schema, 3, during=lambda: writer.abort([])))
    assert message.temp is None
    assert os.listdir(tmp_path / "out") == []


def test_a_task_that_starts_after_the_abort_leaves_nothing(tmp_path):
    writer, schema = _writer(tmp_path)
    writer.abort([])
    assert writer.write(_batches(schema, 2)).temp is None
    assert os.listdir(tmp_path / "out") == []


def test_commit_moves_the_files_and_removes_the_open_mark(tmp_path):
    writer, schema = _writer(tmp_path)
    assert os.path.exists(writer.open_mark)
    messages = [writer.write(_batches(schema, 2)), writer.write(_batches(schema, 0))]
    writer.commit(messages)
    assert sorted(os.listdir(tmp_path / "out")) == ["_SUCCESS", messages[0].final.rsplit("/", 1)[1]]
