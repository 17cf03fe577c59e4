"""What Spark tasks run to feed TF nodes (InputMode.SPARK): module-level functions with explicit arguments.

Training: partition ``p``'s rows go to the nodes its plan segments name, in chunks (Arrow record batches for
DataFrames, pickled row lists for RDDs). Inference: a partition goes whole to one node, and its results come
back in input order.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import select
from typing import Iterable, Iterator, Sequence

from ..errors import TFOSError
from . import protocol as p
from .plan import Segment


class FeedError(TFOSError):
    """A feeding task could not deliver its rows."""


@dataclasses.dataclass(frozen=True)
class FeedTarget:
    """Where and how one Spark job feeds the TF nodes."""

    addresses: tuple[str, ...]  # feed address of each training node, in node order
    secret: str = dataclasses.field(repr=False)
    segments: tuple[tuple[Segment, ...], ...] = ()
    quota: int = 0
    epoch: int = 0
    chunk_rows: int = 1024
    timeout: float = 600.0


class _Link:
    """One open train connection to a node."""

    def __init__(self, address: str, target: FeedTarget) -> None:
        self.address = address
        self.rows = 0
        self.sock = None
        try:
            self.sock = p.connect(address, target.secret, target.timeout)
        except ConnectionRefusedError:
            # The node's main_fun returned (after feed.terminate(), say): it takes no more rows. Had it
            # failed instead, the driver reports that failure from the control plane.
            self.stopped = True
            return
        except OSError as exc:
            raise FeedError(f"cannot reach the TF node's feed at {address}: {exc}. The node may have failed "
                            "(see the driver's error) or the executors cannot reach each other.") from None
        p.send_json(self.sock, p.HELLO, {"kind": "train", "epoch": target.epoch, "quota": target.quota})
        kind, _ = p.recv_frame(self.sock)
        self.stopped = kind == p.STOP

    def send(self, kind: bytes, payload, rows: int) -> None:
        if self.stopped:
            return
        if select.select([self.sock], [], [], 0)[0]:  # the node answered early: it stopped taking data
            self.stopped = True
            return
        try:
            p.send_frame(self.sock, kind, payload)
        except OSError as exc:
            raise FeedError(f"feeding the TF node at {self.address} failed after {self.rows} rows: {exc}") from None
        self.rows += rows

    def finish(self) -> str:
        if self.sock is None:
            return "stopped"
        try:
            p.send_frame(self.sock, p.END)
            kind, payload = p.recv_frame(self.sock)
        except (OSError, p.ChannelClosed) as exc:
            raise FeedError(f"the TF node at {self.address} went away while taking rows: {exc}") from None
        finally:
            self.sock.close()
        if kind == p.ERROR:
            raise FeedError(f"the TF node at {self.address} refused rows: {payload.decode(errors='replace')}")
        return "stopped" if kind == p.STOP or self.stopped else "ok"


def _partition_id() -> int:
    from pyspark import TaskContext

    return TaskContext.get().partitionId()


class _Router:
    """Routes a partition's rows to the nodes of its segments."""

    def __init__(self, target: FeedTarget, partition: int) -> None:
        self.target = target
        self.segments = target.segments[partition] if partition < len(target.segments) else ()
        self.links: dict[int, _Link] = {}

    def link(self, node: int) -> _Link:
        if node not in self.links:
            self.links[node] = _Link(self.target.addresses[node], self.target)
        return self.links[node]

    def all_stopped(self) -> bool:
        return bool(self.links) and all(link.stopped for link in self.links.values()) and len(self.links) == len(
            {s.node for s in self.segments})

    def finish(self) -> list[str]:
        return [link.finish() for link in self.links.values()]


def train_rows(target: FeedTarget, iterator: Iterable) -> Iterator[str]:
    """``rdd.mapPartitions`` body: sends this partition's rows, pickled in chunks, per the plan."""
    router = _Router(target, _partition_id())
    if router.segments:
        last = router.segments[-1].stop
        seg_iter = iter(router.segments)
        seg = next(seg_iter)
        chunk: list = []
        for index, row in enumerate(iterator):
            if index >= last:
                break
            if index >= seg.stop:
                _flush_rows(router, seg.node, chunk)
                chunk = []
                seg = next(seg_iter)
            if index >= seg.start:
                chunk.append(row)
                if len(chunk) >= target.chunk_rows:
                    _flush_rows(router, seg.node, chunk)
                    chunk = []
                    if router.all_stopped():
                        break
        _flush_rows(router, seg.node, chunk)
    yield json.dumps({"outcomes": router.finish()})


def _flush_rows(router: _Router, node: int, chunk: list) -> None:
    if chunk:
        router.link(node).send(p.ROWS, pickle.dumps(chunk, protocol=5), len(chunk))


def train_arrow(target: FeedTarget, batches: Iterable) -> Iterator:
    """``DataFrame.mapInArrow`` body: sends record-batch slices per the plan, no Python loop per row."""
    import pyarrow as pa

    router = _Router(target, _partition_id())
    offset = 0
    for batch in batches:
        if not router.segments or offset >= router.segments[-1].stop or router.all_stopped():
            break
        for seg in router.segments:
            lo, hi = max(seg.start, offset), min(seg.stop, offset + batch.num_rows)
            if lo < hi:
                part = batch.slice(lo - offset, hi - lo)
                router.link(seg.node).send(p.ARROW, p.arrow_payload(part), part.num_rows)
        offset += batch.num_rows
    outcomes = router.finish()
    yield pa.RecordBatch.from_pydict({"stopped": [outcomes.count("stopped")], "sent": [len(outcomes)]})


def count_arrow(batches: Iterable) -> Iterator:
    """``mapInArrow`` body that counts a partition's rows."""
    import pyarrow as pa

    total = sum(batch.num_rows for batch in batches)
    yield pa.RecordBatch.from_pydict({"partition": [_partition_id()], "rows": [total]},
                                     schema=pa.schema([("partition", pa.int32()), ("rows", pa.int64())]))


def count_rows(index: int, iterator: Iterable) -> Iterator[tuple[int, int]]:
    yield index, sum(1 for _ in iterator)


def _infer(address: str, secret: str, timeout: float, chunks: Iterable[tuple[bytes, object, int]]) -> list:
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
        kind, payload = p.recv_frame(sock)
    except (OSError, p.ChannelClosed) as exc:
        raise FeedError(f"inference on the TF node at {address} failed: {exc}. The node may have failed "
                        "(see the driver's error).") from None
    finally:
        if sock is not None:
            sock.close()
    if kind != p.RESULTS:
        reason = payload.decode(errors="replace") if kind == p.ERROR else "the node stopped taking data"
        raise FeedError(f"inference on the TF node at {address} returned no results: {reason}")
    return pickle.loads(payload)  # chunks: lists of results, or numpy arrays


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
