"""tfos.fs and tfos._data.tfrecord: scheme handling, S3A settings, and the file-system contract on local disk."""

from __future__ import annotations

import io
import os
import sys

import pytest

from tfos import fs
from tfos._data import tfrecord as _tfrecord
from tfos.data import shard_of
from tfos.errors import ConfigError, DataError, StorageError


@pytest.mark.parametrize("url, kind, norm", [
    ("/data/x", "file", "/data/x"),
    ("rel/x", "file", "rel/x"),
    ("file:///data/x", "file", "/data/x"),
    ("s3://b/k", "s3", "s3://b/k"),
    ("s3a://b/k", "s3", "s3://b/k"),
    ("S3N://b/k", "s3", "s3://b/k"),
    ("hdfs://nn:8020/p", "hdfs", "hdfs://nn:8020/p"),
    ("memory://x", "memory", "memory://x"),
])
def test_scheme_and_normalize(url, kind, norm):
    assert fs.scheme(url) == kind
    assert fs.normalize(url) == norm


def test_s3a_env_maps_hadoop_settings():
    env = fs.s3a_env({
        "spark.hadoop.fs.s3a.access.key": "AK",
        "fs.s3a.secret.key": "SK",
        "fs.s3a.endpoint": "127.0.0.1:9000",
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.path.style.access": "true",
        "fs.s3a.endpoint.region": "eu-west-1",
        "fs.s3a.impl": "ignored",
    })
    assert env == {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK",
                   "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1",
                   "TFOS_S3_ADDRESSING_STYLE": "path"}
    assert fs.s3a_env({"fs.s3a.endpoint": "s3.example.com"})["AWS_ENDPOINT_URL"] == "https://s3.example.com"
    assert fs.s3a_env({}) == {}


def test_s3a_settings_pattern_selects_every_key_s3a_env_reads():
    """TFCluster.run fetches only the Hadoop keys matching S3A_SETTINGS from the JVM."""
    import re

    conf = {"fs.s3a.access.key": "AK", "fs.s3a.secret.key": "SK", "fs.s3a.session.token": "T",
            "fs.s3a.endpoint": "h:9000", "fs.s3a.endpoint.region": "r", "fs.s3a.connection.ssl.enabled": "false",
            "fs.s3a.path.style.access": "true"}
    others = {"fs.s3a.impl": "x", "fs.s3a.endpointx": "x", "fs.s3a.bucket.b.access.key": "x", "fs.s3a.threads.max": "9"}
    selected = {k: v for k, v in {**conf, **others}.items() if re.search(fs.S3A_SETTINGS, k)}
    assert selected == conf
    assert fs.s3a_env(selected) == fs.s3a_env({**conf, **others})


def test_s3_options_path_style_with_custom_endpoint():
    opts = fs._s3_options({"AWS_ENDPOINT_URL": "http://127.0.0.1:1"})
    assert opts["endpoint_url"] == "http://127.0.0.1:1"
    assert opts["config_kwargs"]["s3"] == {"addressing_style": "path"}
    assert fs._s3_options({})["config_kwargs"]["s3"] == {"addressing_style": "auto"}
    assert "endpoint_url" not in fs._s3_options({})


