"""Strangers on the control plane and the feed channels during a real training run, and where the secret goes.

One InputMode.SPARK run on a local-cluster: while the nodes hold their first rows, a raw gRPC client (no
secret, a wrong secret) and raw TCP clients on every feed port (garbage, a wrong HMAC answer, a silent client)
try their luck. None gets in, training ends with exactly the rows Spark fed, and the cluster secret shows up in
no log, error text, repr, environment or executor log. Also: what the control server and feed servers bind to.
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import json
import logging
import os
import socket
import sys
import threading
import time

import cloudpickle
import grpc
import psutil
import pytest

from tfos import TFCluster
from tfos._control import server as control
from tfos._control.reservation import Reservation
from tfos._feed import protocol as p
from tfos._feed.client import FeedTarget
from tfos.errors import AuthenticationError, ConfigError

cloudpickle.register_pickle_by_value(sys.modules[__name__])
SPARK = TFCluster.InputMode.SPARK


def guarded_count(args, ctx):
    """Counts and sums the fed rows; after the first batch, waits for the test's attacks to end."""
    feed = ctx.get_data_feed(train_mode=True)
    rows, total, waited = 0, 0, False
    while not feed.should_stop():
        batch = feed.next_batch(10)
        if batch and not waited:
            waited = True
            deadline = time.monotonic() + 120
            while not os.path.exists(args["attacked"]) and time.monotonic() < deadline:
                time.sleep(0.1)
        rows += len(batch)
        total += sum(batch)
    with open(os.path.join(args["out"], f"count{ctx.worker_num}.json"), "w") as f:
        json.dump({"rows": rows, "total": total, "rejected": ctx.mgr.rejected}, f)


def _raw_grpc_calls(address: str, secret: str) -> list[str]:
    """Calls the control server as a stranger; returns the error texts (each must be UNAUTHENTICATED)."""
    texts = []
    failure = {"worker_num": 0, "role": "worker:0", "message": "forged failure"}
    with grpc.insecure_channel(address) as channel:
        for method, request in (("ReportExit", {"worker_num": 0, "failure": failure}),
                                ("Heartbeat", {"worker_num": 1, "progress": {}}),
                                ("GetSpec", {"wait": 0})):
            call = channel.unary_unary(f"/{control.SERVICE}/{method}", request_serializer=control.encode,
                                       response_deserializer=control.decode)
            for metadata in ((), (("authorization", "Bearer not-the-secret"),),
                             (("authorization", secret),),  # the secret without "Bearer ": still refused
                             (("authorization", f"Bearer {secret[:-1]}"),)):
                with pytest.raises(grpc.RpcError) as info:
                    call(request, timeout=10, metadata=metadata)
                assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED, (method, info.value)
                texts.append(f"{info.value.details()} {info.value}")
    return texts


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Reads until the server closes the connection (True) or ``timeout`` passes (False)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    finally:
        sock.close()


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def _feed_attacks(address: str) -> None:
    """Garbage, a wrong HMAC answer, an HTTP request and a forged end of feed on one feed port."""
    garbage = _connect(address)
    p.recv_exact(garbage, 32)
    garbage.sendall(os.urandom(32) + b"\x00" * 1000)
    assert _closed_by_peer(garbage, 30)
    forged = _connect(address)
    challenge = bytes(p.recv_exact(forged, 32))
    forged.sendall(hmac.new(b"guessed-secret", b"tfos-feed" + challenge, hashlib.sha256).digest())
    try:  # a node that took these would count 1 more row and a total 10**9 too high
        p.send_json(forged, p.HELLO, {"kind": "train", "epoch": 0, "quota": 1})
        p.send_pickle(forged, p.ROWS, [10**9])
        p.send_frame(forged, p.END)
    except OSError:
        pass  # already closed
    assert _closed_by_peer(forged, 30)
    http = _connect(address)
    http.sendall(b"GET /metrics HTTP/1.1\r\nHost: node\r\nAccept: */*\r\nUser-Agent: curl/8.5\r\n\r\n")
    assert _closed_by_peer(http, 30)
    ended = _connect(address)  # end_feed without the secret
    p.recv_exact(ended, 32)
    ended.sendall(b"\x01" * 64)
    assert _closed_by_peer(ended, 30)


