"""tfos._example (tf.train.Example wire format) against the protobuf runtime, and the Arrow <-> Example columns.

The oracle is the ``protobuf`` package with tf.train.Example's message definitions written out here (no
TensorFlow): what we encode must parse there, and what it serializes must decode here.
"""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tfos import _example
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
