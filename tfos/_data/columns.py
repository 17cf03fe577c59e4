"""Spark columns <-> tf.train.Example features: type mapping, schema inference, Arrow batch encoding and decoding.

Type mapping (both directions)::

    Spark column type                                  Example feature
    ByteType, ShortType, IntegerType, LongType,        int64_list
      BooleanType (written as 0/1)
    FloatType, DoubleType (stored as float32)          float_list
    StringType (UTF-8), BinaryType                     bytes_list
    ArrayType of any of these                          a list of that kind, of any length (including 0)
    VectorUDT (pyspark.ml / pyspark.mllib, written)    float_list (sparse vectors are written dense)

Nulls: a null value (scalar or array) is written as an absent feature, and an absent feature reads as null. An
empty array is written as an empty list; read into a scalar column, an empty list is null. Arrays cannot hold
null elements (a TFRecord list has no null), so writing one raises :class:`DataError`.

Inference: each feature's kind decides the column type (int64 -> LongType, float -> FloatType, bytes ->
StringType, or BinaryType for the names in ``binary_features``); a feature that holds exactly one value in every
sampled record where it is present is a scalar column, otherwise an array column. Columns are sorted by name.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql.types import (ArrayType, BinaryType, BooleanType, ByteType, DataType, DoubleType, FloatType,
                               IntegerType, LongType, ShortType, StringType, StructField, StructType)

from . import example as _example
from ..errors import DataError
from .example import BYTES, FLOAT, INT64

_KIND_OF: dict[type, str] = {
    ByteType: INT64, ShortType: INT64, IntegerType: INT64, LongType: INT64, BooleanType: INT64,
    FloatType: FLOAT, DoubleType: FLOAT, StringType: BYTES, BinaryType: BYTES}
_SUPPORTED = ("integer types, boolean, float, double, string, binary, arrays of those, and ML vectors (written "
              "as float lists)")
_FLOAT_SCALAR = _example.packed_feature(FLOAT, b"\0\0\0\0")[:-4]  # Feature{float_list{value: <4 bytes>}} head


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _is_vector(dtype: DataType) -> bool:
    return type(dtype).__name__ == "VectorUDT"


def column_kind(field: StructField, reading: bool = False) -> tuple[str, bool]:
    """The Example kind of a Spark column and whether it is an array.

    Args:
        field: the column.
        reading: the column is read into, where ML vectors are not supported.

    Raises:
        DataError: a type a tf.train.Example cannot hold; the message names the column and its type.
    """
    dtype, array = field.dataType, False
    if _is_vector(dtype) and not reading:
        return FLOAT, True
    if isinstance(dtype, ArrayType):
        dtype, array = dtype.elementType, True
    kind = _KIND_OF.get(type(dtype))
    if kind is None:
        what = "read into" if reading else "written as a TFRecord feature"
        raise DataError(f"Column {field.name!r} has type {field.dataType.simpleString()}, which cannot be {what} "
                        f"(a tf.train.Example holds int64, float and bytes lists). Supported: {_SUPPORTED}. "
                        f"Cast or drop the column first, e.g. df.withColumn({field.name!r}, "
                        f"df[{field.name!r}].cast('double')).")
    return kind, array


def check_schema(schema: StructType, reading: bool = False) -> list[tuple[str, bool]]:
    """:func:`column_kind` of every column (raises on the first unsupported one)."""
    return [column_kind(field, reading) for field in schema.fields]


# ----------------------------------------------------------------------------------------------------- inference

def infer_schema(examples: Iterable[dict], binary_features: Sequence[str] = ()) -> StructType:
    """The DataFrame schema of decoded Examples (see the module docstring for the rules).

    Args:
        examples: decoded Examples (:func:`tfos._data.example.decode`).
        binary_features: names of bytes features to type as BinaryType rather than StringType.

    Raises:
        DataError: a feature has different kinds in different records.
    """
    kinds: dict[str, str | None] = {}
    scalar: dict[str, bool] = {}
    for number, example in enumerate(examples):
        for name, (kind, values) in example.items():
            known = kinds.get(name)
            if kind is not None and known is not None and kind != known:
                raise DataError(f"Feature {name!r} is {_a(known)} list in some records and {_a(kind)} list in "
                                f"record {number} of the sample: the files do not share one schema. Read them "
                                "separately, or pass a schema.")
            kinds[name] = known or kind
            scalar[name] = scalar.get(name, True) and len(values) == 1
    binary = set(binary_features)
    fields = []
    for name in sorted(kinds):
        kind = kinds[name] or BYTES
        base = {INT64: LongType(), FLOAT: FloatType()}.get(kind) or (BinaryType() if name in binary else StringType())
        fields.append(StructField(name, base if scalar[name] else ArrayType(base, containsNull=False), True))
    return StructType(fields)


# ------------------------------------------------------------------------------------------------------ encoding

def _varint_features(values: Sequence[int | None]) -> list[bytes | None]:
    return [None if v is None else _example.packed_feature(INT64, _example.packed_int64((int(v),)))
            for v in values]


def _scalar_features(arr: pa.Array, kind: str) -> list[bytes | None]:
    if kind == FLOAT:
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False))
        raw = arr.fill_null(0).to_numpy(zero_copy_only=False).astype("<f4").tobytes()
        return [_FLOAT_SCALAR + raw[4 * i:4 * i + 4] if ok else None for i, ok in enumerate(valid)]
    values = arr.to_pylist()
    if kind == INT64:
        return _varint_features(values)
    return [None if v is None else _example.feature(BYTES, (v,)) for v in values]


def _flatten(arr: pa.Array, name: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Values, offsets and validity of a list (or ML vector) column, whatever its slicing and list type."""
    if pa.types.is_struct(arr.type):  # VectorUDT: struct<type, size, indices, values>
        return _dense_vectors(arr, name)
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    flat = arr.flatten()
    if flat.null_count:
        row = next(i for i, items in enumerate(arr.to_pylist()) if items and None in items)
        raise DataError(f"Column {name!r} has a null element in an array (row {row} of its batch); TFRecord lists "
                        f"cannot hold nulls. Fill them first, e.g. with F.transform(col, lambda x: F.coalesce(x, "
                        "F.lit(0))).")
    return flat, offsets, np.asarray(arr.is_valid().to_numpy(zero_copy_only=False))


