"""TFRecord read throughput into a model.fit-style input pipeline: local disk vs tfos.data from a local S3 server.

Same files, same pipeline (parse a tf.train.Example of 784 floats + an int64 label, batch, prefetch), iterated to
the end, in one process. Runs alternate between the readers so that machine noise hits all of them.

- ``local TFRecordDataset``: ``tf.data.TFRecordDataset(files)`` on local disk (the ceiling);
- ``tfos.data local``: :func:`tfos.data.tfrecord_dataset` on the same local files with its defaults
  (``verify=False``: TensorFlow checks the CRCs as it reads; tfos walks each file's record framing, lengths and
  header CRCs, in a background thread first);
- ``tfos.data s3``: the same defaults, on the same files in a SeaweedFS S3 server on loopback;
- with ``--verify``, also ``tfos.data local verify=True``: every record's data CRC checked by tfos before
  TensorFlow reads the file (a second pass over the data).

    python bench/tfrecord_read.py [--rows 60000] [--files 8] [--runs 3] [--verify]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from _results import save  # noqa: E402


def write_files(tf, directory, rows, files):
    import numpy as np

    rng = np.random.default_rng(0)
    os.makedirs(directory, exist_ok=True)
    per_file = rows // files
    for f in range(files):
        with tf.io.TFRecordWriter(os.path.join(directory, f"part-{f:05d}.tfrecord")) as writer:
            images = rng.random((per_file, 784), dtype=np.float32)
            for r in range(per_file):
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image": tf.train.Feature(float_list=tf.train.FloatList(value=images[r])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[r % 10])),
                }))
                writer.write(example.SerializeToString())
    return per_file * files


def pipeline(tf, records):
    spec = {"image": tf.io.FixedLenFeature([784], tf.float32), "label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(batch):
        parsed = tf.io.parse_example(batch, spec)
        return tf.reshape(parsed["image"], [-1, 28, 28, 1]), parsed["label"]

    return records.batch(128).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def cpu_seconds(procs) -> list[float]:
    """User + system CPU seconds used so far by each of ``procs`` (this process, the S3 server)."""
    return [sum(p.cpu_times()[:2]) for p in procs]


def steal_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks of the machine so far (/proc/stat): time the hypervisor gave to others."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return fields[7] if len(fields) > 7 else 0, sum(fields)


def drain(ds, procs=()) -> tuple[int, float, list[float], float]:
    """Iterates ``ds`` to the end: (rows, wall seconds, CPU seconds of each of ``procs``, machine steal fraction)."""
    cpu0, (steal0, total0) = cpu_seconds(procs), steal_ticks()
    start = time.perf_counter()
    rows = 0
    for _, labels in ds:
        rows += int(labels.shape[0])
    wall = time.perf_counter() - start
    steal1, total1 = steal_ticks()
    used = [after - before for before, after in zip(cpu0, cpu_seconds(procs))]
    return rows, wall, used, (steal1 - steal0) / max(1, total1 - total0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--verify", action="store_true", help="also time tfos.data local with verify=True")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "tfrecord_read.md"))
    args = parser.parse_args()

    import psutil
    import tensorflow as tf
    from s3server import S3Server

    from tfos import data, fs

    work = tempfile.mkdtemp(prefix="tfos-bench-read-")
    local = os.path.join(work, "tfr")
    rows = write_files(tf, local, args.rows, args.files)
    size = sum(os.path.getsize(os.path.join(local, n)) for n in os.listdir(local))
    print(f"{rows} rows in {args.files} files, {size / 1e6:.0f} MB")
    with S3Server(os.path.join(work, "s3")) as s3:
        os.environ.update(s3.env)
        s3.make_bucket("bench")
        fs.upload(local, "s3://bench/tfr")
        files = sorted(os.path.join(local, n) for n in os.listdir(local))
        readers = {
            "local TFRecordDataset": lambda: tf.data.TFRecordDataset(files),
            "tfos.data local": lambda: data.tfrecord_dataset(local, shard=False),
            "tfos.data s3": lambda: data.tfrecord_dataset("s3://bench/tfr", shard=False),
        }
        if args.verify:
            readers["tfos.data local verify=True"] = lambda: data.tfrecord_dataset(local, shard=False, verify=True)
        me, server = psutil.Process(), psutil.Process(s3.proc.pid)
        for make in readers.values():  # warm-up: page cache, TF graph tracing
            drain(pipeline(tf, make()))
        runs: dict[str, list[float]] = {name: [] for name in readers}
        client_cpu: dict[str, list[float]] = {name: [] for name in readers}
        all_cpu: dict[str, list[float]] = {name: [] for name in readers}
        steals: list[float] = []
        for _ in range(args.runs):
            for name, make in readers.items():
                got, secs, cpu, steal = drain(pipeline(tf, make()), (me, server))
                assert got == rows, (name, got, rows)
                runs[name].append(rows / secs)
                client_cpu[name].append(rows / cpu[0])
                all_cpu[name].append(rows / sum(cpu))
                steals.append(steal)
                print(f"{name}: {rows / secs:,.0f} rows/s, {size / secs / 1e6:.0f} MB/s, {rows / cpu[0]:,.0f} rows "
                      f"per reader CPU second, {rows / sum(cpu):,.0f} with the server's, steal {steal:.0%}", flush=True)

    write_report(args, tf.__version__, rows, size, runs, client_cpu, all_cpu, steals)


def write_report(args, tf_version, rows, size, runs, client_cpu, all_cpu, steals) -> None:
    def med(values):
        return statistics.median(values)

    base = "local TFRecordDataset"
    lines = [
        "# TFRecord read throughput: local disk vs tfos.data from S3",
        "",
        f"{rows:,} tf.train.Example records (784 float32 + int64 label), {args.files} files, {size / 1e6:.0f} MB; "
        "pipeline: batch(128) -> parse_example -> prefetch, drained. S3: SeaweedFS `weed mini` on loopback, on the "
        "same 2 cores as the reader. tfos.data with its defaults (verify=False) unless the reader says verify=True.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (steal time {med(steals):.0%}, at most "
        f"{max(steals):.0%}); Python {platform.python_version()}, TensorFlow {tf_version}; {args.runs} runs each, "
        f"alternating, after one warm-up each; {time.strftime('%Y-%m-%d')}. Wall-clock figures cluster at a few "
        "levels (about 46k, 92k, 140k and 190k rows/s: tf.data's autotuning settles on a different parallelism "
        "from run to run), so their medians move between sessions; the per-CPU-second table is the stable "
        "comparison.",
        "",
        "Wall clock (what model.fit sees):",
        "",
        "| reader | median rows/s | min | max | median MB/s | vs local TFRecordDataset |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in runs.items():
        lines.append(f"| {name} | {med(values):,.0f} | {min(values):,.0f} | {max(values):,.0f} | "
                     f"{med(values) * size / rows / 1e6:,.0f} | {med(values) / med(runs[base]):.0%} |")
    lines += ["", "Per CPU second (steal does not count: the work each reader costs; the S3 server's CPU is counted "
              "in the last columns, as it shares these cores here):", "",
              "| reader | rows per reader CPU s | vs local | rows per CPU s, reader + S3 server | vs local |",
              "|---|---:|---:|---:|---:|"]
    for name in runs:
        lines.append(f"| {name} | {med(client_cpu[name]):,.0f} | {med(client_cpu[name]) / med(client_cpu[base]):.0%} "
                     f"| {med(all_cpu[name]):,.0f} | {med(all_cpu[name]) / med(all_cpu[base]):.0%} |")
    lines += ["", *_analysis(rows, size, client_cpu, all_cpu)]
    save(args.out, lines, runs)


def _analysis(rows, size, client_cpu, all_cpu) -> list[str]:
    """Where the CPU goes for the S3 reader, and what that allows on these cores."""
    parse = rows / statistics.median(client_cpu["local TFRecordDataset"])
    local = rows / statistics.median(client_cpu["tfos.data local"])
    client = rows / statistics.median(client_cpu["tfos.data s3"])
    server = rows / statistics.median(all_cpu["tfos.data s3"]) - client
    return [
        f"Where the CPU goes, for the {size / 1e6:.0f} MB: TensorFlow's read and parse {parse:.2f} CPU s; tfos.data on "
        f"local files {local:.2f} s (its framing check and file hand-off add {local - parse:.2f} s); from S3 the "
        f"reader needs {client:.2f} s ({client - local:.2f} s more: the download through s3fs) and the S3 server "
        f"{server:.2f} s. On 2 cores, where all of it runs, the download and the server are paid out of the same "
        f"CPU as the parsing, so even a client that cost nothing would reach at most {parse / (parse + server):.0%} "
        "of local disk, below the 80% goal. Where the S3 server is another machine and the reader has a spare core "
        "(the download runs in a background thread, prefetch_files ahead), the download overlaps the parsing "
        "instead of adding to it; that setting could not be measured here."]

if __name__ == "__main__":
    main()
