"""The feed channel over real loopback TCP: the secret, back-pressure, terminate, spill order, stalls (no Spark)."""

import os
import pickle
import socket
import threading
import time

import pytest

from tfos._feed import protocol as p
from tfos._feed.client import FeedTarget, _Feeder, _Link, _Stalled, node_status
from tfos._feed.datafeed import DataFeed
from tfos._feed.plan import make_plan
from tfos._feed.server import FeedServer
from tfos.errors import FeedError

SECRET = "feed-secret"


def _never(link, secs):
    pass


def start_server(max_chunks=4):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = FeedServer(sock, SECRET, max_chunks=max_chunks)
    srv.start()
    return srv, f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def server():
    srv, address = start_server()
    yield srv, address
    srv.close()


def target(*addresses, counts=(10_000,), stall_timeout=60.0, feed_id="f"):
    return FeedTarget(tuple(addresses), SECRET, make_plan(list(counts), len(addresses)), feed_id, timeout=30,
                      stall_timeout=stall_timeout)


def test_back_pressure_bounds_the_queue(server):
    srv, address = server
    link = _Link(0, target(address))
    sent = []

    def feed():
        for i in range(50):  # 1 MB rows: far more than the socket buffers hold
            link.send(p.ROWS, pickle.dumps([bytes(1_000_000)]), 1, _never)
            sent.append(i)
        link.finish(_never)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    time.sleep(1.5)
    assert srv.queued() == 4  # bounded: the reader stopped, TCP pushes back on the sender
    assert t.is_alive() and len(sent) < 50
    feed_obj = DataFeed(srv)
    rows = []
    while len(rows) < 50:
        rows.extend(feed_obj.next_batch(10))
    t.join(10)
    assert not t.is_alive() and len(rows) == 50


def test_terminate_tells_the_sender_to_stop(server):
    srv, address = server
    link = _Link(0, target(address))
    link.send(p.ROWS, pickle.dumps([1, 2, 3]), 3, _never)
    DataFeed(srv).terminate()
    time.sleep(0.2)
    for _ in range(5):
        link.send(p.ROWS, pickle.dumps([4]), 1, _never)
    assert link.finish(_never) == "stopped"
    assert _Link(0, target(address)).verdict == "stopped"  # later tasks are told at once


def test_spill_rows_come_after_the_epochs_even_rows(server):
    srv, address = server
    link = _Link(0, target(address, counts=(3,)))  # 1 node: 3 even rows; the hello says so
    link.send(p.SPILL_ROWS, pickle.dumps(["spill"]), 1, _never)
    for i in range(3):
        link.send(p.ROWS, pickle.dumps([i]), 1, _never)
    assert link.finish(_never) == "ok"
    feed = DataFeed(srv)
    assert [feed.next_batch(1)[0] for _ in range(4)] == [0, 1, 2, "spill"]


def test_wrong_secret_is_refused_and_feeds_nothing(server):
    srv, address = server
    with pytest.raises((p.ChannelClosed, ConnectionError, OSError)):
        bad = p.connect(address, "wrong", 5)
        p.send_json(bad, p.HELLO, {"kind": "train", "epoch": 0, "quota": 1})
        p.send_frame(bad, p.ROWS, pickle.dumps([666]))
        p.recv_frame(bad)
    raw = socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])))
    raw.sendall(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 64)
    time.sleep(0.3)
    raw.close()
    assert srv.rejected >= 2 and srv.queued() == 0


def test_a_node_that_takes_no_rows_stalls_the_feed_and_every_task_hears_of_it():
    # Two nodes; node 1's reader is waiting for rows, node 0's takes none: a lockstep deadlock's shape.
    (srv0, a0), (srv1, a1) = start_server(max_chunks=1), start_server(max_chunks=1)
    try:
        done = threading.Event()

        def read_node1():
            while not done.is_set():
                srv1.take(0.2)

        threading.Thread(target=read_node1, daemon=True).start()
        tgt = target(a0, a1, counts=(40_000, 40_000), stall_timeout=2.0)
        feeder = _Feeder(tgt, 0)
        frames = list(tgt.plan.frames(0, 1000))
        start = time.monotonic()
        with pytest.raises(_Stalled) as stalled:
            for frame in frames:  # 2 MB frames, 40 per node: node 0's queue and socket buffers fill
                feeder.send(frame, pickle.dumps([bytes(2000) for _ in range(frame.rows)]), p.ROWS)
        waited = time.monotonic() - start
        assert 2.0 <= waited < 10
        report = stalled.value.report
        assert "node 0 (127.0.0.1:" in report and "took no rows for 2s" in report
        assert "node 1: received" in report and "its reader is waiting for rows" in report
        assert "node 0: received" in report and "its reader has not asked for any row" in report
        assert "feed.terminate()" in report and "TFOS_FEED_STALL_TIMEOUT" in report
        feeder.close()
        # Every other task of this train() call is told at once, with the report; another call is not.
        with pytest.raises(_Stalled, match="The Spark feed stalled"):
            _Link(1, tgt)
        assert _Link(1, target(a0, a1, counts=(4000, 4000), feed_id="other")).verdict is None
        assert node_status(a0, tgt)["queued"] == 1
    finally:
        done.set()
        srv0.close()
        srv1.close()


