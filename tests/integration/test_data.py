"""tfos.data.tfrecord_dataset and SyncedDir against local disk and a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import os
import re

import pytest

from tfos import data, fs
from tfos.errors import StorageError


def _write_tfrecords(tf, directory, files, per_file, compression=None):
    os.makedirs(directory, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type=compression or "")
    for f in range(files):
        with tf.io.TFRecordWriter(os.path.join(directory, f"part-{f:03d}.tfrecord"), options) as writer:
            for r in range(per_file):
                writer.write(f"{f}:{r}".encode())


def _records(ds):
    return [r.decode() for r in ds.as_numpy_iterator()]


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def test_local_files_sharded_by_file_and_by_record(tf, tmp_path):
    _write_tfrecords(tf, tmp_path, files=4, per_file=3)
    everything = _records(data.tfrecord_dataset(str(tmp_path), shard=False))
    assert everything == [f"{f}:{r}" for f in range(4) for r in range(3)]
    by_file = [_records(data.tfrecord_dataset(str(tmp_path), num_shards=2, index=i)) for i in range(2)]
    assert by_file[0] == [f"{f}:{r}" for f in (0, 2) for r in range(3)]
    assert sorted(by_file[0] + by_file[1]) == sorted(everything)
    by_record = [_records(data.tfrecord_dataset(str(tmp_path / "part-000.tfrecord"), num_shards=2, index=i))
                 for i in range(2)]
    assert by_record == [["0:0", "0:2"], ["0:1"]]


def test_s3_matches_local_and_streams(tf, tmp_path, s3_env):
    local = tmp_path / "local"
    _write_tfrecords(tf, local, files=5, per_file=20)
    bucket = s3_env.make_bucket("data-read")
    fs.upload(str(local), f"{bucket}/mnist")
    want = _records(data.tfrecord_dataset(str(local), shard=False))
    remote = data.tfrecord_dataset("s3a://data-read/mnist/*.tfrecord", shard=False, prefetch_files=1)
    assert _records(remote) == want
    assert _records(remote) == want  # a second epoch streams the files again
    leftovers = [d for d in os.listdir(os.environ.get("TMPDIR", "/tmp")) if d.startswith("tfos-tfrecords-")]
    assert not [d for d in leftovers if os.listdir(os.path.join(os.environ.get("TMPDIR", "/tmp"), d))]


def test_gzip_from_s3(tf, tmp_path, s3_env):
    _write_tfrecords(tf, tmp_path / "gz", files=2, per_file=4, compression="GZIP")
    bucket = s3_env.make_bucket("data-gzip")
    fs.upload(str(tmp_path / "gz"), f"{bucket}/gz")
    got = _records(data.tfrecord_dataset(f"{bucket}/gz", compression="gzip", shard=False))
    assert got == [f"{f}:{r}" for f in range(2) for r in range(4)]


def test_corrupt_file_named_with_offset(tf, tmp_path, s3_env):
    _write_tfrecords(tf, tmp_path / "bad", files=2, per_file=10)
    path = tmp_path / "bad" / "part-001.tfrecord"
    raw = bytearray(path.read_bytes())  # records "1:r" of 19 bytes: the last one is at 171, its data at 183
    raw[-5] ^= 0xFF  # in the last record's data
    path.write_bytes(bytes(raw))
    bucket = s3_env.make_bucket("data-bad")
    fs.upload(str(tmp_path / "bad"), f"{bucket}/bad")
    raw[-17] ^= 0xFF  # and in its header (the length): the framing pass of the default path finds that one
    (tmp_path / "bad-header").mkdir()
    (tmp_path / "bad-header" / "part-001.tfrecord").write_bytes(bytes(raw))
    with pytest.raises(Exception, match=r"part-001\.tfrecord: corrupted record header \(length CRC mismatch\) at "
                                        r"byte offset 171"):
        _records(data.tfrecord_dataset(str(tmp_path / "bad-header"), shard=False))
    for source in (str(tmp_path / "bad"), f"{bucket}/bad"):
        # verify=True: checked before TensorFlow reads the file.
        with pytest.raises(Exception, match=r"part-001\.tfrecord: corrupted record data \(CRC mismatch\) at byte "
                                            r"offset 171"):
            _records(data.tfrecord_dataset(source, shard=False, verify=True))
        # Default: TensorFlow finds the damage and names no file; describe_failure (used by the TF child's error
        # report) finds it.
        with pytest.raises(Exception, match=r"corrupted record at \d+") as caught:
            _records(data.tfrecord_dataset(source, shard=False))
        assert re.match(r".*part-001\.tfrecord: corrupted record data \(CRC mismatch\) at byte offset 171",
                        data.describe_failure(caught.value))
    assert data.describe_failure(ValueError("something else")) is None


def test_truncated_file_named_with_offset_on_the_default_read_path(tf, tmp_path, s3_env):
    _write_tfrecords(tf, tmp_path / "cut", files=2, per_file=10)  # records "1:r": 12 + 3 + 4 = 19 bytes each
    path = tmp_path / "cut" / "part-001.tfrecord"
    whole = path.read_bytes()
    bucket = s3_env.make_bucket("data-truncated")
    # Cut inside the last record's data (TensorFlow alone says "truncated record at 171", naming no file) or
    # inside its header (TensorFlow alone silently drops the record): the framing pass of the default read path
    # (verify=False) names the file and offset before TensorFlow reads it.
    for cut in (5, 13):
        path.write_bytes(whole[:-cut])
        fs.upload(str(tmp_path / "cut"), f"{bucket}/cut{cut}")
        for source in (str(tmp_path / "cut"), f"{bucket}/cut{cut}"):
            with pytest.raises(Exception, match=rf"{source}/part-001\.tfrecord: truncated record .*at byte offset "
                                                r"171; the file is damaged"):
                _records(data.tfrecord_dataset(source, shard=False))


def test_bad_credentials_say_so_without_the_secret(s3_env, monkeypatch):
    s3_env.make_bucket("data-creds")
    wrong_secret = "wrong-" + s3_env.secret_key[:8]
    for key, secret in ((s3_env.access_key, wrong_secret), ("no-such-key", s3_env.secret_key)):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        with pytest.raises(StorageError, match=r"Access to s3://data-creds/x/\*\.tfrecord was denied \(The (request "
                                               r"signature|access key ID).*\)\. Check the credentials "
                                               r"\(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") as caught:
            data.tfrecord_dataset("s3://data-creds/x/*.tfrecord")
        chain, error = [], caught.value
        while error is not None:  # the message and every error behind it
            chain.append(f"{error!s} {error!r}")
            error = error.__cause__ or error.__context__
        assert not [text for text in chain if secret in text or s3_env.secret_key in text]


def test_missing_paths_and_buckets(s3_env, tmp_path):
    with pytest.raises(StorageError, match="there is no bucket 'no-such-bucket'"):
        data.tfrecord_dataset("s3://no-such-bucket/x/*.tfrecord")
    s3_env.make_bucket("data-empty")
    with pytest.raises(StorageError, match="No files match s3://data-empty/x/\\*.tfrecord"):
        data.tfrecord_dataset("s3://data-empty/x/*.tfrecord")
    with pytest.raises(StorageError, match="does not exist"):
        data.tfrecord_dataset(str(tmp_path / "nothing"))


def test_unreachable_endpoint_fails_fast(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    with pytest.raises(StorageError, match=r"Could not reach s3://b/x.*S3 endpoint: http://127.0.0.1:9"):
        data.tfrecord_dataset("s3://b/x")


def test_synced_dir_round_trip(s3_env, tmp_path):
    bucket = s3_env.make_bucket("data-sync")
    url = f"{bucket}/run1/backup"
    with data.SyncedDir(url, interval=3600) as synced:
        with open(os.path.join(synced.path, "ckpt-1"), "w") as f:
            f.write("one")
        os.makedirs(os.path.join(synced.path, "sub"))
        with open(os.path.join(synced.path, "sub", "state"), "w") as f:
            f.write("s")
        assert synced.sync() == 2
        assert synced.sync() == 0
        local = synced.path
    assert not os.path.exists(local)
    with data.SyncedDir(url, interval=3600) as again:  # a second attempt starts from what the first uploaded
        assert open(os.path.join(again.path, "ckpt-1")).read() == "one"
        assert open(os.path.join(again.path, "sub", "state")).read() == "s"
    filesystem, path = fs.filesystem(url)
    assert sorted(p.rsplit("/", 1)[-1] for p in filesystem.find(path)) == ["ckpt-1", "state"]