def _dense_vectors(arr: pa.Array, name: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    rows, valid = [], np.asarray(arr.is_valid().to_numpy(zero_copy_only=False))
    for item in arr.to_pylist():
        if item is None:
            rows.append(np.zeros(0, np.float32))
        elif item["type"] == 1:  # dense
            rows.append(np.asarray(item["values"], np.float32))
        else:
            dense = np.zeros(item["size"], np.float32)
            dense[np.asarray(item["indices"], np.int64)] = item["values"]
            rows.append(dense)
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows], dtype=np.int64)])
    flat = np.concatenate(rows) if rows else np.zeros(0, np.float32)
    return pa.array(flat, pa.float32()), offsets, valid


def _array_features(arr: pa.Array, kind: str, name: str) -> list[bytes | None]:
    flat, offsets, valid = _flatten(arr, name)
    rows = range(len(valid))
    if kind == FLOAT:
        raw = flat.to_numpy(zero_copy_only=False).astype("<f4").tobytes()
        return [_example.packed_feature(FLOAT, raw[4 * offsets[i]:4 * offsets[i + 1]]) if valid[i] else None
                for i in rows]
    if kind == INT64:
        ints = flat.to_numpy(zero_copy_only=False).astype(np.int64)
        if len(ints) == 0 or (ints.min() >= 0 and ints.max() < 128):  # one byte per varint
            raw = ints.astype(np.uint8).tobytes()
            return [_example.packed_feature(INT64, raw[offsets[i]:offsets[i + 1]]) if valid[i] else None
                    for i in rows]
        values = ints.tolist()
        return [_example.packed_feature(INT64, _example.packed_int64(values[offsets[i]:offsets[i + 1]]))
                if valid[i] else None for i in rows]
    values = flat.to_pylist()
    return [_example.feature(BYTES, values[offsets[i]:offsets[i + 1]]) if valid[i] else None for i in rows]


def encode_batch(batch: pa.RecordBatch, schema: StructType) -> list[bytes]:
    """Serialized tf.train.Examples, one per row of ``batch`` (null values are left out).

    Args:
        batch: Arrow data of ``schema`` (as Spark hands it to an Arrow writer).
        schema: the DataFrame's schema.

    Raises:
        DataError: an unsupported column type, or a null inside an array.
    """
    columns = []
    for index, field in enumerate(schema.fields):
        kind, array = column_kind(field)
        arr = batch.column(index)
        features = _array_features(arr, kind, field.name) if array else _scalar_features(arr, kind)
        columns.append((_example.entry_prefix(field.name), features))
    entry, example = _example.entry, _example.example_from_entries
    return [example(entry(prefix, value) for prefix, feats in columns if (value := feats[row]) is not None)
            for row in range(batch.num_rows)]