def test_a_task_waiting_its_turn_on_a_node_that_takes_rows_is_not_a_stall(server):
    srv, address = server
    tgt = target(address, counts=(100,), stall_timeout=1.0)
    link = _Link(0, tgt)
    link.send(p.ROWS, pickle.dumps([1]), 1, _never)
    assert srv.take(5).data == [1]  # the node's reader took a row just now
    feeder = _Feeder(tgt, 0)
    try:
        feeder._blocked(feeder.links[0], 30.0)  # blocked for long, but the node takes rows (from other tasks)
        assert feeder._next_check[0] > time.monotonic()  # it looks again once the node could have been idle long
        time.sleep(1.1)
        feeder._next_check.clear()
        with pytest.raises(_Stalled, match="took no rows"):
            feeder._blocked(feeder.links[0], 30.0)
    finally:
        feeder.close()
        link.close()


def feed_partition(tgt, partition, rows, chunk_rows=100):
    """What a feeding task does with one partition of ``rows`` (``client.train_rows`` without Spark)."""
    feeder = _Feeder(tgt, partition)
    try:
        for frame in tgt.plan.frames(partition, chunk_rows):
            kind = p.SPILL_ROWS if frame.spill else p.ROWS
            feeder.send(frame, pickle.dumps(rows[frame.start:frame.stop]), kind)
        return feeder.finish()
    finally:
        feeder.close()


def test_the_validation_split_goes_to_disk_without_a_reader_and_never_into_training(tmp_path):
    # Queues of one chunk, no reader at all, 30x more validation rows than a queue holds, fed one partition
    # after the other (one task slot): every task still ends, since validation rows never wait for a reader.
    servers = [FeedServer(socket.socket(), SECRET, max_chunks=1, spool_parent=str(tmp_path)) for _ in range(2)]
    for srv in servers:
        srv._sock.bind(("127.0.0.1", 0))
        srv.start()
    addresses = tuple(f"127.0.0.1:{srv._sock.getsockname()[1]}" for srv in servers)
    try:
        sizes = [3001, 2500, 7]
        partitions = [list(range(100_000 + 10_000 * i, 100_000 + 10_000 * i + n)) for i, n in enumerate(sizes)]
        plan = make_plan([len(rows) for rows in partitions], 2)
        val = FeedTarget(addresses, SECRET, plan, "call", timeout=30, stall_timeout=5, split="validation",
                         validation=True)
        start = time.monotonic()
        for i, rows in enumerate(partitions):
            assert feed_partition(val, i, rows)["links"] == ["ok", "ok"]
        assert time.monotonic() - start < 20
        shares = [[row for chunk in srv.validation(5).chunks() for row in chunk.data] for srv in servers]
        assert [len(s) for s in shares] == [plan.quota] * 2 == [2754] * 2
        assert not set(shares[0]) & set(shares[1])  # disjoint shares of the fed rows
        assert [[row for chunk in srv.validation(5).chunks() for row in chunk.data] for srv in servers] == shares
        assert all(srv.queued() == 0 and srv.train_empty() for srv in servers)  # nothing in the training queue
        # Then the epoch: next_batch (TensorFlowOnSpark's loop) reads training rows only.
        train = FeedTarget(addresses, SECRET, make_plan([40], 2), "call", timeout=30, validation=True)
        sender = threading.Thread(target=feed_partition, args=(train, 0, list(range(40)), 4), daemon=True)
        sender.start()
        got = [DataFeed(srv).next_batch(20) for srv in servers]
        sender.join(10)
        assert sorted(got[0] + got[1]) == list(range(40))
        assert node_status(addresses[0], val)["split"] == "validation"
    finally:
        for srv in servers:
            srv.close()
    assert not list(tmp_path.iterdir())


def _parquet_file(path, n, row_group_rows=100):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": pa.array(range(n), pa.int64())}), path, row_group_size=row_group_rows)
    return str(path)


