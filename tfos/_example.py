"""tf.train.Example in protobuf wire format, without TensorFlow or generated protobuf classes.

The messages, as TensorFlow defines them (``tensorflow/core/example/{example,feature}.proto``)::

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }       // map entry: string key = 1; Feature value = 2
    Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

A feature here is a pair ``(kind, values)``: ``kind`` is :data:`INT64`, :data:`FLOAT`, :data:`BYTES`, or ``None``
for a ``Feature`` with no list set; ``values`` is a list of ints, a float32 numpy array, or a list of bytes.

Why hand-written: decoding a 784-float feature here is one ``numpy.frombuffer`` on the packed bytes, where a
protobuf message object hands out a repeated field that has to be copied value by value into Python floats
(``bench/dfutil_throughput.py`` measures both). The decoder accepts everything a protobuf parser accepts for these
messages: packed and unpacked repeated fields, fields in any order, repeated map keys (the last wins), several
kinds in one Feature (the last wins), and unknown fields (skipped).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from .errors import DataError

INT64 = "int64"
FLOAT = "float"
BYTES = "bytes"
KINDS = (INT64, FLOAT, BYTES)

# Feature's field number per kind, and back.
_FIELD = {BYTES: 1, FLOAT: 2, INT64: 3}
_KIND = {number: kind for kind, number in _FIELD.items()}
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_SMALL = [bytes([n]) for n in range(128)]
_TAG_1_LEN = b"\x0a"  # field 1, wire type 2: Example.features, Features.feature, entry key, list values
_TAG_2_LEN = b"\x12"  # field 2, wire type 2: map entry value
_INT64_MASK = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------------------- encode

def varint(n: int) -> bytes:
    """The protobuf varint of the unsigned integer ``n`` (< 2**64)."""
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _length_delimited(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body


def packed_int64(values: Iterable[int]) -> bytes:
    """The packed varints of int64 ``values`` (negative values as 10-byte two's complement, like protobuf)."""
    return b"".join(varint(v & _INT64_MASK) if v < 0 or v >= 128 else _SMALL[v] for v in values)


def feature(kind: str | None, values) -> bytes:
    """A serialized ``Feature`` message.

    Args:
        kind: :data:`INT64`, :data:`FLOAT`, :data:`BYTES`, or ``None`` for a Feature with no list.
        values: ints; floats or a numpy array (stored as float32); bytes (str is encoded as UTF-8).
    """
    if kind is None:
        return b""
    if kind == FLOAT:
        payload = np.asarray(values, dtype="<f4").tobytes()
    elif kind == INT64:
        payload = packed_int64(int(v) for v in values)
    elif kind == BYTES:
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
        return feature_from_list(kind, b"".join(_length_delimited(_TAG_1_LEN, item) for item in items))
    else:
        raise DataError(f"Unknown feature kind {kind!r}; expected one of {KINDS}")
    return packed_feature(kind, payload)


def packed_feature(kind: str, payload: bytes) -> bytes:
    """A ``Feature`` of ``kind`` whose list holds the packed values ``payload`` (float32 LE or varints)."""
    body = _length_delimited(_TAG_1_LEN, payload) if payload else b""
    return feature_from_list(kind, body)


def feature_from_list(kind: str, list_body: bytes) -> bytes:
    """A ``Feature`` of ``kind`` around an already serialized ``BytesList``/``FloatList``/``Int64List`` body."""
    return _length_delimited(bytes([(_FIELD[kind] << 3) | _LEN]), list_body)


def entry_prefix(name: str) -> bytes:
    """The serialized key part of a ``Features.feature`` map entry for ``name`` (computed once per column)."""
    return _length_delimited(_TAG_1_LEN, name.encode("utf-8"))


def entry(prefix: bytes, feature_bytes: bytes) -> bytes:
    """A ``Features.feature`` map entry (as a field of ``Features``) from :func:`entry_prefix` and a Feature."""
    return _length_delimited(_TAG_1_LEN, prefix + _length_delimited(_TAG_2_LEN, feature_bytes))


def example_from_entries(entries: Iterable[bytes]) -> bytes:
    """A serialized ``Example`` from serialized map entries (see :func:`entry`)."""
    return _length_delimited(_TAG_1_LEN, b"".join(entries))


def encode(features: Mapping[str, tuple[str | None, object]]) -> bytes:
    """Serializes a ``tf.train.Example``.

    Args:
        features: feature name -> ``(kind, values)`` (see :func:`feature`).

    Returns:
        The Example's protobuf bytes, as ``tf.train.Example.SerializeToString()`` would parse them.
    """
    return example_from_entries(entry(entry_prefix(name), feature(kind, values))
                                for name, (kind, values) in features.items())


# ---------------------------------------------------------------------------------------------------------- decode

class _Malformed(Exception):
    pass


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _fields(buf: bytes, pos: int, end: int):
    """Yields ``(field number, wire type, value or start, end)`` for each field of the message in buf[pos:end].

    For wire type 2 the value is the start of the payload; for varints and fixed fields it is the value's start
    too (callers decode it); ``end`` is where the field ends.
    """
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _LEN:
            length, pos = _read_varint(buf, pos, end)
            stop = pos + length
        elif wire == _VARINT:
            _, stop = _read_varint(buf, pos, end)
        elif wire == _FIXED32:
            stop = pos + 4
        elif wire == _FIXED64:
            stop = pos + 8
        else:
            raise _Malformed(f"unsupported wire type {wire} (field {number})")
        if stop > end:
            raise _Malformed(f"field {number} runs past the end of its message")
        yield number, wire, pos, stop
        pos = stop


def _int64s(buf: bytes, pos: int, end: int, out: list) -> None:
    while pos < end:
        value, pos = _read_varint(buf, pos, end)
        value &= _INT64_MASK
        out.append(value - (1 << 64) if value >= (1 << 63) else value)


def _decode_list(kind: str, buf: bytes, pos: int, end: int):
    if kind == FLOAT:
        chunks = []
        for number, wire, start, stop in _fields(buf, pos, end):
            if number != 1:
                continue
            if wire == _LEN:
                if (stop - start) % 4:
                    raise _Malformed("packed float list length is not a multiple of 4")
                chunks.append(buf[start:stop])
            elif wire == _FIXED32:
                chunks.append(buf[start:stop])
            else:
                raise _Malformed(f"float list value with wire type {wire}")
        return np.frombuffer(b"".join(chunks) if len(chunks) != 1 else chunks[0], dtype="<f4")
    values: list = []
    for number, wire, start, stop in _fields(buf, pos, end):
        if number != 1:
            continue
        if kind == BYTES:
            if wire != _LEN:
                raise _Malformed(f"bytes list value with wire type {wire}")
            values.append(buf[start:stop])
        elif wire == _LEN:
            _int64s(buf, start, stop, values)
        elif wire == _VARINT:
            _int64s(buf, start, stop, values)
        else:
            raise _Malformed(f"int64 list value with wire type {wire}")
    return values


def _decode_feature(buf: bytes, pos: int, end: int) -> tuple[str | None, object]:
    kind, values = None, []
    for number, wire, start, stop in _fields(buf, pos, end):
        if number in _KIND and wire == _LEN:
            kind = _KIND[number]
            values = _decode_list(kind, buf, start, stop)
    return kind, values


def _decode_entry(buf: bytes, pos: int, end: int) -> tuple[str, tuple[str | None, object]]:
    key, value = "", (None, [])
    for number, wire, start, stop in _fields(buf, pos, end):
        if wire != _LEN:
            continue
        if number == 1:
            try:
                key = buf[start:stop].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Malformed(f"feature name is not UTF-8: {exc}") from None
        elif number == 2:
            value = _decode_feature(buf, start, stop)
    return key, value


def decode(data: bytes) -> dict[str, tuple[str | None, object]]:
    """Parses a serialized ``tf.train.Example``.

    Args:
        data: the Example's bytes (one TFRecord record).

    Returns:
        feature name -> ``(kind, values)``: ints as a list, floats as a float32 numpy array, bytes as a list.

    Raises:
        DataError: ``data`` is not a valid Example message.
    """
    data = bytes(data)
    features: dict = {}
    try:
        for number, wire, start, stop in _fields(data, 0, len(data)):
            if number != 1 or wire != _LEN:
                continue
            for fnum, fwire, estart, estop in _fields(data, start, stop):
                if fnum == 1 and fwire == _LEN:
                    name, value = _decode_entry(data, estart, estop)
                    features[name] = value
    except _Malformed as exc:
        raise DataError(f"record is not a serialized tf.train.Example ({exc})") from None
    return features
