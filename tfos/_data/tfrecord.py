"""TFRecord framing without TensorFlow: write records, read them back, and check a file's integrity.

A TFRecord file is a sequence of records, each::

    uint64 length (little endian) | uint32 masked_crc32c(length) | bytes data[length] | uint32 masked_crc32c(data)

The CRC is CRC-32C, "masked" by rotating right 15 bits and adding a constant, as TensorFlow does. Reading checks
both CRCs and reports the file and byte offset of the first bad or truncated record.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import BinaryIO, Iterable, Iterator, Protocol

import crc32c as _crc32c

from ..errors import DataError

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")



class Readable(Protocol):
    """What :func:`read_records` reads from: a binary file, a ``GzipFile``, a zlib stream."""

    def read(self, size: int = -1, /) -> bytes: ...

def masked_crc(data) -> int:
    """TensorFlow's masked CRC-32C of ``data`` (any bytes-like object; hardware-accelerated where possible)."""
    crc = _crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """``data`` as one TFRecord record (header, data, footer)."""
    length = struct.pack("<Q", len(data))
    return length + _FOOTER.pack(masked_crc(length)) + data + _FOOTER.pack(masked_crc(data))


def write_records(out: BinaryIO, records: Iterable[bytes]) -> tuple[int, int]:
    """Writes ``records`` to ``out`` as TFRecords.

    Returns:
        ``(records written, bytes written)``.
    """
    count = size = 0
    for data in records:
        framed = frame(data)
        out.write(framed)
        count += 1
        size += len(framed)
    return count, size


def read_records(src: Readable, name: str, check_data: bool = True) -> Iterator[bytes]:
    """Yields the records of the TFRecord stream ``src``.

    Args:
        src: a binary stream positioned at a record boundary (the start of the file).
        name: the file's name, for error messages.
        check_data: also check each record's data CRC (the header CRC is always checked).

    Raises:
        DataError: a record is truncated or its CRC does not match; the message names ``name`` and the offset.
    """
    offset = 0
    while True:
        header = src.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            raise _corrupt(name, offset, f"truncated record header ({len(header)} of {_HEADER.size} bytes)")
        length, length_crc = _HEADER.unpack(header)
        if masked_crc(header[:8]) != length_crc:
            raise _corrupt(name, offset, "corrupted record header (length CRC mismatch)")
        data = src.read(length)
        footer = src.read(_FOOTER.size)
        if len(data) < length or len(footer) < _FOOTER.size:
            raise _corrupt(name, offset, f"truncated record (expected {length} data bytes)")
        if check_data and masked_crc(data) != _FOOTER.unpack(footer)[0]:
            raise _corrupt(name, offset, "corrupted record data (CRC mismatch)")
        yield data
        offset += _HEADER.size + length + _FOOTER.size


def check_file(path: str, check_data: bool = True, name: str | None = None) -> int:
    """Walks a local TFRecord file's records in place (memory-mapped) and returns their number.

    Args:
        path: the local file.
        check_data: also check each record's data CRC. Without it only the framing is walked (each record's
            length, to the end of the file): enough to find a truncated file, which TensorFlow would take for a
            shorter complete one; the header CRCs are then checked only to describe a problem precisely.
        name: how errors name the file (default ``path``; e.g. the remote URL it was downloaded from).

    Raises:
        DataError: the first truncated or corrupted record, with the file and its byte offset.
    """
    if os.path.getsize(path) == 0:
        return 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            if not check_data:
                count = _count_framed(view)
                if count is not None:
                    return count
            return _walk(view, name or path, check_data)  # finds and describes the first bad record
        finally:
            view.release()


_LENGTH = struct.Struct("<Q")


def _count_framed(view: memoryview) -> int | None:
    """The number of records if the lengths tile the file exactly, else None (a damaged or truncated file)."""
    size, offset, count = len(view), 0, 0
    unpack, overhead = _LENGTH.unpack_from, _HEADER.size + _FOOTER.size
    while offset + overhead <= size:
        offset += unpack(view, offset)[0] + overhead
        count += 1
    return count if offset == size else None


def _walk(view: memoryview, name: str, check_data: bool) -> int:
    size, offset, count = len(view), 0, 0
    while offset < size:
        if size - offset < _HEADER.size:
            raise _corrupt(name, offset, f"truncated record header ({size - offset} of {_HEADER.size} bytes)")
        length, length_crc = _HEADER.unpack_from(view, offset)
        if masked_crc(view[offset:offset + 8]) != length_crc:
            raise _corrupt(name, offset, "corrupted record header (length CRC mismatch)")
        end = offset + _HEADER.size + length
        if end + _FOOTER.size > size:
            raise _corrupt(name, offset, f"truncated record (expected {length} data bytes)")
        if check_data and masked_crc(view[offset + _HEADER.size:end]) != _FOOTER.unpack_from(view, end)[0]:
            raise _corrupt(name, offset, "corrupted record data (CRC mismatch)")
        offset = end + _FOOTER.size
        count += 1
    return count


def _corrupt(name: str, offset: int, what: str) -> DataError:
    return DataError(f"{name}: {what} at byte offset {offset}; the file is damaged or not a TFRecord file "
                     "(gzip-compressed files need compression='GZIP')")