# ------------------------------------------------------------------------------------------------------ decoding

def arrow_schema(schema: StructType) -> pa.Schema:
    """The Arrow schema Spark uses for ``schema``."""
    from pyspark.sql.pandas.types import to_arrow_type

    return pa.schema([pa.field(f.name, to_arrow_type(f.dataType), f.nullable) for f in schema.fields])


class BatchBuilder:
    """Turns decoded Examples into Arrow record batches of a given schema.

    Args:
        schema: the DataFrame schema to produce (every column must pass :func:`column_kind` for reading).
    """

    def __init__(self, schema: StructType) -> None:
        self.schema = schema
        self.arrow = arrow_schema(schema)
        self.kinds = check_schema(schema, reading=True)

    def build(self, examples: Sequence[dict], where: str, first: int) -> pa.RecordBatch:
        """One record batch from ``examples``.

        Args:
            examples: decoded Examples.
            where: the file they come from, for error messages.
            first: the index in that file of ``examples[0]``, for error messages.

        Raises:
            DataError: a feature's kind or number of values does not fit its column.
        """
        arrays = []
        for field, (kind, array), target in zip(self.schema.fields, self.kinds, self.arrow):
            values = [example.get(field.name) for example in examples]
            self._check_kinds(field, kind, array, values, where, first)
            try:
                arrays.append(self._array(field, kind, array, values, target.type, where, first))
            except (pa.ArrowInvalid, OverflowError) as exc:
                raise DataError(f"{where}: feature {field.name!r} (records {first}..{first + len(values) - 1}) "
                                f"does not fit column type {field.dataType.simpleString()}: {exc}"
                                + (". Name it in binary_features to read it as binary"
                                   if kind == BYTES and "utf8" in str(exc).lower() else "")) from None
        return pa.RecordBatch.from_arrays(arrays, schema=self.arrow)

    @staticmethod
    def _check_kinds(field, kind, array, values, where, first) -> None:
        for offset, value in enumerate(values):
            if value is None:
                continue
            found, items = value
            if found is not None and found != kind:
                raise DataError(f"{where}: record {first + offset} has feature {field.name!r} as {_a(found)} list, "
                                f"but its column is {field.dataType.simpleString()} ({_a(kind)} list): the files do "
                                "not share one schema. Read them separately, or pass a schema that fits.")
            if not array and len(items) > 1:
                raise DataError(f"{where}: record {first + offset} has {len(items)} values in feature "
                                f"{field.name!r}, but its column is the scalar {field.dataType.simpleString()}. "
                                "The schema was inferred from a sample (raise the num_samples option) or given: "
                                f"make {field.name!r} an array column.")

    @staticmethod
    def _array(field, kind, array, values, target, where, first) -> pa.Array:
        if not array:
            scalars = [None if v is None or len(v[1]) == 0 else v[1][0] for v in values]
            if kind == FLOAT:
                scalars = [None if v is None else float(v) for v in scalars]
            return _typed(pa.array(scalars, _source_type(kind, target)), target)
        valid = np.array([v is not None for v in values])
        lists = [v[1] if v is not None else () for v in values]
        lengths = np.fromiter((len(items) for items in lists), dtype=np.int32, count=len(lists))
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        if kind == FLOAT:
            flat = pa.array(np.concatenate([np.asarray(items, np.float32) for items in lists])
                            if lists else np.zeros(0, np.float32))
        else:
            flat = pa.array(list(itertools.chain.from_iterable(lists)), _source_type(kind, target.value_type))
        flat = _typed(flat, target.value_type)
        mask = None if valid.all() else pa.array(~valid)
        return pa.ListArray.from_arrays(offsets, flat, type=target, mask=mask)


def _source_type(kind: str, target: pa.DataType) -> pa.DataType:
    if kind == INT64:
        return pa.int64()
    if kind == FLOAT:
        return pa.float32()
    return pa.binary()


def _typed(arr: pa.Array, target: pa.DataType) -> pa.Array:
    if arr.type == target:
        return arr
    if pa.types.is_boolean(target):
        return pc.not_equal(arr, 0)
    return arr.cast(target)  # safe cast: int overflow and invalid UTF-8 raise ArrowInvalid
