"""The feed channel over real loopback TCP: the secret, back-pressure, terminate, spill order, stalls (no Spark)."""

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