def _tf_processes() -> list[psutil.Process]:
    run_id = os.environ["TFOS_TEST_RUN_ID"]
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "tfos._node." in " ".join(proc.info["cmdline"] or ()) and \
                    proc.environ().get("TFOS_TEST_RUN_ID") == run_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def _listening(pids: list[int], port: int) -> list[str]:
    """Local addresses on which one of ``pids`` listens on ``port``."""
    found = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found += [c.laddr.ip.removeprefix("::ffff:")  # gRPC binds IPv4 through IPv4-mapped IPv6 sockets
                  for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    return found


def _executor_logs(sc) -> str:
    spark_home = os.environ.get("SPARK_HOME") or os.path.dirname(__import__("pyspark").__file__)
    text = ""
    for path in glob.glob(os.path.join(spark_home, "work", sc.applicationId, "*", "std*")):
        with open(path, errors="replace") as f:
            text += f.read()
    return text


@pytest.mark.usefixtures("no_leftover_processes")
def test_strangers_are_refused_during_training_and_the_secret_stays_hidden(spark_local_cluster, tmp_path,
                                                                           caplog, capfd):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="tfos")
    sc = spark_local_cluster.sparkContext
    marker = tmp_path / "attacked"
    cluster = TFCluster.run(sc, guarded_count, {"out": str(tmp_path), "attacked": str(marker)}, 2,
                            input_mode=SPARK)
    secret = cluster._config.spec.secret
    seen: dict = {"errors": [], "texts": []}

    silent = [_connect(addr) for addr in cluster._feed_addresses()]  # connected before the feed starts

    def attack() -> None:
        try:
            seen["texts"] += _raw_grpc_calls(cluster.server.address, secret)
            for addr in cluster._feed_addresses():
                _feed_attacks(addr)
            procs = _tf_processes()
            seen["pids"] = [proc.pid for proc in procs]
            seen["environ"] = "\n".join(f"{k}={v}" for proc in procs for k, v in proc.environ().items())
            seen["cmdlines"] = "\n".join(" ".join(proc.cmdline()) for proc in procs)
            seen["feed_binds"] = {addr: _listening(seen["pids"], int(addr.rsplit(":", 1)[1]))
                                  for addr in cluster._feed_addresses()}
            seen["silent_dropped"] = [_closed_by_peer(sock, p.HANDSHAKE_TIMEOUT + 30) for sock in silent]
            marker.write_text("done")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            seen["errors"].append(exc)
            marker.write_text("failed")

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    control_port = int(cluster.server.address.rsplit(":", 1)[1])
    control_binds = _listening([os.getpid()], control_port)
    reprs = " ".join(repr(x) for x in (cluster._config, cluster._config.spec, cluster._config.settings,
                                         cluster.cluster_info, cluster.cluster_meta,
                                         FeedTarget(("a:1",), secret)))
    cluster.train(sc.parallelize(range(1000), 4), num_epochs=1)
    cluster.shutdown(timeout=180)
    attacker.join(120)
    assert not attacker.is_alive()
    if seen["errors"]:
        raise seen["errors"][0]

    counts = [json.load(open(tmp_path / f"count{i}.json")) for i in range(2)]
    assert [c["rows"] for c in counts] == [500, 500]  # nothing lost, nothing forged
    assert sum(c["total"] for c in counts) == sum(range(1000))
    assert all(c["rejected"] >= 5 for c in counts)  # garbage, forged, HTTP, forged end_feed, silent
    assert seen["silent_dropped"] == [True, True]  # the challenge timeout closed the silent clients
    assert control_binds == ["127.0.0.1"]  # spark.driver.host, not 0.0.0.0
    assert all(binds == ["127.0.0.1"] for binds in seen["feed_binds"].values()), seen["feed_binds"]

    out, err = capfd.readouterr()
    assert "refused a feed connection" in err  # the nodes' warnings reached the driver's stderr
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused a control-plane call" in logs
    for where, text in {"error texts": " ".join(seen["texts"]), "reprs": reprs, "driver logs": logs,
                        "driver stdout": out, "driver stderr": err, "TF process environment": seen["environ"],
                        "TF process command lines": seen["cmdlines"],
                        "executor logs": _executor_logs(sc)}.items():
        assert text or where == "driver stdout", f"nothing captured from the {where}"
        assert secret not in text, f"the cluster secret appears in the {where}"


