"""The feed channel's wire format: authenticated TCP carrying framed batches.

Connection (mutual challenge-response; the secret itself never crosses the wire): the server sends a 32-byte
random challenge; the client answers with HMAC-SHA256(secret, "tfos-feed" + challenge) followed by a challenge
of its own; the server closes the connection on a wrong answer, or when the answer is not complete within
:data:`HANDSHAKE_TIMEOUT` seconds, before reading anything else; otherwise it proves itself with
HMAC-SHA256(secret, "tfos-feed-node" + client's challenge), which the client checks before it sends or
unpickles anything. Then both sides exchange frames: ``kind`` (1 byte), ``length`` (8 bytes, big-endian),
payload. The channel is authenticated, not encrypted: rows travel in clear (see docs/security.md).

Client -> server: HELLO (JSON), ARROW (an Arrow IPC stream of record batches, read as one), ROWS (a pickled
list of rows), SPILL_ARROW and SPILL_ROWS (the same, for spill rows: see ``tfos._feed.plan``), END (no more
rows on this connection). A train hello names its ``split``: ``"train"`` rows go to the node's bounded queue,
``"validation"`` rows to a file on the node's disk (``tfos._feed.spool``). Server -> client: ACK (JSON), STOP (the node stopped taking data), STALLED (a
feeding task found this ``train()`` call stalled; the report as text), RESULTS (pickled list), ERROR (text).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import socket
import struct
import time

from ..errors import AuthenticationError

HELLO, ARROW, ROWS, END = b"H", b"A", b"P", b"E"
SPILL_ARROW, SPILL_ROWS = b"a", b"p"
ACK, STOP, STALLED, RESULTS, ERROR = b"K", b"S", b"T", b"R", b"X"
_HEADER = struct.Struct(">cQ")
_CHALLENGE_BYTES = 32
# A frame larger than this is refused as corrupt rather than allocated.
MAX_FRAME = 1 << 34
# Seconds a new connection has to answer the challenge; a silent or slow client is dropped after that.
HANDSHAKE_TIMEOUT = 10.0


class ChannelClosed(ConnectionError):
    """The peer closed the connection."""


def recv_exact(sock: socket.socket, size: int, deadline: float | None = None) -> bytearray:
    """Reads exactly ``size`` bytes; with a ``deadline`` (``time.monotonic()``), raises socket.timeout after it."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"timed out after {got} of {size} bytes")
            sock.settimeout(left)
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise ChannelClosed(f"connection closed after {got} of {size} bytes")
        got += n
    return buf


def frame_header(kind: bytes, size: int) -> bytes:
    return _HEADER.pack(kind, size)


def send_frame(sock: socket.socket, kind: bytes, payload: bytes | memoryview = b"") -> None:
    sock.sendall(_HEADER.pack(kind, len(payload)))
    if len(payload):
        sock.sendall(payload)


def recv_frame(sock: socket.socket) -> tuple[bytes, bytearray]:
    kind, size = _HEADER.unpack(recv_exact(sock, _HEADER.size))
    if size > MAX_FRAME:
        raise ChannelClosed(f"frame of {size} bytes refused as corrupt")
    return kind, recv_exact(sock, size) if size else bytearray()


def send_json(sock: socket.socket, kind: bytes, obj) -> None:
    send_frame(sock, kind, json.dumps(obj).encode())


def send_pickle(sock: socket.socket, kind: bytes, obj) -> None:
    send_frame(sock, kind, pickle.dumps(obj, protocol=5))


def _answer(secret: str, challenge: bytes, label: bytes = b"tfos-feed") -> bytes:
    return hmac.new(secret.encode(), label + challenge, hashlib.sha256).digest()


_NODE = b"tfos-feed-node"  # the label of the server's proof: a client's answer can never pass as one


def server_handshake(sock: socket.socket, secret: str, timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """Challenges a new client, then proves itself; returns with the socket blocking again.

    Raises:
        AuthenticationError: a wrong, short or late answer (the caller closes the connection).
    """
    challenge = os.urandom(_CHALLENGE_BYTES)
    deadline = time.monotonic() + timeout  # for the whole answer: trickling bytes does not extend it
    sock.settimeout(timeout)
    digest = hashlib.sha256().digest_size
    try:
        sock.sendall(challenge)
        reply = bytes(recv_exact(sock, digest + _CHALLENGE_BYTES, deadline))
    except socket.timeout:
        raise AuthenticationError(f"feed client did not answer the challenge within {timeout:.0f}s") from None
    except ChannelClosed:
        raise AuthenticationError("feed client closed the connection before answering the challenge") from None
    if not hmac.compare_digest(reply[:digest], _answer(secret, challenge)):
        raise AuthenticationError("feed client did not prove it holds the cluster secret")
    sock.sendall(_answer(secret, reply[digest:], _NODE))
    sock.settimeout(None)


def client_handshake(sock: socket.socket, secret: str) -> None:
    """Answers the server's challenge and checks the server's proof.

    Raises:
        AuthenticationError: the server does not hold the cluster secret.
        ChannelClosed: the server closed the connection (it refused this client's answer).
    """
    challenge = bytes(recv_exact(sock, _CHALLENGE_BYTES))
    mine = os.urandom(_CHALLENGE_BYTES)
    sock.sendall(_answer(secret, challenge) + mine)
    proof = bytes(recv_exact(sock, hashlib.sha256().digest_size))
    if not hmac.compare_digest(proof, _answer(secret, mine, _NODE)):
        peer = sock.getpeername()
        raise AuthenticationError(
            f"the feed server at {peer[0]}:{peer[1]} did not prove it holds the cluster secret: another process "
            "may have taken the TF node's port, or it belongs to another cluster. No data was sent to it."
        )


def connect(address: str, secret: str, timeout: float) -> socket.socket:
    """Opens an authenticated feed connection to ``host:port``."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        client_handshake(sock, secret)
    except BaseException:
        sock.close()
        raise
    return sock


def arrow_payload(*batches) -> memoryview:
    """Record batches (of one schema) as an Arrow IPC stream, schema included."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return memoryview(sink.getvalue())


def read_arrow(payload: bytearray):
    """The record batches of an :func:`arrow_payload`, as one record batch."""
    import pyarrow as pa

    reader = pa.ipc.open_stream(pa.py_buffer(payload))
    batches = list(reader)
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches, reader.schema).combine_chunks().to_batches()[0]


def decode(kind: bytes, payload) -> tuple[object, int, bool]:
    """A data frame's rows: ``(record batch or list of rows, number of rows, is_arrow)``."""
    if kind in (ARROW, SPILL_ARROW):
        batch = read_arrow(payload)
        return batch, batch.num_rows, True
    if kind not in (ROWS, SPILL_ROWS):
        raise ValueError(f"not a data frame: kind {kind!r}")
    rows = pickle.loads(payload)
    return rows, len(rows), False
