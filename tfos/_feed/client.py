"""What Spark tasks run to feed TF nodes (InputMode.SPARK): module-level functions with explicit arguments.

Training: a task opens one connection per node its partition feeds and sends the partition's frames in the
plan's order (``FeedPlan.frames``: Arrow record batches for DataFrames, pickled row lists for RDDs). A send
blocks while the node's queue is full; after ``stall_timeout`` seconds blocked on a node whose reader took no
rows for as long, the task reports the stall: it tells every node, which stops every task of the same
``train()`` call, and returns the report as its outcome (returned, not raised, so Spark does not retry the
task for another timeout). Validation rows (``split="validation"``) travel the same way, once per ``train()``
call, but the node writes them to its disk instead of its queue, so they never wait for its reader.
Inference: a partition goes whole to one node, and its results come back in input order.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import queue
import select
import socket
import threading
import time
from typing import Iterable, Iterator, Sequence

from ..errors import FeedError
from . import protocol as p
from .parquet import share_to_wire
from .plan import FeedPlan, Frame


# Seconds a blocked send or answer wait lasts before the stall check runs again.
TICK = 1.0


@dataclasses.dataclass(frozen=True)
class FeedTarget:
    """Where and how one Spark job feeds the TF nodes.

    Attributes:
        addresses: the feed address of each training node, in node order.
        secret: the cluster's secret.
        plan: the routing of the epoch (training); None for the other jobs.
        feed_id: this ``train()`` call's id (a stall stops every task of this call, and only those).
        epoch: the (first) epoch this job feeds (0-based).
        epochs: the number of epochs of the call (for messages).
        chunk_rows: rows per frame (``feed_chunk_rows``).
        timeout: seconds to connect to a node and to get an answer that needs no rows read (``feed_timeout``).
        stall_timeout: seconds a task may be blocked on a node whose reader takes no rows before the feed
            counts as stalled (``feed_stall_timeout``).
        split: ``"train"``, or ``"validation"`` for the job that feeds ``train()``'s ``validation_data``.
        validation: whether this ``train()`` call has validation data (the nodes' readers learn it from this).
        seed: the call's shuffle seed (``feed_shuffle``); None keeps the rows in the order they come.
        shares: the Parquet fast path (``tfos._feed.parquet``): ``shares[node][i]`` is that node's pieces of
            epoch ``epoch + i`` (``Piece``), which the node reads itself; None on the Spark path.
        quota: rows each node gets, on the fast path (the Spark path's is ``plan.quota``).
        columns: the columns the nodes read from the files, on the fast path reading a DataFrame's own Parquet
            files; None for the cache (every column).
        count: how many epochs this job feeds from ``epoch`` on: 1 on the Spark path (a job per epoch); on the
            fast path one job feeds them all (each node reads one epoch after the other, with no gap).
        keep: on the fast path, each node keeps its share decoded (in memory, then on its local disk) for the
            later epochs of the call (``feed_local_cache``, ``tfos._feed.local``).
    """

    addresses: tuple[str, ...]
    secret: str = dataclasses.field(repr=False)
    plan: FeedPlan | None = None
    feed_id: str = ""
    epoch: int = 0
    epochs: int = 1
    chunk_rows: int = 1024
    timeout: float = 600.0
    stall_timeout: float = 60.0
    split: str = "train"
    validation: bool = False
    seed: int | None = None
    shares: tuple | None = None
    quota: int = 0
    columns: tuple[str, ...] | None = None
    count: int = 1
    keep: bool = False

    @property
    def hello(self) -> dict:
        plan = self.plan
        quota = plan.quota if plan else self.quota
        return {"kind": "train", "feed": self.feed_id, "epoch": self.epoch, "split": self.split,
                "validation": self.validation, "quota": quota, "even": plan.even if plan else quota,
                "seed": self.seed}

    def node_hello(self, node: int, partition: int) -> dict:
        """The hello of ``node``'s connection: on the fast path it names the node's pieces of each epoch
        (``tfos._feed.parquet.share_to_wire``)."""
        hello = {**self.hello, "partition": partition, "node": node}
        if self.shares is not None:
            hello.update(share_to_wire(self.shares[node]), chunk_rows=self.chunk_rows, keep=self.keep,
                         columns=list(self.columns) if self.columns is not None else None)
        return hello

    @property
    def what(self) -> str:
        """This job's part of the ``train()`` call, for messages."""
        if self.split == "validation":
            return "the validation feed"
        if self.count > 1:
            return f"epochs {self.epoch + 1}-{self.epoch + self.count}/{self.epochs}"
        return f"epoch {self.epoch + 1}/{self.epochs}"


class _Stalled(Exception):
    """This task found the feed stalled, or a node told it another task did; carries the report."""

    def __init__(self, report: str) -> None:
        super().__init__(report)
        self.report = report


class _Refused(FeedError):
    """The node answered with an error (it cannot take or read these rows): retrying the task would not help."""


class _Link:
    """One open train connection to a node.

    Attributes:
        verdict: None while the node takes rows; ``"stopped"`` once it said it takes no more (``terminate``,
            or its main_fun returned).
    """

    def __init__(self, node: int, target: FeedTarget, partition: int = -1) -> None:
        self.node = node
        self.timeout = target.timeout
        self.address = target.addresses[node]
        self.rows = 0
        self.verdict: str | None = None
        self.sock: socket.socket | None = None
        self._answered = False
        try:
            self.sock = p.connect(self.address, target.secret, target.timeout)
        except ConnectionRefusedError:
            # The node's main_fun returned (after feed.terminate(), say): it takes no more rows. Had it
            # failed instead, the driver reports that failure from the control plane.
            self.verdict = "stopped"
            return
        except OSError as exc:
            raise FeedError(f"cannot reach the TF node's feed at {self.address}: {exc}. The node may have failed "
                            "(see the driver's error) or the executors cannot reach each other.") from None
        try:
            p.send_json(self.sock, p.HELLO, target.node_hello(node, partition))
            self._read_answer()
        except (OSError, p.ChannelClosed) as exc:
            self.close()
            raise self._gone(exc) from None
        except BaseException:
            self.close()
            raise
        self.sock.settimeout(TICK)

    def _gone(self, exc: BaseException) -> FeedError:
        return FeedError(f"the TF node at {self.address} went away after taking {self.rows} rows from this task: "
                         f"{exc}. The driver's error names the node's failure, if it failed.")

    def _connected(self) -> socket.socket:
        """The connection (a link without one took no rows: its verdict is already ``stopped``)."""
        assert self.sock is not None
        return self.sock

    def _read_answer(self) -> None:
        """Reads the node's answer (call once the socket is readable, or before it ticks): a whole frame."""
        sock = self._connected()
        sock.settimeout(self.timeout)
        try:
            kind, payload = p.recv_frame(sock)
        finally:
            sock.settimeout(TICK)
        self._answered = kind != p.ACK or self._answered
        if kind == p.STOP:
            self.verdict = "stopped"
        elif kind == p.STALLED:
            self.verdict = "stalled"
            raise _Stalled(payload.decode(errors="replace"))
        elif kind == p.ERROR:
            raise _Refused(f"the TF node at {self.address} refused rows: {payload.decode(errors='replace')}")

    def send(self, kind: bytes, payload, rows: int, blocked) -> None:
        """Sends one frame, unless the node stopped taking rows; ``blocked(link, secs)`` runs while it waits."""
        if self.verdict:
            return
        try:
            if select.select([self._connected()], [], [], 0)[0]:  # the node answered early: it takes no more rows
                self._read_answer()
                return
            header = p.frame_header(kind, len(payload))
            self._write(header, blocked)
            self._write(payload, blocked)
        except (OSError, p.ChannelClosed) as exc:
            raise self._gone(exc) from None
        self.rows += rows

    def _write(self, data, blocked) -> None:
        view = memoryview(data).cast("B")
        since = time.monotonic()
        sock = self._connected()
        while len(view):
            try:
                sent = sock.send(view[:1 << 22])
            except TimeoutError:
                blocked(self, time.monotonic() - since)
                continue
            view = view[sent:]
            since = time.monotonic()

    def finish(self, blocked) -> str:
        """Ends the connection once the node has taken every row sent; returns ``"ok"`` or ``"stopped"``."""
        if self.sock is None:
            return self.verdict or "ok"
        try:
            if not self._answered:
                self._write(p.frame_header(p.END, 0), blocked)
                since = time.monotonic()
                # The node answers once it has queued every row sent: wait (checking for a stall) until it does.
                while not select.select([self.sock], [], [], TICK)[0]:
                    blocked(self, time.monotonic() - since)
                self._read_answer()
        except (OSError, p.ChannelClosed) as exc:
            raise self._gone(exc) from None
        finally:
            self.close()
        return self.verdict or "ok"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


class _Sender(threading.Thread):
    """Writes one link's frames, handed over one at a time, so that a task writes to all its nodes at once.

    The task deals frames in plan order and waits while the node's previous frame is still being written: one
    frame in hand per node, which keeps the routing's order (see ``tfos._feed.plan``) and bounds memory.
    Whatever the link raises (a stall, a node gone) is raised again in the task by :meth:`put` or :meth:`join`.
    """

    def __init__(self, link: _Link, blocked) -> None:
        super().__init__(name=f"tfos-feed-send-{link.node}", daemon=True)
        self.link, self.blocked = link, blocked
        self.error: BaseException | None = None
        self.outcome = "ok"
        self._slot: queue.Queue = queue.Queue(maxsize=1)

    def run(self) -> None:
        try:
            while True:
                item = self._slot.get()
                if item is None:
                    self.outcome = self.link.finish(self.blocked)
                    return
                kind, payload, rows = item
                self.link.send(kind, payload, rows, self.blocked)
        except BaseException as exc:  # noqa: BLE001 - handed to the task's thread
            self.error = exc

    def put(self, item) -> None:
        """Hands over ``(kind, payload, rows)``, or None to end; waits while the previous frame is unwritten."""
        while True:
            self._check()
            try:
                self._slot.put(item, timeout=TICK)
                return
            except queue.Full:
                if not self.is_alive():
                    self._check()
                    raise FeedError(f"the feed connection to {self.link.address} ended unexpectedly")

    def result(self) -> str:
        while self.is_alive():
            self.join(TICK)
        self._check()
        return self.outcome

    def _check(self) -> None:
        if self.error is not None:
            raise self.error


class _Feeder:
    """Sends one partition's frames (see ``FeedPlan.frames``) over one connection per node it feeds."""

    def __init__(self, target: FeedTarget, partition: int) -> None:
        self.target = target
        self.partition = partition
        self.links: dict[int, _Link] = {}
        self._senders: dict[int, _Sender] = {}
        self._next_check: dict[int, float] = {}
        nodes = target.plan.nodes_of(partition) if target.plan else range(len(target.addresses))
        try:
            for node in nodes:
                self.links[node] = _Link(node, target, partition)
        except BaseException:
            self.close()
            raise
        for node, link in self.links.items():
            self._senders[node] = _Sender(link, self._blocked)
            self._senders[node].start()

    def send(self, frame: Frame, payload, kind: bytes) -> None:
        self._senders[frame.node].put((kind, payload, frame.rows))

    def all_stopped(self) -> bool:
        return all(link.verdict == "stopped" for link in self.links.values())

    def finish(self) -> dict:
        senders = list(self._senders.values())
        for sender in senders:
            sender.put(None)
        # Whichever link fails first is raised at once: waiting in node order could wait on a node that
        # waits, in a collective step, for the node whose link failed.
        while any(sender.is_alive() for sender in senders):
            for sender in senders:
                sender._check()
            next(s for s in senders if s.is_alive()).join(TICK / 10)
        return {"status": "ok", "links": [sender.result() for sender in senders]}

    def close(self) -> None:
        for link in self.links.values():
            link.close()

    def _blocked(self, link: _Link, secs: float) -> None:
        """Runs while this task waits on ``link``'s node: after ``stall_timeout`` seconds, checks that the node's
        reader is taking rows at all; if it took none for that long, the feed is stalled."""
        limit = self.target.stall_timeout
        now = time.monotonic()
        if secs < limit or now < self._next_check.get(link.node, 0.0):
            return
        status = node_status(link.address, self.target)
        if status.get("idle_secs", limit) < limit:  # it takes rows, from other tasks: this one waits its turn
            self._next_check[link.node] = now + limit - status["idle_secs"]
            return
        report = stall_report(self.target, link.node, secs, self.partition)
        for address in self.target.addresses:
            _request(address, self.target, {"kind": "stall", "feed": self.target.feed_id, "reason": report})
        raise _Stalled(report)


def _request(address: str, target: FeedTarget, hello: dict) -> dict | None:
    """One small request to a node's feed server (``status``, ``stall``); None if the node does not answer."""
    try:
        sock = p.connect(address, target.secret, min(target.timeout, 10.0))
        try:
            p.send_json(sock, p.HELLO, hello)
            kind, payload = p.recv_frame(sock)
        finally:
            sock.close()
    except (OSError, p.ChannelClosed):
        return None
    return json.loads(payload) if kind == p.ACK else None


def node_status(address: str, target: FeedTarget) -> dict:
    """What a node's feed server says of this epoch (see ``FeedServer.status``); ``{}`` if it does not answer."""
    # A job of several epochs asks for the one the node is reading now ("latest").
    return _request(address, target, {"kind": "status", "feed": target.feed_id, "epoch": target.epoch,
                                      "latest": target.count > 1, "split": target.split}) or {}


def stall_report(target: FeedTarget, node: int, secs: float, partition: int) -> str:
    """What a stalled feeding task knows: the node that stopped taking rows, and every node's counts."""
    quota = target.hello["quota"]
    waiter = (f"the fast-path feeding task waited {secs:.0f}s for it to queue its share of the Parquet cache"
              if target.shares is not None else
              f"the task feeding partition {partition} waited {secs:.0f}s to send it more")
    lines = [f"The Spark feed stalled in {target.what}: node {node} "
             f"({target.addresses[node]}) took no rows for {target.stall_timeout:.0f}s or more while {waiter} "
             f"(feed_stall_timeout={target.stall_timeout:.0f}s)."]
    for num, address in enumerate(target.addresses):
        lines.append(f"  node {num}: {describe_status(node_status(address, target), quota)}")
    lines.append(
        "Likely causes: (1) main_fun stopped reading the feed before the data ended without calling "
        "feed.terminate() (for example model.fit with a steps_per_epoch that reads fewer rows than were fed): "
        "call feed.terminate() once done reading; (2) a node waits inside a collective step for another that "
        "waits for rows, because main_fun reads the nodes' feeds unequally (different batch sizes or steps per "
        "node); (3) main_fun takes longer than feed_stall_timeout to read its first rows or to finish one step "
        "(model building, tracing, loading): raise feed_stall_timeout (TFOS_FEED_STALL_TIMEOUT).")
    return "\n".join(lines)


def describe_status(status: dict, quota: int) -> str:
    """One node's line of a stall report."""
    if not status:
        return "its feed server does not answer (the TF process may be gone: see the driver's error)"
    if status.get("split") == "validation":
        return (f"received {status['received']:,} of its {quota:,} validation rows, written to its disk as they "
                f"arrive (the last {status['idle_secs']:.0f}s ago); the TF process answers")
    reader = "its reader is waiting for rows" if status["reading"] else (
        f"its reader took no row for {status['idle_secs']:.0f}s" if status["took_any"] else
        f"its reader has not asked for any row since the node started {status['up_secs']:.0f}s ago")
    epoch = f"in epoch {status['epoch'] + 1}" if "epoch" in status else "this epoch"
    return (f"received {status['received']:,} of its {quota:,} rows {epoch}, its reader took "
            f"{status['taken']:,}; {status['queued']} of {status['capacity']} chunks queued, "
            f"{status['waiting_tasks']} task(s) waiting to add more; {reader}; the TF process answers")


def _plan(target: FeedTarget) -> FeedPlan:
    """The routing of a Spark-path training job (its targets always carry one)."""
    assert target.plan is not None
    return target.plan


def _partition_id() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    assert context is not None  # called in a Spark task
    return context.partitionId()


def _feed_partition(target: FeedTarget, partition: int, send_all) -> dict:
    """Runs ``send_all(feeder)`` for one partition; returns the task's outcome (JSON data)."""
    feeder = None
    try:
        feeder = _Feeder(target, partition)
        send_all(feeder)
        return feeder.finish()
    except _Stalled as stall:
        return {"status": "stalled", "report": stall.report}
    finally:
        if feeder is not None:
            feeder.close()


def _short_partition(target: FeedTarget, partition: int, got: int) -> FeedError:
    return FeedError(
        f"partition {partition} had {got} rows in {target.what}, fewer than the {_plan(target).fed_rows(partition)} "
        "it had when train() counted them: the data changed after it was counted. "
        "Feed deterministic data (train() persists it; a non-deterministic source recomputed after an evicted "
        "block changes), or cache it yourself with df.cache() / rdd.cache() before train().")


# _READ_TO_THE_END: a feeding task reads its input to the end (the iterator's StopIteration), past the last
# frame it sends and past rows the plan does not feed (at most nodes - 1 per epoch): a PySpark task that leaves
# input unread loses its Python worker, and the next task pays for a new one (a fork, tfos and pyarrow imported
# again: 0.3-0.8 CPU seconds here, every partition of every epoch; the whole train() call of
# bench/feed_throughput.py took 2.5x as long). Only a feed whose nodes all stopped taking rows returns early.


def train_rows(target: FeedTarget, iterator: Iterable) -> Iterator[str]:
    """``rdd.mapPartitions`` body: sends this partition's rows, pickled in frames, per the plan."""
    partition = _partition_id()

    def send_all(feeder: _Feeder) -> None:
        frames = _plan(target).frames(partition, target.chunk_rows)
        frame = next(frames, None)
        chunk: list = []
        got = 0
        for row in iterator:
            if frame is None:
                continue  # past the plan's rows: read on to the end (see _READ_TO_THE_END)
            chunk.append(row)
            got += 1
            if got == frame.stop:
                feeder.send(frame, pickle.dumps(chunk, protocol=5), p.SPILL_ROWS if frame.spill else p.ROWS)
                chunk = []
                if feeder.all_stopped():
                    return
                frame = next(frames, None)
        if frame is not None:
            raise _short_partition(target, partition, got)

    yield json.dumps(_feed_partition(target, partition, send_all))


def train_arrow(target: FeedTarget, batches: Iterable) -> Iterator:
    """``DataFrame.mapInArrow`` body: sends record-batch slices per the plan, no Python loop per row."""
    import pyarrow as pa

    partition = _partition_id()

    def send_all(feeder: _Feeder) -> None:
        frames = _plan(target).frames(partition, target.chunk_rows)
        frame = next(frames, None)
        parts: list = []
        offset = 0  # the partition's row index of the batch's first row
        for batch in batches:
            if frame is None:
                continue  # past the plan's rows: read on to the end (see _READ_TO_THE_END)
            pos = 0
            while frame is not None and pos < batch.num_rows:
                take = min(frame.stop - offset - pos, batch.num_rows - pos)
                parts.append(batch.slice(pos, take))
                pos += take
                if offset + pos == frame.stop:
                    feeder.send(frame, p.arrow_payload(*parts), p.SPILL_ARROW if frame.spill else p.ARROW)
                    parts = []
                    if feeder.all_stopped():
                        return
                    frame = next(frames, None)
            offset += batch.num_rows
        if frame is not None:
            raise _short_partition(target, partition, offset)

    outcome = _feed_partition(target, partition, send_all)
    yield pa.RecordBatch.from_pydict({"outcome": [json.dumps(outcome)]}, schema=pa.schema([("outcome", pa.string())]))


def train_parquet(target: FeedTarget, batches: Iterable) -> Iterator:
    """``mapInArrow`` body of the fast path's one feeding task (all epochs): tells every node its pieces (each
    node reads them itself) and waits until all are queued, with the same stall check as the Spark path."""
    import pyarrow as pa

    for _ in batches:
        pass
    try:
        outcome = _feed_partition(target, _partition_id(), lambda feeder: None)
    except _Refused as exc:  # a node cannot read its share: returned, so Spark does not retry the same read
        outcome = {"status": "failed", "report": str(exc), "links": []}
    yield pa.RecordBatch.from_pydict({"outcome": [json.dumps(outcome)]}, schema=pa.schema([("outcome", pa.string())]))


def count_arrow(batches: Iterable) -> Iterator:
    """``mapInArrow`` body that counts a partition's rows."""
    import pyarrow as pa

    total = sum(batch.num_rows for batch in batches)
    yield pa.RecordBatch.from_pydict({"partition": [_partition_id()], "rows": [total]},
                                     schema=pa.schema([("partition", pa.int32()), ("rows", pa.int64())]))


def count_rows(index: int, iterator: Iterable) -> Iterator[tuple[int, int]]:
    yield index, sum(1 for _ in iterator)


def _infer(address: str, secret: str, timeout: float,
           chunks: Iterable[tuple[bytes, bytes | memoryview, int]]) -> list:
    sock = None
    try:
        for kind, payload, rows in chunks:
            if sock is None:
                sock = p.connect(address, secret, timeout)
                p.send_json(sock, p.HELLO, {"kind": "infer"})
            p.send_frame(sock, kind, payload)
        if sock is None:
            return []  # an empty partition needs no node
        p.send_frame(sock, p.END)
        kind, answer = p.recv_frame(sock)
    except (OSError, p.ChannelClosed) as exc:
        raise FeedError(f"inference on the TF node at {address} failed: {exc}. The node may have failed "
                        "(see the driver's error).") from None
    finally:
        if sock is not None:
            sock.close()
    if kind != p.RESULTS:
        reason = answer.decode(errors="replace") if kind == p.ERROR else "the node stopped taking data"
        raise FeedError(f"inference on the TF node at {address} returned no results: {reason}")
    return pickle.loads(answer)  # chunks: lists of results, or numpy arrays


def _rows(chunks: list) -> list:
    return [row for chunk in chunks for row in (list(chunk) if hasattr(chunk, "shape") else chunk)]


def infer_rows(addresses: Sequence[str], secret: str, timeout: float, chunk_rows: int, iterator: Iterable
               ) -> Iterator:
    """``rdd.mapPartitions`` body: scores this partition on node ``partition % nodes``; yields its results."""
    address = addresses[_partition_id() % len(addresses)]

    def chunks():
        chunk = []
        for row in iterator:
            chunk.append(row)
            if len(chunk) >= chunk_rows:
                yield p.ROWS, pickle.dumps(chunk, protocol=5), len(chunk)
                chunk = []
        if chunk:
            yield p.ROWS, pickle.dumps(chunk, protocol=5), len(chunk)

    yield from _rows(_infer(address, secret, timeout, chunks()))


def infer_arrow(addresses: Sequence[str], secret: str, timeout: float, schema_json: str, batches: Iterable
                ) -> Iterator:
    """``mapInArrow`` body: scores this partition on one node; results become rows of the output schema."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType

    address = addresses[_partition_id() % len(addresses)]
    chunks = _infer(address, secret, timeout,
                    ((p.ARROW, p.arrow_payload(b), b.num_rows) for b in batches if b.num_rows))
    if not chunks:
        return
    schema = to_arrow_schema(StructType.fromJson(json.loads(schema_json)))
    names = schema.names
    if len(names) == 1 and all(hasattr(c, "shape") for c in chunks):
        # numpy results for a one-column schema: straight to Arrow, no Python loop per row
        import numpy as np

        yield pa.RecordBatch.from_arrays([_array_column(np.concatenate(chunks), schema.field(0).type)], names=names)
        return
    rows = [{k: _plain(v) for k, v in as_result_row(r, names).items()} for r in _rows(chunks)]
    try:
        yield pa.RecordBatch.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise FeedError(f"inference results do not fit the schema {schema}: {exc}") from None


def _array_column(values, arrow_type):
    """A numpy array (one row per result) as an Arrow column of ``arrow_type``."""
    import pyarrow as pa

    if values.ndim == 1:
        return pa.array(values).cast(arrow_type)
    flat = values.reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1]).cast(arrow_type)


def as_result_row(result, names: Sequence[str]) -> dict:
    """One inference result as a row: a dict, or a tuple of the schema's width; else the value of one column."""
    if isinstance(result, dict):
        return result
    if isinstance(result, tuple) and len(result) == len(names):
        return dict(zip(names, result))
    if len(names) == 1:
        return {names[0]: result}
    raise FeedError(f"inference result {result!r:.200} does not match the result columns {list(names)}: return "
                    "a tuple or a dict per row")


def _plain(value):
    """numpy scalars/arrays to Python values Arrow accepts for any declared type."""
    tolist = getattr(value, "tolist", None)
    return tolist() if tolist is not None else value


def end_feed(addresses: Sequence[str], secret: str, timeout: float = 10.0) -> None:
    """Tells every node that no more data will come (``feed.should_stop()`` turns True once all is read)."""
    for address in addresses:
        try:
            sock = p.connect(address, secret, timeout)
            try:
                p.send_json(sock, p.HELLO, {"kind": "end_feed"})
                p.recv_frame(sock)
            finally:
                sock.close()
        except (OSError, p.ChannelClosed):
            pass  # the node is gone already; the control plane reports why
