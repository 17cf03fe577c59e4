"""The feed server inside a TF process (InputMode.SPARK): receives rows from Spark tasks, with back-pressure.

One thread per connection. Training rows go into one bounded queue (a full queue stops the reading thread,
so TCP pushes back on the Spark task: memory stays bounded whatever the partition size). Inference
partitions are served one at a time: rows go to the inference queue, the TF side answers with
``batch_results``, and the results go back on the same connection in input order.
"""

from __future__ import annotations

import json
import logging
import pickle
import queue
import socket
import threading

from ..errors import AuthenticationError
from . import protocol as p

logger = logging.getLogger(__name__)

# How long blocking queue operations wait before re-checking for terminate/end of feed.
POLL = 0.05
# Connections that may be answering the challenge at once; more are closed unread (see protocol.HANDSHAKE_TIMEOUT).
MAX_PENDING_HANDSHAKES = 64


class Chunk:
    """Rows from one frame: a list of rows (RDD) or an Arrow record batch (DataFrame)."""

    __slots__ = ("data", "rows", "epoch", "quota", "is_arrow")

    def __init__(self, data, rows: int, epoch: int = 0, quota: int = 0, is_arrow: bool = False) -> None:
        self.data, self.rows, self.epoch, self.quota, self.is_arrow = data, rows, epoch, quota, is_arrow


def _first_rows(chunks: list, rows: int) -> list:
    """The chunks holding the first ``rows`` results (the last one cut to fit)."""
    out, left = [], rows
    for chunk in chunks:
        if left <= 0:
            break
        out.append(chunk[:left])
        left -= len(out[-1])
    return out


class FeedServer:
    """Accepts authenticated feed connections on an already-bound listening socket.

    Args:
        sock: a bound TCP socket (the supervisor reserved its port).
        secret: the cluster's secret.
        max_chunks: queued chunks before readers block (back-pressure).
    """

    def __init__(self, sock: socket.socket, secret: str, max_chunks: int = 16) -> None:
        self._sock = sock
        self._secret = secret
        self.train_q: queue.Queue = queue.Queue(max_chunks)
        self.infer_q: queue.Queue = queue.Queue(max_chunks)
        self.terminating = threading.Event()
        self.done = threading.Event()
        self._infer_lock = threading.Lock()
        self._results: list = []  # chunks of results: lists, or numpy arrays (one row per result)
        self._result_rows = 0
        self._results_ready = threading.Condition()
        self.rejected = 0  # connections refused: wrong, late or no answer to the challenge, or a flood
        self._handshakes = threading.BoundedSemaphore(MAX_PENDING_HANDSHAKES)

    def start(self) -> None:
        self._sock.listen(64)
        threading.Thread(target=self._accept_loop, name="tfos-feed-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        """Hands each connection to its own thread at once: a silent client never holds up the next one."""
        while True:
            try:
                conn, peer = self._sock.accept()
            except OSError:
                return
            if not self._handshakes.acquire(blocking=False):
                # Too many connections still owe their challenge answer: a flood, not Spark tasks.
                self.rejected += 1
                logger.warning("refused a feed connection from %s: %d others have not authenticated yet",
                               peer, MAX_PENDING_HANDSHAKES)
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, peer), name="tfos-feed-conn", daemon=True).start()

    def _authenticate(self, conn: socket.socket, peer) -> bool:
        try:
            p.server_handshake(conn, self._secret, p.HANDSHAKE_TIMEOUT)
            return True
        except (AuthenticationError, OSError) as exc:
            self.rejected += 1
            logger.warning("refused a feed connection from %s: %s", peer, exc)
            return False
        finally:
            self._handshakes.release()

    def _serve(self, conn: socket.socket, peer=None) -> None:
        try:
            if not self._authenticate(conn, peer):
                return
            kind, payload = p.recv_frame(conn)
            hello = json.loads(payload) if kind == p.HELLO else {}
            mode = hello.get("kind")
            if mode == "train":
                self._serve_train(conn, hello)
            elif mode == "infer":
                with self._infer_lock:
                    self._serve_infer(conn)
            elif mode == "end_feed":
                self.done.set()
                p.send_json(conn, p.ACK, {})
        except (p.ChannelClosed, OSError) as exc:
            logger.debug("feed connection closed: %s", exc)
        except Exception as exc:  # noqa: BLE001 - report to the feeding task instead of dying silently
            logger.exception("feed connection failed")
            try:
                p.send_frame(conn, p.ERROR, f"{type(exc).__name__}: {exc}".encode())
            except OSError:
                pass
        finally:
            conn.close()

    def _put(self, q: queue.Queue, item) -> bool:
        """Blocks until ``item`` is queued; False if the feed was terminated meanwhile."""
        while not self.terminating.is_set():
            try:
                q.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self, kind: bytes, payload: bytearray) -> tuple[object, int, bool]:
        if kind == p.ARROW:
            batch = p.read_arrow(payload)
            return batch, batch.num_rows, True
        rows = pickle.loads(payload)
        return rows, len(rows), False

    def _serve_train(self, conn: socket.socket, hello: dict) -> None:
        accepted, stopped = 0, self.terminating.is_set()
        # Answer at once, so a task feeding a terminated node stops before sending anything.
        p.send_frame(conn, p.STOP) if stopped else p.send_json(conn, p.ACK, {})
        while True:
            kind, payload = p.recv_frame(conn)
            if kind == p.END:
                break
            if stopped or self.terminating.is_set():
                if not stopped:
                    p.send_frame(conn, p.STOP)
                    stopped = True
                continue  # drain what the task already sent, so it ends cleanly
            data, rows, is_arrow = self._decode(kind, payload)
            if self._put(self.train_q, Chunk(data, rows, hello["epoch"], hello["quota"], is_arrow)):
                accepted += rows
        if not stopped:
            p.send_frame(conn, p.STOP) if self.terminating.is_set() else p.send_json(conn, p.ACK, {"rows": accepted})

    def _serve_infer(self, conn: socket.socket) -> None:
        rows = 0
        with self._results_ready:
            self._results, self._result_rows = [], 0
        while True:
            kind, payload = p.recv_frame(conn)
            if kind == p.END:
                break
            data, n, is_arrow = self._decode(kind, payload)
            rows += n
            if not self._put(self.infer_q, Chunk(data, n, is_arrow=is_arrow)):
                p.send_frame(conn, p.STOP)
                return
        self._put(self.infer_q, None)  # end of partition
        with self._results_ready:
            while self._result_rows < rows and not self.terminating.is_set():
                self._results_ready.wait(POLL)
            complete = self._result_rows >= rows
            results, self._results, self._result_rows = _first_rows(self._results, rows), [], 0
        if not complete:
            p.send_frame(conn, p.STOP)
            return
        p.send_pickle(conn, p.RESULTS, results)

    def add_results(self, results) -> None:
        """Adds results for the rows read so far: a sequence, or a numpy array with one row per result."""
        chunk = results if hasattr(results, "shape") and hasattr(results, "dtype") else list(results)
        with self._results_ready:
            self._results.append(chunk)
            self._result_rows += len(chunk)
            self._results_ready.notify_all()

    def terminate(self) -> None:
        """Stops taking data: feeding tasks are told to stop, queued rows are dropped."""
        self.terminating.set()
        for q in (self.train_q, self.infer_q):
            try:
                while True:
                    q.get_nowait()
            except queue.Empty:
                pass

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
