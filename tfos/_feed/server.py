"""The feed server inside a TF process (InputMode.SPARK): receives rows from Spark tasks, with back-pressure.

One thread per connection. Training rows go into the node's :class:`~tfos._feed.intake.Intake`: even chunks
into a bounded FIFO (a full one stops the reading thread, so TCP pushes back on the Spark task and memory
stays bounded whatever the partition size), spill chunks aside (see ``tfos._feed.plan``). Threads waiting for
room are served in arrival order. Validation rows (a hello with ``split="validation"``) never wait for the
reader: they go to a file on the node's disk as they arrive (``tfos._feed.spool``), which
``feed.dataset(split="validation")`` replays. Inference partitions are served one at a time: rows go to the inference
queue, the TF side answers with ``batch_results``, and the results go back on the same connection in input
order. Two small requests serve the feeding tasks' stall check: ``status`` (what this node received and
took, and since when its reader took nothing) and ``stall`` (a task found the feed stalled: every task of
that ``train()`` call is told to stop, with the reason).
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
import time

from .._node import ERROR_FILE_ENV
from ..errors import AuthenticationError, ConfigError, FeedError
from . import parquet, protocol as p
from .intake import Chunk, Intake
from .local import LocalCopy
from .spool import Spool

logger = logging.getLogger(__name__)

# How long blocking queue operations wait before re-checking for terminate/end of feed.
POLL = 0.05
# Connections that may be answering the challenge at once; more are closed unread (see protocol.HANDSHAKE_TIMEOUT).
MAX_PENDING_HANDSHAKES = 64


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
        max_chunks: training chunks queued before readers block (back-pressure), and inference chunks.
        spool_parent: where the validation split's directory is made; by default the node's work directory
            (the supervisor removes it even if the TF process is killed), else the system's temp directory.
    """

    def __init__(self, sock: socket.socket, secret: str, max_chunks: int = 16, spool_parent: str | None = None
                 ) -> None:
        self._sock = sock
        self._secret = secret
        self._cond = threading.Condition()  # guards the intake and everything below it
        self._intake = Intake(max_chunks)
        self._putters: collections.deque = collections.deque()  # threads waiting for room, oldest first
        self._readers = 0  # reader calls waiting in take()
        self._train_conns = 0
        self._stalled: dict[str, str] = {}  # train() calls a feeding task found stalled, with the report
        self._calls: dict[str, bool] = {}  # train() calls (feed ids) in the order seen: whether each has validation
        self._spools: dict[str, Spool] = {}  # the latest call's validation split (older ones are removed)
        self._spool_parent = spool_parent
        self._spool_dir: str | None = None
        self._spool_serial = 0
        self._share_reads: dict[tuple[str, int], _ShareRead] = {}  # fast-path reads, by call and first epoch
        self._frames_seen: dict[tuple, set[int]] = {}  # Spark-path frames queued, by call, epoch and partition
        self._latest: dict[str, int] = {}  # per call, the epoch whose rows the node queues now
        self._started = self._last_take = time.monotonic()
        self._took_any = False
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
            elif mode == "status":
                key = _key(hello)
                if hello.get("latest"):
                    with self._cond:
                        key = (key[0], self._latest.get(key[0], key[1]))
                p.send_json(conn, p.ACK, self.status(key, str(hello.get("split", "train"))))
            elif mode == "stall":
                self.mark_stalled(str(hello.get("feed", "")), str(hello.get("reason", "")))
                p.send_json(conn, p.ACK, {})
            elif mode == "end_feed":
                self.done.set()
                with self._cond:
                    self._cond.notify_all()  # spill rows held for an epoch that will not complete are due
                p.send_json(conn, p.ACK, {})
        except (p.ChannelClosed, ConnectionError, TimeoutError) as exc:
            logger.debug("feed connection closed: %s", exc)
        except Exception as exc:  # noqa: BLE001 - report to the feeding task instead of dying silently
            logger.exception("feed connection failed")
            try:
                p.send_frame(conn, p.ERROR, f"{type(exc).__name__}: {exc}".encode())
            except OSError:
                pass
        finally:
            conn.close()

    # ----- training rows ---------------------------------------------------------------------------------
    def _verdict(self, feed: str) -> tuple[bytes, bytes] | None:
        """Why a train connection of ``feed`` must stop taking rows: (STOP, b"") after terminate, (STALLED,
        report) after a stall; None to go on."""
        if self.terminating.is_set():
            return p.STOP, b""
        reason = self._stalled.get(feed)
        return (p.STALLED, reason.encode()) if reason is not None else None

    def _serve_train(self, conn: socket.socket, hello: dict) -> None:
        feed, key = str(hello.get("feed", "")), _key(hello)
        with self._cond:
            if feed not in self._calls:  # a new train() call: the frames of older ones are of no use
                self._frames_seen = {k: v for k, v in self._frames_seen.items() if k[0] == feed}
            self._calls.setdefault(feed, bool(hello.get("validation")))
            self._cond.notify_all()  # a reader of the validation split may wait to learn there is none
        if hello.get("split", "train") == "validation":
            self._serve_validation(conn, hello, feed)
            return
        with self._cond:
            self._intake.open(key, int(hello.get("even", hello.get("quota", 0))))
            self._train_conns += 1
        try:
            if "epochs" in hello:
                self._read_share(conn, hello, feed, key)
            else:
                self._take_rows(conn, hello, feed, key)
        finally:
            with self._cond:
                self._train_conns -= 1

    def _take_rows(self, conn: socket.socket, hello: dict, feed: str, key) -> None:
        verdict = self._verdict(feed)
        # Answer at once, so a task feeding a stopped node stops before sending anything.
        p.send_frame(conn, *verdict) if verdict else p.send_json(conn, p.ACK, {})
        answered, accepted, frames = verdict is not None, 0, 0
        seed = hello.get("seed")
        sent_by = (feed, key[1], hello.get("partition"))
        while True:
            kind, payload = p.recv_frame(conn)
            if kind == p.END:
                break
            verdict = verdict or self._verdict(feed)
            if verdict is None:
                index, frames = frames, frames + 1
                if not self._first_copy(sent_by, index):
                    continue  # Spark ran this partition's task again: this frame is queued already
                data, rows, is_arrow = p.decode(kind, payload)
                data = parquet.shuffled(data, is_arrow, seed, hello["epoch"], hello.get("partition"), index)
                chunk = Chunk(data, rows, hello["epoch"], hello["quota"], is_arrow, key=key,
                              spill=kind in (p.SPILL_ROWS, p.SPILL_ARROW))
                if self._put(chunk, feed):
                    accepted += rows
                    continue
                verdict = self._verdict(feed)
            if not answered:
                assert verdict is not None  # a put is refused only once a verdict stands, and verdicts stay
                p.send_frame(conn, *verdict)
                answered = True
            # then drain what the task already sent, so that it ends cleanly
        if not answered:
            verdict = self._verdict(feed)
            p.send_frame(conn, *verdict) if verdict else p.send_json(conn, p.ACK, {"rows": accepted})

    def _first_copy(self, sent_by: tuple, index: int) -> bool:
        """Whether frame ``index`` of a partition's feeding task (``sent_by``: call, epoch, partition) is new to
        this node. A task Spark runs again (its executor was lost, or speculation) sends the same frames in the
        same order (the plan and the persisted data fix them): the node queues each once."""
        with self._cond:
            seen = self._frames_seen.setdefault(sent_by, set())
            if index in seen:
                return False
            seen.add(index)
            return True

    def _read_share(self, conn: socket.socket, hello: dict, feed: str, key) -> None:
        """The Parquet fast path (``tfos._feed.parquet``): the node reads its share of each epoch the hello names
        from the files into the queue, one epoch after the other, waiting for room like a feeding connection;
        then the task's END is answered with the rows queued (or the stop / stall verdict, or the read error).

        The read belongs to the node, not to the connection: a second connection for the same call and epochs
        (Spark retrying the feeding task) waits for the first read and answers with its outcome, so no row is
        queued twice."""
        verdict = self._verdict(feed)
        p.send_frame(conn, *verdict) if verdict else p.send_json(conn, p.ACK, {})
        with self._cond:
            read = self._share_reads.get(key)
            mine = read is None
            if mine:
                read = self._share_reads[key] = _ShareRead()
        assert read is not None
        if mine:
            try:
                if verdict is None:
                    read.accepted, read.error = self._fill_share(hello, feed)
            except Exception as exc:  # noqa: BLE001 - the task (and a retried one) must hear it, not a reset
                logger.exception("reading this node's Parquet share failed")
                read.error = f"reading this node's Parquet share failed: {type(exc).__name__}: {exc}"
            finally:
                read.done.set()
        if p.recv_frame(conn)[0] != p.END:
            raise FeedError("a fast-path feeding task sent rows; it only names the files")
        while not read.done.wait(POLL):
            if self._verdict(feed):
                break
        verdict = self._verdict(feed)
        if read.error is not None:
            p.send_frame(conn, p.ERROR, read.error.encode())
        else:
            p.send_frame(conn, *verdict) if verdict else p.send_json(conn, p.ACK, {"rows": read.accepted})

    def _fill_share(self, hello: dict, feed: str) -> tuple[int, str | None]:
        """Queues the node's pieces of every epoch of a fast-path hello; returns (rows queued, read error).
        With ``keep`` (``feed_local_cache``), pieces read again in a later epoch are kept decoded (in memory,
        then on the local disk: ``tfos._feed.local``) until then."""
        accepted = 0
        share = parquet.share_from_wire(hello)
        keep = None
        if hello.get("keep") and len(share) > 1:
            keep = LocalCopy((piece for pieces in share for piece in pieces), self._spool_parent or _work_dir())
        try:
            for epoch, batches in self._share_epochs(hello, share, keep):
                key = (feed, epoch)
                with self._cond:
                    self._intake.open(key, int(hello.get("quota", 0)))
                    self._latest[feed] = epoch
                for batch in batches:
                    if not self._put(Chunk(batch, batch.num_rows, epoch, hello["quota"], True, key=key), feed):
                        return accepted, None
                    accepted += batch.num_rows
        except FeedError as exc:
            return accepted, str(exc)
        finally:
            if keep is not None:
                logger.info("the node decoded %d piece(s) of its Parquet share once and read them back %d time(s) "
                            "from its local copy", keep.kept, keep.reused)
                keep.close()
        return accepted, None

    @staticmethod
    def _share_epochs(hello: dict, share: list, keep: LocalCopy | None = None):
        """``(epoch, record batches)`` for each epoch of a fast-path hello, whose pieces are ``share``."""
        for offset, pieces in enumerate(share):
            epoch = int(hello["epoch"]) + offset
            yield epoch, parquet.read_pieces(pieces, int(hello.get("chunk_rows", 1024)), hello.get("seed"), epoch,
                                             hello.get("node"), columns=hello.get("columns"), keep=keep)

    def _put(self, chunk: Chunk, feed: str) -> bool:
        """Adds ``chunk``, waiting (first come, first served) for room if it is an even chunk; False if the
        feed was terminated or found stalled meanwhile."""
        with self._cond:
            if chunk.spill:
                self._intake.put(chunk)
                self._cond.notify_all()
                return True
            me = object()
            self._putters.append(me)
            try:
                while self._putters[0] is not me or self._intake.full():
                    if self._verdict(feed):
                        return False
                    self._cond.wait(1.0)
                self._intake.put(chunk)
                return True
            finally:
                self._putters.remove(me)
                self._cond.notify_all()

    # ----- validation rows ---------------------------------------------------------------------------------
    def _serve_validation(self, conn: socket.socket, hello: dict, feed: str) -> None:
        """Writes the connection's frames to the call's split file as they come (never waiting for a reader);
        at END, counts them and answers. A stop or stall verdict drops them and drains the connection."""
        spool, token = self._spool(feed, int(hello.get("quota", 0))), object()
        verdict = self._verdict(feed)
        p.send_frame(conn, *verdict) if verdict else p.send_json(conn, p.ACK, {})
        try:
            if "epochs" in hello and verdict is None:  # the fast path: this node reads its share from the cache
                try:
                    for _, batches in self._share_epochs(hello, parquet.share_from_wire(hello)):
                        for batch in batches:
                            spool.append(token, p.ARROW, p.arrow_payload(batch), batch.num_rows)
                except FeedError as exc:
                    spool.discard(token)
                    p.recv_frame(conn)
                    p.send_frame(conn, p.ERROR, str(exc).encode())
                    return
            while True:
                kind, payload = p.recv_frame(conn)
                if kind == p.END:
                    break
                if verdict is None:
                    verdict = self._verdict(feed)
                    if verdict is not None:
                        p.send_frame(conn, *verdict)
                        continue
                    spool.append(token, kind, payload, p.decode(kind, payload)[1])
        except BaseException:
            spool.discard(token)
            raise
        if verdict is not None:
            spool.discard(token)
            return
        rows = spool.commit(token, int(hello.get("partition", -1)))
        with self._cond:
            self._cond.notify_all()
        p.send_json(conn, p.ACK, {"rows": rows})

    def _spool(self, feed: str, quota: int) -> Spool:
        """The split file of call ``feed``, made at its first validation connection (the previous one removed)."""
        with self._cond:
            spool = self._spools.get(feed)
            if spool is None:
                for old in self._spools.values():
                    old.remove()
                self._spools.clear()
                if self._spool_dir is None:
                    self._spool_dir = tempfile.mkdtemp(prefix="tfos-validation-", dir=self._spool_parent or
                                                       _work_dir())
                    atexit.register(shutil.rmtree, self._spool_dir, True)
                self._spool_serial += 1
                path = os.path.join(self._spool_dir, f"split-{self._spool_serial}.frames")
                spool = self._spools[feed] = Spool(path, quota)
            return spool

    def validation(self, timeout: float) -> Spool:
        """The latest ``train()`` call's validation split, once all of this node's share arrived.

        Raises:
            ConfigError: that call has no validation data.
            FeedError: the share did not arrive within ``timeout`` seconds, or the feed was terminated first.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                feed = next(reversed(self._calls), None)
                spool = self._spools.get(feed) if feed is not None else None
                if spool is not None and spool.complete:
                    return spool
                if spool is None and feed is not None and not self._calls[feed]:
                    raise ConfigError(
                        "feed.dataset(split='validation'): this train() call has no validation data. Pass it to "
                        "the driver's call: cluster.train(data, num_epochs, validation_data=val_data).")
                if self.terminating.is_set():
                    raise FeedError("feed.dataset(split='validation'): the feed was terminated (feed.terminate()) "
                                    "before this node's validation share arrived")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FeedError(_late_split(spool, timeout))
                self._cond.wait(min(left, 1.0))

    def take(self, timeout: float) -> Chunk | None:
        """The next training chunk, waiting up to ``timeout`` seconds; None if none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._readers += 1
            try:
                while True:
                    chunk = self._intake.take(ended=self.done.is_set())
                    if chunk is not None:
                        self._last_take, self._took_any = time.monotonic(), True
                        self._cond.notify_all()
                        return chunk
                    left = deadline - time.monotonic()
                    if left <= 0 or self.terminating.is_set():
                        return None
                    self._cond.wait(left)
            finally:
                self._readers -= 1

    def train_empty(self) -> bool:
        with self._cond:
            return self._intake.empty()

    def queued(self) -> int:
        """Training chunks waiting to be read (spill chunks not counted)."""
        with self._cond:
            return self._intake.queued()

    def status(self, key, split: str = "train") -> dict:
        """What a stalled feeding task reports about this node (JSON data)."""
        with self._cond:
            spool = self._spools.get(key[0]) if split == "validation" else None
            if spool is not None:  # nothing waits for a reader: "idle" is the time since the last write
                return {"split": split, "received": spool.received, "committed": spool.rows,
                        "connections": self._train_conns, "terminated": self.terminating.is_set(),
                        "idle_secs": round(time.monotonic() - spool.last_write, 1),
                        "up_secs": round(time.monotonic() - self._started, 1)}
            return {
                "epoch": key[1], "received": self._intake.received[key], "taken": self._intake.taken[key],
                "queued": self._intake.queued(), "capacity": self._intake.capacity,
                "waiting_tasks": len(self._putters), "connections": self._train_conns,
                "reading": self._readers > 0, "took_any": self._took_any,
                "idle_secs": round(time.monotonic() - self._last_take, 1),
                "up_secs": round(time.monotonic() - self._started, 1),
                "terminated": self.terminating.is_set(),
            }

    def mark_stalled(self, feed: str, reason: str) -> None:
        """Stops every connection of ``train()`` call ``feed``: they are answered STALLED with ``reason``."""
        with self._cond:
            self._stalled.setdefault(feed, reason)
            self._cond.notify_all()

    # ----- inference -------------------------------------------------------------------------------------
    def _put_infer(self, item) -> bool:
        """Blocks until ``item`` is queued; False if the feed was terminated meanwhile."""
        while not self.terminating.is_set():
            try:
                self.infer_q.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def _serve_infer(self, conn: socket.socket) -> None:
        rows = 0
        with self._results_ready:
            self._results, self._result_rows = [], 0
        while True:
            kind, payload = p.recv_frame(conn)
            if kind == p.END:
                break
            data, n, is_arrow = p.decode(kind, payload)
            rows += n
            if not self._put_infer(Chunk(data, n, is_arrow=is_arrow)):
                p.send_frame(conn, p.STOP)
                return
        self._put_infer(None)  # end of partition
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
        with self._cond:
            self._intake.clear()
            self._cond.notify_all()
        try:
            while True:
                self.infer_q.get_nowait()
        except queue.Empty:
            pass

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
        with self._cond:
            for spool in self._spools.values():
                spool.remove()
            self._spools.clear()
            if self._spool_dir is not None:
                shutil.rmtree(self._spool_dir, ignore_errors=True)


class _ShareRead:
    """One node's read of its fast-path share for one ``train()`` call: its outcome, once ``done``."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.accepted = 0
        self.error: str | None = None


def _work_dir() -> str | None:
    """The node's work directory (where the supervisor has the TF process write its error file), if any."""
    error_file = os.environ.get(ERROR_FILE_ENV)
    parent = os.path.dirname(error_file) if error_file else ""
    return parent if parent and os.path.isdir(parent) else None


def _late_split(spool: Spool | None, timeout: float) -> str:
    got = (f"{spool.rows:,} of its {spool.quota:,} validation rows arrived" if spool is not None
           else "no train() call has fed this node yet")
    return (f"feed.dataset(split='validation'): this node's validation share did not arrive within {timeout:.0f}s "
            f"({got}). train() feeds the validation data before the first training epoch: the driver may not "
            "have called train() yet, or is still counting the rows; pass a larger timeout= to feed.dataset() "
            "if the data takes longer to compute.")


def _key(hello: dict) -> tuple[str, int]:
    """The epoch key of a hello: which ``train()`` call (its feed id) and which epoch."""
    return str(hello.get("feed", "")), int(hello.get("epoch", 0))
