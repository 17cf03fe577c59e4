"""The file-system contract tfos relies on, checked on every backend the same way.

Backends: local disk, fsspec's in-memory file system, a real S3 server (SeaweedFS on loopback), and HDFS when
``TFOS_TEST_HDFS`` names a writable directory on a real cluster (``hdfs://namenode:8020/tmp/tfos-test``; needs
``HADOOP_CONF_DIR`` as a client would). Nothing HDFS-specific runs otherwise: ``hdfs://`` goes through the same
code path (``tfos.fs.filesystem`` picks hdfs-native) that these tests exercise on the other backends.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tfos import data, fs
from tfos.errors import StorageError

BACKENDS = ["local", "memory", "s3", "hdfs"]


@pytest.fixture(params=BACKENDS)
def root(request, tmp_path):
    """A fresh, empty directory URL on the backend."""
    name = f"tfos-contract-{uuid.uuid4().hex[:8]}"
    if request.param == "local":
        yield str(tmp_path / name)
        return
    if request.param == "memory":
        url = f"memory://{name}"
    elif request.param == "s3":
        s3 = request.getfixturevalue("s3_env")
        url = s3.make_bucket("contract") + "/" + name
    else:
        base = os.environ.get("TFOS_TEST_HDFS")
        if not base:
            pytest.skip("set TFOS_TEST_HDFS=hdfs://namenode:port/dir (a writable directory) to test real HDFS")
        url = base.rstrip("/") + "/" + name
    yield url
    store, path = fs.filesystem(url)
    if store.exists(path):
        store.rm(path, recursive=True)


def _local_tree(tmp_path, files):
    src = tmp_path / f"src-{uuid.uuid4().hex[:6]}"
    for rel, content in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(content)
    return src


def test_upload_expand_download(root, tmp_path):
    src = _local_tree(tmp_path, {"b.bin": b"B", "a.bin": b"A", "_SUCCESS": b"", "sub/c.bin": b"C"})
    assert fs.upload(str(src), root) == root
    names = [u.rsplit("/", 1)[-1] for u in fs.expand(root)]
    assert names == ["a.bin", "b.bin"]  # files only, sorted, _* skipped
    assert [u.rsplit("/", 1)[-1] for u in fs.expand(root + "/*.bin")] == ["a.bin", "b.bin"]
    assert all(u.startswith(root.split("://")[0]) for u in fs.expand(root)) or fs.is_local(root)
    got = tmp_path / "got"
    got.mkdir()
    fs.download(fs.expand(root + "/b.bin")[0], str(got / "b"))
    assert (got / "b").read_bytes() == b"B"
    tree = tmp_path / "tree"
    tree.mkdir()
    assert fs.download_tree(root, str(tree))
    assert (tree / "sub" / "c.bin").read_bytes() == b"C"
    assert not fs.download_tree(root + "/missing", str(tree))


def test_overwrite_and_failed_writes_leave_target_alone(root, tmp_path):
    fs.upload(str(_local_tree(tmp_path, {"v": b"1"})), root)
    with pytest.raises(StorageError, match="already exists"):
        fs.upload(str(_local_tree(tmp_path, {"v": b"2"})), root, overwrite=False)
    with pytest.raises(RuntimeError):
        with fs.uploaded_dir(root) as local:
            open(os.path.join(local, "v"), "wb").write(b"3")
            raise RuntimeError("failed half way")
    with fs.uploaded_dir(root) as local:
        open(os.path.join(local, "w"), "wb").write(b"4")
    store, path = fs.filesystem(root)
    assert sorted(p.rsplit("/", 1)[-1] for p in store.find(path)) == ["w"]  # replaced whole, no leftovers
    parent = path.rstrip("/").rsplit("/", 1)[0]
    store.invalidate_cache()
    assert not [p for p in store.ls(parent, detail=False) if "_tfos-tmp-" in p]


def test_missing_paths(root):
    with pytest.raises(StorageError, match="does not exist"):
        fs.expand(root + "/nothing")
    with pytest.raises(StorageError, match="No files match"):
        fs.expand(root + "/nothing/*.tfrecord")


def test_tfrecords_and_synced_dir(root, tmp_path):
    import tensorflow as tf

    src = tmp_path / "tfr"
    src.mkdir()
    for f in range(3):
        with tf.io.TFRecordWriter(str(src / f"part-{f}.tfrecord")) as writer:
            for r in range(4):
                writer.write(f"{f}:{r}".encode())
    fs.upload(str(src), root + "/tfr")
    got = [r.decode() for r in data.tfrecord_dataset(root + "/tfr", shard=False).as_numpy_iterator()]
    assert got == [f"{f}:{r}" for f in range(3) for r in range(4)]
    with data.SyncedDir(root + "/ckpt", interval=3600) as synced:
        open(os.path.join(synced.path, "checkpoint"), "w").write("1")
    with data.SyncedDir(root + "/ckpt", interval=3600) as again:
        assert open(os.path.join(again.path, "checkpoint")).read() == "1"