# ----- the feed server alone (no Spark): slow clients and floods ---------------------------------------------
@pytest.fixture
def feed_server(monkeypatch):
    from tfos._feed import server as feed_server_module

    monkeypatch.setattr(p, "HANDSHAKE_TIMEOUT", 1.0)
    monkeypatch.setattr(feed_server_module, "MAX_PENDING_HANDSHAKES", 2)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = feed_server_module.FeedServer(sock, "feed-secret")
    srv.start()
    yield srv, f"127.0.0.1:{sock.getsockname()[1]}"
    srv.close()


def test_a_trickling_client_is_dropped_at_the_handshake_deadline(feed_server):
    srv, address = feed_server
    sock = _connect(address)
    p.recv_exact(sock, 32)
    sent, closed = 0, False
    for _ in range(60):  # one byte every 0.2 s: each read is quick, the whole answer is late
        try:
            sock.sendall(b"x")
            sent += 1
        except OSError:
            closed = True
            break
        time.sleep(0.2)
    closed = closed or _closed_by_peer(sock, 10)
    assert closed and sent < 64 and srv.rejected == 1
    with p.connect(address, "feed-secret", 10) as good:  # the server still serves
        p.send_json(good, p.HELLO, {"kind": "end_feed"})
        assert p.recv_frame(good)[0] == p.ACK


def test_a_flood_of_silent_clients_is_capped_and_passes(feed_server):
    srv, address = feed_server
    silent = [_connect(address) for _ in range(2)]
    for sock in silent:
        p.recv_exact(sock, 32)  # both are being challenged: the cap (2) is reached
    extra = _connect(address)
    assert _closed_by_peer(extra, 10)  # closed unread, no challenge sent
    assert all(_closed_by_peer(sock, 10) for sock in silent)  # dropped at the 1 s deadline
    with p.connect(address, "feed-secret", 10) as good:
        p.send_json(good, p.HELLO, {"kind": "end_feed"})
        assert p.recv_frame(good)[0] == p.ACK
    assert srv.rejected == 3 and srv.done.is_set()