def test_expand_files_dirs_globs(tmp_path):
    for name in ("b.tfrecord", "a.tfrecord", "_SUCCESS", ".a.crc"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    a, b = str(tmp_path / "a.tfrecord"), str(tmp_path / "b.tfrecord")
    assert fs.expand(str(tmp_path)) == [a, b]
    assert fs.expand(str(tmp_path / "*.tfrecord")) == [a, b]
    assert fs.expand([b, "file://" + a, b]) == [b, a]
    with pytest.raises(StorageError, match="does not exist"):
        fs.expand(str(tmp_path / "missing"))
    with pytest.raises(StorageError, match="No files match"):
        fs.expand(str(tmp_path / "*.parquet"))


def test_expand_keeps_the_given_scheme():
    import fsspec

    mem = fsspec.filesystem("memory")
    mem.pipe("/tfos-test-expand/part-1", b"x")
    try:
        [url] = fs.expand("memory://tfos-test-expand")
        assert url.startswith("memory://") and url.endswith("/tfos-test-expand/part-1")
        filesystem, path = fs.filesystem(url)
        assert filesystem.cat(path) == b"x"
    finally:
        mem.rm("/tfos-test-expand", recursive=True)


def test_upload_replaces_atomically_and_uploaded_dir(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "saved_model.pb").write_bytes(b"v1")
    target = str(tmp_path / "out" / "model")
    os.makedirs(os.path.dirname(target))
    fs.upload(str(src), target)
    assert open(os.path.join(target, "saved_model.pb"), "rb").read() == b"v1"
    with pytest.raises(StorageError, match="already exists"):
        fs.upload(str(src), target, overwrite=False)
    with fs.uploaded_dir(target) as local:
        with open(os.path.join(local, "saved_model.pb"), "wb") as f:
            f.write(b"v2")
    assert os.listdir(target) == ["saved_model.pb"]
    assert open(os.path.join(target, "saved_model.pb"), "rb").read() == b"v2"
    assert sorted(os.listdir(tmp_path / "out")) == ["model"]  # no staging or temporary dirs left
    with pytest.raises(RuntimeError):
        with fs.uploaded_dir(target) as local:
            raise RuntimeError("training failed")
    assert open(os.path.join(target, "saved_model.pb"), "rb").read() == b"v2"  # untouched on failure
    assert sorted(os.listdir(tmp_path / "out")) == ["model"]


def test_unknown_scheme_is_a_storage_error():
    with pytest.raises(StorageError, match="not a file system scheme"):
        fs.filesystem("nosuchscheme://x/y")


@pytest.mark.parametrize("url, env, expected", [
    ("hdfs://nn:8020/x", {}, ("native", {"protocol": "hdfs", "host": "nn", "port": 8020})),
    ("hdfs://MyCluster/x", {}, ("native", {"protocol": "hdfs", "host": "MyCluster", "port": None})),  # HA name
    ("hdfs:///x", {}, ("native", {"protocol": "hdfs", "host": None, "port": None})),  # fs.defaultFS
    ("viewfs://c1/x", {}, ("native", {"protocol": "viewfs", "host": "c1", "port": None})),
    ("hdfs://alice@nn:9000/x", {"TFOS_HDFS_CLIENT": ""}, ("native", {"protocol": "hdfs", "host": "nn", "port": 9000})),
    ("hdfs://nn:8020/x", {"TFOS_HDFS_CLIENT": "pyarrow"}, ("pyarrow", {"host": "nn", "port": 8020})),
    ("hdfs:///x", {"TFOS_HDFS_CLIENT": " PyArrow "}, ("pyarrow", {"host": "default", "port": 0})),
    ("viewfs://c1/x", {"TFOS_HDFS_CLIENT": "pyarrow"}, ("pyarrow", {"host": "viewfs://c1", "port": 0})),
])
def test_hdfs_client_choice(url, env, expected):
    assert fs._hdfs_client(url, env) == expected


def test_hdfs_client_choice_refuses_bad_settings():
    with pytest.raises(ConfigError, match=r"TFOS_HDFS_CLIENT must be 'native' .* or 'pyarrow' .*not 'libhdfs'"):
        fs._hdfs_client("hdfs://nn/x", {"TFOS_HDFS_CLIENT": "libhdfs"})
    with pytest.raises(StorageError, match=r"hdfs://nn:http/x: the namenode port 'http' is not a number"):
        fs._hdfs_client("hdfs://nn:http/x", {})


def test_hdfs_native_is_picked_with_host_and_port():
    from hdfs_native.fsspec import HdfsFileSystem, ViewfsFileSystem

    # hdfs-native connects on the first request, so building a client for a namenode that does not exist is safe.
    store, path = fs.filesystem("hdfs://nn.invalid:8020/data/x", env={})
    assert isinstance(store, HdfsFileSystem) and (store.host, store.port) == ("nn.invalid", 8020)
    assert path == "hdfs://nn.invalid:8020/data/x" and store._strip_protocol(path) == "/data/x"
    assert store.unstrip_protocol("/data/x") == "hdfs://nn.invalid:8020/data/x"
    assert ViewfsFileSystem.protocol == "viewfs"


@pytest.mark.parametrize("url, said", [
    ("hdfs://ns.invalid/x", "No NameNode hosts found"),  # a name service the configuration does not define
    ("hdfs:///x", "No fs.defaultFS setting found"),
    ("viewfs://cluster.invalid/x", "No viewfs fallback mount found"),
])
def test_hdfs_native_without_configuration_is_a_storage_error(url, said, monkeypatch, tmp_path):
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))  # an empty configuration
    monkeypatch.delenv("HADOOP_HOME", raising=False)
    with pytest.raises(StorageError, match=rf"hdfs-native could not set up a client for {url} \(.*{said}.*\)\. "
                                           r"A namenode without a port must be a name service.*HADOOP_CONF_DIR"):
        fs.filesystem(url, env={})


def test_pyarrow_hdfs_client_is_picked_when_asked(monkeypatch):
    import fsspec.implementations.arrow as arrow

    built = []

    class FakeHadoopFileSystem:  # pyarrow's would load libhdfs and the JVM and connect at once
        def __init__(self, host, port):
            built.append((host, port))

    monkeypatch.setattr(arrow, "HadoopFileSystem", FakeHadoopFileSystem)
    store, path = fs.filesystem("hdfs://nn:8020/data", env={"TFOS_HDFS_CLIENT": "pyarrow"})
    assert isinstance(store, FakeHadoopFileSystem) and built == [("nn", 8020)] and path == "hdfs://nn:8020/data"

    class NoLibhdfs:
        def __init__(self, host, port):
            raise OSError("Unable to load libjvm\n" + "dlopen(...) failed\n" * 100)

    monkeypatch.setattr(arrow, "HadoopFileSystem", NoLibhdfs)
    with pytest.raises(StorageError, match=r"(?s)TFOS_HDFS_CLIENT=pyarrow: pyarrow's libhdfs client could not load "
                                           r"or connect for hdfs://nn/d \(Unable to load libjvm.*\.\.\.\)\. It "
                                           r"needs JAVA_HOME.*unset TFOS_HDFS_CLIENT to use hdfs-native"):
        fs.filesystem("hdfs://nn/d", env={"TFOS_HDFS_CLIENT": "pyarrow"})


