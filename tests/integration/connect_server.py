"""A real Spark Connect server for the tests: ``spark-submit --class ...SparkConnectServer`` in its own process.

The server runs the Spark application (its driver, and the executors of its master: ``local-cluster[...]`` or
a standalone ``spark://`` master); the test process is only a Connect client, with no SparkContext, as a
notebook would be.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Iterator, Mapping

from tfos.standalone import _kill_trees, _tail

CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# Set in this process by the first Connect session; a server (or a classic driver) started later must not
# inherit them, or its Python workers believe they are Connect clients.
CONNECT_CLIENT_ENV = ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE")


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ConnectServer:
    """A Spark Connect server on ``master``, listening on ``host``.

    Args:
        master: the Spark master of the server's application.
        conf: Spark settings for the application.
        log_path: file for the server's output.
        host: the address the server binds (and its driver uses).
        startup_timeout: seconds for the server to start listening.
    """

    def __init__(self, master: str, conf: Mapping[str, str], log_path: str, host: str = "127.0.0.1",
                 startup_timeout: float = 120.0) -> None:
        self.master, self.conf, self.log_path, self.host = master, dict(conf), log_path, host
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"sc://{self.host}:{self.port}"

    def start(self) -> "ConnectServer":
        import pyspark

        spark_home = os.path.dirname(pyspark.__file__)
        env = {k: v for k, v in os.environ.items() if k not in CONNECT_CLIENT_ENV}
        env.update(SPARK_HOME=spark_home, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP=self.host)
        self.port = _free_port(self.host)
        conf = {**self.conf, "spark.connect.grpc.binding.address": self.host,
                "spark.connect.grpc.binding.port": str(self.port)}
        args = [os.path.join(spark_home, "bin", "spark-submit"), "--class", CONNECT_SERVER_CLASS,
                "--name", "tfos-connect-tests", "--master", self.master]
        for key, value in conf.items():
            args += ["--conf", f"{key}={value}"]
        args.append("spark-internal")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Spark Connect server exited with code {self.proc.returncode}:\n"
                                   f"{_tail(self.log_path)}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the Spark Connect server did not listen on {self.host}:{self.port} within "
                           f"{self.startup_timeout:.0f}s:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        if self.proc is not None:
            _kill_trees([self.proc.pid], groups=True)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None


def client_session(url: str):
    """A new Connect client session on ``url`` (never a cached one of another server)."""
    from pyspark.sql import SparkSession

    return SparkSession.builder.remote(url).create()


def forget_connect_client() -> None:
    """Removes what a Connect session set in this process's environment (see :data:`CONNECT_CLIENT_ENV`)."""
    for key in CONNECT_CLIENT_ENV:
        os.environ.pop(key, None)


@contextlib.contextmanager
def connect_session(master: str, conf: Mapping[str, str], log_path: str) -> Iterator:
    """A Connect client session on a new :class:`ConnectServer` of ``master``; stops both and forgets the client
    afterwards (the body of every Connect test fixture)."""
    server = ConnectServer(master, conf, log_path).start()
    spark = None
    try:
        spark = client_session(server.url)
        yield spark
    finally:
        if spark is not None:
            spark.stop()
        server.stop()
        forget_connect_client()