def test_a_feed_client_refuses_a_server_without_the_secret():
    """A process on a node's port that does not hold the secret gets no rows, and its replies are never read."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    got = []

    def impostor():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(os.urandom(32))
            got.append(bytes(p.recv_exact(conn, 64)))  # the client's answer and its own challenge
            conn.sendall(os.urandom(32))  # cannot make the proof
            conn.settimeout(5)
            try:
                got.append(conn.recv(1024))  # what the client sends next: nothing
            except OSError:
                got.append(b"")

    thread = threading.Thread(target=impostor, daemon=True)
    thread.start()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(AuthenticationError, match=r"the feed server at 127\.0\.0\.1:\d+ did not prove it holds "
                                                      r"the cluster secret.*No data was sent to it"):
            p.connect(address, "feed-secret", 10)
        thread.join(10)
    finally:
        listener.close()
    assert got[1] == b""


# ----- the control server's bind address (no Spark) ---------------------------------------------------------
def test_control_server_binds_where_asked_and_advertises_a_reachable_address():
    every = {"0.0.0.0", "::"}  # gRPC binds 0.0.0.0 as a dual-stack "::" socket
    for bind, advertise, expected in (("127.0.0.1", None, {"127.0.0.1"}), ("0.0.0.0", "127.0.0.1", every),
                                      ("::", "127.0.0.1", every)):
        server = control.ControlServer(Reservation({"worker": [0]}), "s3cret", bind, advertise_host=advertise)
        server.start()
        try:
            binds = _listening([os.getpid()], server.port)
            assert len(binds) == 1 and binds[0] in expected, binds
            assert server.address == f"127.0.0.1:{server.port}"  # what nodes are told: never 0.0.0.0
        finally:
            server.stop()
    with pytest.raises(ConfigError, match=r"binds to 0\.0\.0\.0, so it needs an address to give the nodes"):
        control.ControlServer(Reservation({"worker": [0]}), "s3cret", "0.0.0.0")


# ----- TLS on the control plane -----------------------------------------------------------------------------
def _tls_strangers(address: str, cert: bytes, secret: str) -> None:
    """A plaintext client cannot talk to a TLS control server; a TLS client still needs the secret."""
    request = {"worker_num": 0, "progress": {}}
    with grpc.insecure_channel(address) as plain:
        call = plain.unary_unary(f"/{control.SERVICE}/Heartbeat", request_serializer=control.encode,
                                 response_deserializer=control.decode)
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10, metadata=(("authorization", f"Bearer {secret}"),))
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # no TLS handshake, no call
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=cert)) as tls:
        call = tls.unary_unary(f"/{control.SERVICE}/Heartbeat", request_serializer=control.encode,
                               response_deserializer=control.decode)
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10, metadata=(("authorization", "Bearer not-the-secret"),))
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.usefixtures("no_leftover_processes")
def test_tls_control_plane_trains_and_refuses_plaintext(spark_local_cluster, tmp_path, monkeypatch):
    import nodefns

    cloudpickle.register_pickle_by_value(nodefns)
    monkeypatch.setenv("TFOS_CONTROL_TLS", "1")
    monkeypatch.setenv("TFOS_CONTROL_HOST", "0.0.0.0")  # asked for: every interface, nodes get 127.0.0.1
    sc = spark_local_cluster.sparkContext
    cluster = TFCluster.run(sc, nodefns.mwms_train, {"out": str(tmp_path)}, 2, master_node="chief")
    try:
        spec = cluster._config.spec
        assert spec.control_cert.startswith(b"-----BEGIN CERTIFICATE-----")
        assert cluster.server.address.startswith("127.0.0.1:")
        binds = _listening([os.getpid()], int(cluster.server.address.rsplit(":", 1)[1]))
        assert len(binds) == 1 and binds[0] in ("0.0.0.0", "::"), binds
        _tls_strangers(cluster.server.address, spec.control_cert, spec.secret)
    finally:
        cluster.shutdown(timeout=300)
    steps = [json.load(open(tmp_path / f"steps{i}.json"))["steps"] for i in range(2)]
    assert steps == [10, 10]  # 2 epochs x 5 steps on both nodes, over a TLS control plane


def test_tls_server_needs_a_client_that_trusts_its_certificate():
    """No Spark: a client trusting another certificate is refused; the right one gets through."""
    from tfos._control.client import ControlClient
    from tfos._control.tls import self_signed
    from tfos.errors import ControlPlaneError

    cert, key = self_signed("127.0.0.1")
    other, _ = self_signed("127.0.0.1")
    server = control.ControlServer(Reservation({"worker": [0]}), "s3cret", "127.0.0.1", tls=(cert, key))
    server.start()
    try:
        with ControlClient(server.address, "s3cret", root_cert=cert) as client:
            assert client.heartbeat(0)[0] == "run"
        with ControlClient(server.address, "s3cret", unavailable_timeout=1, root_cert=other) as client:
            with pytest.raises(ControlPlaneError, match="the driver's certificate must name that address"):
                client.heartbeat(0)
    finally:
        server.stop()
