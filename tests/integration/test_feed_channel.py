"""The feed channel over real loopback TCP: the secret, back-pressure, terminate (no Spark)."""

import pickle
import socket
import threading
import time

import pytest

from tfos._feed import protocol as p
from tfos._feed.client import FeedTarget, _Link
from tfos._feed.datafeed import DataFeed
from tfos._feed.server import FeedServer

SECRET = "feed-secret"


@pytest.fixture
def server():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = FeedServer(sock, SECRET, max_chunks=4)
    srv.start()
    yield srv, f"127.0.0.1:{sock.getsockname()[1]}"
    srv.close()


def target(address):
    return FeedTarget((address,), SECRET, quota=10_000, timeout=30)


def test_back_pressure_bounds_the_queue(server):
    srv, address = server
    link = _Link(address, target(address))
    sent = []

    def feed():
        for i in range(50):  # 1 MB rows: far more than the socket buffers hold
            link.send(p.ROWS, pickle.dumps([bytes(1_000_000)]), 1)
            sent.append(i)
        link.finish()

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    time.sleep(1.5)
    assert srv.train_q.qsize() == 4  # bounded: the reader stopped, TCP pushes back on the sender
    assert t.is_alive() and len(sent) < 50
    feed_obj = DataFeed(srv)
    rows = []
    while len(rows) < 50:
        rows.extend(feed_obj.next_batch(10))
    t.join(10)
    assert not t.is_alive() and len(rows) == 50


def test_terminate_tells_the_sender_to_stop(server):
    srv, address = server
    link = _Link(address, target(address))
    link.send(p.ROWS, pickle.dumps([1, 2, 3]), 3)
    DataFeed(srv).terminate()
    time.sleep(0.2)
    for _ in range(5):
        link.send(p.ROWS, pickle.dumps([4]), 1)
    assert link.finish() == "stopped"
    assert _Link(address, target(address)).stopped  # later tasks are told at once


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
    assert srv.rejected >= 2 and srv.train_q.qsize() == 0