def test_missing_hdfs_client_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "hdfs_native.fsspec", None)  # import fails as if it were not installed
    with pytest.raises(StorageError, match=r"Reading hdfs://nn:8020/x needs an HDFS client: pip install "
                                           r"'tfos\[hdfs\]' \(hdfs-native\), or set TFOS_HDFS_CLIENT=pyarrow"):
        fs.filesystem("hdfs://nn:8020/x", env={})


def test_listed_hdfs_paths_keep_the_namenode():
    class BarePaths:  # as pyarrow's client lists and re-prefixes paths
        @staticmethod
        def _strip_protocol(path):
            return path.partition("://")[2].partition("/")[2] if "://" in path else path

        @staticmethod
        def unstrip_protocol(path):
            return "hdfs://" + path

    assert fs._with_scheme("hdfs://nn:8020/d/*.tfrecord", BarePaths, "/d/a.tfrecord") == "hdfs://nn:8020/d/a.tfrecord"
    assert fs._with_scheme("hdfs:///d", BarePaths, "/d/a") == "hdfs:///d/a"
    assert fs._with_scheme("viewfs://c1/d", BarePaths, "/d/a") == "viewfs://c1/d/a"
    assert fs._with_scheme("/local/d", BarePaths, "/local/d/a") == "/local/d/a"


def test_tfrecord_round_trip_and_damage(tmp_path):
    buf = io.BytesIO()
    assert _tfrecord.write_records(buf, [b"a", b"", b"xyz" * 100]) == (3, 3 * 16 + 1 + 300)
    data = buf.getvalue()
    assert list(_tfrecord.read_records(io.BytesIO(data), "f")) == [b"a", b"", b"xyz" * 100]
    truncated = data[:-5]
    with pytest.raises(DataError, match=r"f: truncated record .* at byte offset 33"):
        list(_tfrecord.read_records(io.BytesIO(truncated), "f"))
    flipped = bytearray(data)
    flipped[17 + 12] ^= 0xFF  # second record's... first record is 12 + 1 + 4 = 17 bytes; flip in record 2 header
    with pytest.raises(DataError, match="offset 17"):
        list(_tfrecord.read_records(io.BytesIO(bytes(flipped)), "f"))
    path = tmp_path / "x.tfrecord"
    path.write_bytes(data)
    assert _tfrecord.check_file(str(path)) == 3


@pytest.mark.parametrize("config, expected", [
    ({}, (1, 0)),
    ({"cluster": {"chief": ["a"], "worker": ["b", "c"]}, "task": {"type": "chief", "index": 0}}, (3, 0)),
    ({"cluster": {"chief": ["a"], "worker": ["b", "c"]}, "task": {"type": "worker", "index": 1}}, (3, 2)),
    ({"cluster": {"worker": ["b", "c"]}, "task": {"type": "worker", "index": 1}}, (2, 1)),
    ({"cluster": {"worker": ["b"], "ps": ["p"]}, "task": {"type": "ps", "index": 0}}, (1, 0)),
    ({"cluster": {"worker": ["b"]}, "task": {"type": "evaluator", "index": 0}}, (1, 0)),
])
def test_shard_of(config, expected):
    assert shard_of(config) == expected


def test_a_fork_after_an_hdfs_client_was_made_does_not_hang(tmp_path):
    """fsspec empties its instance cache in a forked child, and an hdfs-native client finalized there hangs for
    ever (its Rust runtime's threads stayed in the parent). pyspark starts its JVM with a preexec_fn, which runs
    those fork hooks: a driver that had read from HDFS then hung in SparkSession.getOrCreate()."""
    import subprocess
    import sys

    pytest.importorskip("hdfs_native")
    script = tmp_path / "fork.py"
    script.write_text(
        "import subprocess\n"
        "from tfos import fs\n"
        "client, _ = fs.filesystem('hdfs://127.0.0.1:9/x')  # no connection: it connects on the first request\n"
        "assert fs.filesystem('hdfs://127.0.0.1:9/y')[0] is client  # one client per settings\n"
        "del client\n"
        "subprocess.run(['true'], preexec_fn=lambda: None, timeout=20, check=True)\n"
        "print('forked')\n")
    import signal

    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and its hung fork
        out, err = proc.communicate()
    assert proc.returncode == 0 and out.strip() == "forked", err[-2000:]
