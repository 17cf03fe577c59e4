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

from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import DataError

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


def _varint_at(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (one-byte varints take the short path)."""
    if pos < end and buf[pos] < 0x80:
        return buf[pos], pos + 1
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


def _field(buf: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """The field at ``pos``: ``(field number, wire type, value start, value end)``.

    For wire type 2 the value is the payload after its length; for varints and fixed fields it is the encoded
    value itself.
    """
    key = buf[pos]  # callers loop while pos < end
    if key < 0x80:
        pos += 1
    else:
        key, pos = _varint_at(buf, pos, end)
    wire = key & 7
    if wire == _LEN:
        if pos < end and buf[pos] < 0x80:
            stop = pos + 1 + buf[pos]
            pos += 1
        else:
            length, pos = _varint_at(buf, pos, end)
            stop = pos + length
    elif wire == _VARINT:
        stop = _varint_at(buf, pos, end)[1]
    elif wire == _FIXED32:
        stop = pos + 4
    elif wire == _FIXED64:
        stop = pos + 8
    else:
        raise _Malformed(f"unsupported wire type {wire} (field {key >> 3})")
    if stop > end:
        raise _Malformed(f"field {key >> 3} runs past the end of its message")
    return key >> 3, wire, pos, stop


def _int64s(buf: bytes, pos: int, end: int, out: list) -> None:
    while pos < end:
        value, pos = _varint_at(buf, pos, end)
        value &= _INT64_MASK
        out.append(value - (1 << 64) if value >= (1 << 63) else value)


def _decode_list(kind: str, buf: bytes, pos: int, end: int):
    if kind == FLOAT:
        chunks = []
        while pos < end:
            number, wire, start, pos = _field(buf, pos, end)
            if number != 1:
                continue
            if wire == _LEN and (pos - start) % 4:
                raise _Malformed("packed float list length is not a multiple of 4")
            if wire not in (_LEN, _FIXED32):
                raise _Malformed(f"float list value with wire type {wire}")
            chunks.append((start, pos))
        if len(chunks) == 1:  # the usual case: one packed field, viewed in place
            start, stop = chunks[0]
            return np.frombuffer(buf, dtype="<f4", count=(stop - start) // 4, offset=start)
        return np.frombuffer(b"".join(buf[a:b] for a, b in chunks), dtype="<f4")
    values: list = []
    while pos < end:
        number, wire, start, pos = _field(buf, pos, end)
        if number != 1:
            continue
        if kind == BYTES:
            if wire != _LEN:
                raise _Malformed(f"bytes list value with wire type {wire}")
            values.append(buf[start:pos])
        elif wire in (_LEN, _VARINT):
            _int64s(buf, start, pos, values)
        else:
            raise _Malformed(f"int64 list value with wire type {wire}")
    return values


def _decode_feature(buf: bytes, pos: int, end: int) -> tuple[str | None, object]:
    kind: str | None = None
    values: list = []
    while pos < end:
        number, wire, start, pos = _field(buf, pos, end)
        if number in _KIND and wire == _LEN:
            kind = _KIND[number]
            values = _decode_list(kind, buf, start, pos)
    return kind, values


def _decode_entry(buf: bytes, pos: int, end: int) -> tuple[str, tuple[str | None, object]]:
    key = ""
    value: tuple[str | None, object] = (None, [])
    while pos < end:
        number, wire, start, pos = _field(buf, pos, end)
        if wire != _LEN:
            continue
        if number == 1:
            try:
                key = buf[start:pos].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Malformed(f"feature name is not UTF-8: {exc}") from None
        elif number == 2:
            value = _decode_feature(buf, start, pos)
    return key, value


def decode(data: bytes) -> dict[str, tuple[str | None, Any]]:
    """Parses a serialized ``tf.train.Example``.

    Args:
        data: the Example's bytes (one TFRecord record).

    Returns:
        feature name -> ``(kind, values)``: ints as a list, floats as a read-only float32 numpy array (a view of
        ``data``), bytes as a list.

    Raises:
        DataError: ``data`` is not a valid Example message.
    """
    data = bytes(data)
    features: dict = {}
    pos, end = 0, len(data)
    try:
        while pos < end:
            number, wire, start, pos = _field(data, pos, end)
            if number != 1 or wire != _LEN:
                continue
            while start < pos:
                fnum, fwire, estart, start = _field(data, start, pos)
                if fnum == 1 and fwire == _LEN:
                    name, value = _decode_entry(data, estart, start)
                    features[name] = value
    except _Malformed as exc:
        raise DataError(f"record is not a serialized tf.train.Example ({exc})") from None
    return features