def _share_target(addresses, groups, epoch=0, seed=None, count=1, stall_timeout=60, keep=False):
    from tfos._feed import parquet

    dealt = parquet.epoch_shares(groups, len(addresses), epoch, count, seed, keep)
    shares = tuple(tuple(map(tuple, node)) for node in dealt)
    return FeedTarget(tuple(addresses), SECRET, None, "fp", epoch, epochs=epoch + count, count=count, timeout=30,
                      stall_timeout=stall_timeout, chunk_rows=64, seed=seed, keep=keep,
                      quota=sum(g.rows for g in groups) // len(addresses), shares=shares)


def _read_epochs(feed, epochs):
    """Each epoch's ids as the node's dataset reads them (a generator per epoch, like ``feed.dataset()``)."""
    out = []
    for _ in range(epochs):
        ids = []
        for chunk in feed._one_epoch():
            ids += chunk.data.column("id").to_pylist()
        out.append(ids)
    return out


def test_fast_path_nodes_read_their_shares_from_parquet_through_the_bounded_queue(tmp_path):
    from tfos._feed.client import _feed_partition
    from tfos._feed.parquet import RowGroup

    path = _parquet_file(tmp_path / "a.parquet", 1001)
    groups = [RowGroup(path, i, 100 if i < 10 else 1) for i in range(11)]
    servers = [start_server(max_chunks=2) for _ in range(2)]
    try:
        done = {}
        thread = threading.Thread(target=lambda: done.update(_feed_partition(
            _share_target([a for _, a in servers], groups, seed=5), 0, lambda feeder: None)), daemon=True)
        thread.start()
        time.sleep(1.0)
        assert all(srv.queued() == 2 for srv, _ in servers) and thread.is_alive()  # bounded: the readers wait
        got = []
        for srv, _ in servers:
            feed = DataFeed(srv)
            ids = []
            while len(ids) < 500:
                ids += [row[0] if isinstance(row, tuple) else row["id"] for row in feed.next_batch(50)]
            got.append(ids)
        thread.join(30)
        assert done == {"status": "ok", "links": ["ok", "ok"]}
        assert sorted(got[0] + got[1]) == sorted(set(got[0] + got[1])) and len(got[0]) == len(got[1]) == 500
        assert got[0] != sorted(got[0])  # shuffled within each block of a row group (seed 5)
    finally:
        for srv, _ in servers:
            srv.close()


def test_fast_path_node_that_cannot_read_the_cache_fails_the_task_at_once_naming_the_file(tmp_path):
    from tfos._feed.client import _feed_partition
    from tfos._feed.parquet import RowGroup

    good = _parquet_file(tmp_path / "good.parquet", 400)
    groups = [RowGroup(good, 0, 100), RowGroup(good, 1, 100), RowGroup(str(tmp_path / "gone.parquet"), 0, 200)]
    servers = [start_server(max_chunks=2) for _ in range(2)]  # node 0 fills its queue and waits; node 1 fails
    try:
        start = time.monotonic()
        with pytest.raises(FeedError, match=r"refused rows: .*cannot read the feed cache file .*gone.parquet"):
            _feed_partition(_share_target([a for _, a in servers], groups), 0, lambda feeder: None)
        assert time.monotonic() - start < 10
    finally:
        for srv, _ in servers:
            srv.close()


@pytest.mark.parametrize("keep", [False, True])
def test_one_fast_path_task_feeds_every_epoch_back_to_back(tmp_path, keep, caplog):
    """A job of 3 epochs: each node reads its share of each epoch in turn through its bounded queue; every epoch
    gives each node its quota and all rows are fed each epoch. With the local copy (``keep``) each node has the
    same rows every epoch, decoded once, in a new order; without it the row groups are dealt anew."""
    import logging
    import tempfile

    from tfos._feed.client import _feed_partition
    from tfos._feed.parquet import RowGroup

    caplog.set_level(logging.INFO, logger="tfos._feed.server")
    path = _parquet_file(tmp_path / "a.parquet", 1000)
    groups = [RowGroup(path, i, 100) for i in range(10)]
    servers = [start_server(max_chunks=2) for _ in range(2)]
    before = {d for d in os.listdir(tempfile.gettempdir()) if d.startswith("tfos-feed-local-")}
    try:
        done = {}
        target = _share_target([a for _, a in servers], groups, seed=7, count=3, keep=keep)
        thread = threading.Thread(target=lambda: done.update(_feed_partition(target, 0, lambda feeder: None)),
                                  daemon=True)
        thread.start()
        got = [_read_epochs(DataFeed(srv), 3) for srv, _ in servers]
        thread.join(30)
        assert done == {"status": "ok", "links": ["ok", "ok"]}
        for epoch in range(3):
            assert len(got[0][epoch]) == len(got[1][epoch]) == 500
            assert sorted(got[0][epoch] + got[1][epoch]) == list(range(1000))
        assert got[0][0] != got[0][1]
        if keep:
            assert all(sorted(e) == sorted(node[0]) for node in got for e in node)
            kept = [r.getMessage() for r in caplog.records if "local copy" in r.getMessage()]
            assert sorted(kept) == ["the node decoded 5 piece(s) of its Parquet share once and read them back 10 "
                                    "time(s) from its local copy"] * 2
        else:
            assert set(got[0][0]) != set(got[0][2])
        after = {d for d in os.listdir(tempfile.gettempdir()) if d.startswith("tfos-feed-local-")}
        assert after <= before  # the copies are gone once the read ended
    finally:
        for srv, _ in servers:
            srv.close()


def test_a_retried_fast_path_task_queues_no_row_twice(tmp_path):
    """Spark may run the feeding task again (its executor was lost): the second connection for the same call
    waits for the node's read and answers with its count; nothing is read twice."""
    from tfos._feed.client import _Feeder
    from tfos._feed.parquet import RowGroup

    path = _parquet_file(tmp_path / "a.parquet", 600)
    groups = [RowGroup(path, i, 100) for i in range(6)]
    srv, address = start_server(max_chunks=2)
    try:
        target = _share_target([address], groups, count=2)
        first = _Feeder(target, 0)  # the first attempt names the pieces, then dies before its END
        time.sleep(0.5)
        first.close()
        outcome = {}
        retry = threading.Thread(target=lambda: outcome.update(_Feeder(target, 0).finish()), daemon=True)
        retry.start()
        got = _read_epochs(DataFeed(srv), 2)
        retry.join(30)
        assert outcome == {"status": "ok", "links": ["ok"]}
        assert [sorted(ids) for ids in got] == [list(range(600))] * 2
        srv.done.set()
        assert srv.train_empty()
    finally:
        srv.close()


def test_a_stall_in_a_later_epoch_names_the_epoch(tmp_path):
    """A multi-epoch fast-path task whose node stops reading in epoch 2: the report says epochs 1-2/2 and the
    node's line says which epoch it was in."""
    from tfos._feed.client import _feed_partition
    from tfos._feed.parquet import RowGroup

    path = _parquet_file(tmp_path / "a.parquet", 400)
    groups = [RowGroup(path, i, 100) for i in range(4)]
    srv, address = start_server(max_chunks=1)
    try:
        feed = DataFeed(srv)
        outcome = {}
        thread = threading.Thread(target=lambda: outcome.update(_feed_partition(
            _share_target([address], groups, count=2, stall_timeout=1), 0, lambda feeder: None)), daemon=True)
        thread.start()
        assert len(_read_epochs(feed, 1)[0]) == 400  # epoch 1 read whole; epoch 2 is never read
        thread.join(30)
        assert outcome["status"] == "stalled"
        assert "stalled in epochs 1-2/2" in outcome["report"]
        assert "rows in epoch 2, its reader took" in outcome["report"]
    finally:
        srv.close()


def test_a_retried_spark_path_task_queues_no_row_twice(server):
    """Spark runs a feeding task again after its executor was lost mid-partition (or speculatively beside it): the
    second attempt sends the same frames in the same order, and the node queues each frame once."""
    srv, address = server
    tgt = target(address, counts=(50,))
    frames = [[i * 10 + j for j in range(10)] for i in range(5)]
    first = _Link(0, tgt, partition=0)
    for rows in frames[:3]:  # the first attempt dies after three frames
        first.send(p.ROWS, pickle.dumps(rows), len(rows), _never)
    first.close()
    feed = DataFeed(srv)
    got = feed.next_batch(30)
    again = _Link(0, tgt, partition=0)
    for rows in frames:
        again.send(p.ROWS, pickle.dumps(rows), len(rows), _never)
    assert again.finish(_never) == "ok"
    got += feed.next_batch(20)
    assert got == list(range(50)) and srv.queued() == 0
    other = _Link(0, target(address, counts=(50,), feed_id="next-call"), partition=0)  # a later call: all new
    other.send(p.ROWS, pickle.dumps([7]), 1, _never)
    assert other.finish(_never) == "ok" and feed.next_batch(1) == [7]
