"""Feed throughput into TF: tfos InputMode.SPARK against a one-process ceiling and a TFoS-style queue feed.

All three move the same rows (784 float32 features + an int64 label) into a consumer that batches them:

- ceiling: ``tf.data.Dataset.from_tensor_slices`` over in-memory arrays, one process (no transport at all).
- queue: TensorFlowOnSpark's transport: one pickled record at a time through a queue served by a
  ``multiprocessing`` manager (TFoS's TFManager), from a producer process to a consumer that builds batches.
- spark alone: the same cached DataFrame through ``mapInArrow`` with the batches dropped: what Spark itself
  can hand to Python here (its JVM-to-Arrow conversion of array columns), the ceiling for any Spark feed.
- tfos: a cached DataFrame on a ``local-cluster[2,1,2048]`` master fed with ``cluster.train`` to 2 TF nodes,
  each iterating ``feed.dataset(label="label", batch_size=B)``, on each of the feed's two paths
  (``feed_path=spark``: every epoch through Spark tasks; ``feed_path=parquet``: Spark writes the DataFrame once
  as Parquet and the nodes read it, ``tfos._feed.parquet``), and with the same rows as a DataFrame read from
  Parquet files (written before the runs), which the nodes read from its own files: with the default settings,
  with ``feed_local_cache=0`` (Parquet decoded every epoch) and with single rows batched by tf.data
  (``feed.dataset(label="label").batch(B)``, TensorFlowOnSpark-style code). Reported two ways: the nodes' receive rate
  (rows from each node's first batch to its last, summed over nodes; and, as the nodes together, all rows over
  the span from any node's first batch to any node's last) and the end-to-end rate of the whole
  ``train()`` call (including the Spark path's row count, or the fast path's Parquet write), started once
  both nodes have imported TensorFlow (on 2 cores, TF's import would otherwise compete with the feed). CPU
  seconds per process class during each ``train()`` call are recorded too (psutil).

Run: ``.venv/bin/python bench/feed_throughput.py [--rows 60000] [--epochs 3] [--repeats 3]``; writes
``bench/results/feed_throughput.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

import _results  # bench/_results.py (the script's own directory is on sys.path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
FEATURES = 784
ROW_BYTES = FEATURES * 4 + 8
BATCH = 256


def ceiling(rows: int) -> float:
    import tensorflow as tf

    x = np.random.default_rng(0).random((rows, FEATURES), dtype=np.float32)
    y = np.arange(rows, dtype=np.int64) % 10
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    start = time.perf_counter()
    seen = sum(int(b[1].shape[0]) for b in ds)
    return seen / (time.perf_counter() - start)


def _produce(q, rows):
    row = (np.zeros(FEATURES, dtype=np.float32), 0)
    for _ in range(rows):
        q.put(row)
    q.put(None)


def queue_feed(rows: int) -> float:
    """TensorFlowOnSpark's shape: a producer puts single records, the consumer assembles batches."""
    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    q = manager.Queue(maxsize=1000)
    producer = ctx.Process(target=_produce, args=(q, rows))
    start = time.perf_counter()
    producer.start()
    batch, seen = [], 0
    while True:
        item = q.get()
        if item is None:
            break
        batch.append(item)
        if len(batch) == BATCH:
            np.stack([b[0] for b in batch])
            seen += len(batch)
            batch = []
    seen += len(batch)
    producer.join()
    rate = seen / (time.perf_counter() - start)
    manager.shutdown()
    return rate


def consume(args, ctx):
    """tfos node: iterate the fed dataset once per epoch, timing from the first batch to the last."""
    import json as _json
    import time as _time

    import tensorflow  # noqa: F401 - imported before the driver starts feeding

    open(f"{args['out']}/ready{ctx.worker_num}", "w").close()
    feed = ctx.get_data_feed(train_mode=True)
    if args.get("batched", True):  # batches made from whole fed chunks (feed.dataset(batch_size=...))
        ds = feed.dataset(label="label", batch_size=args["batch"])
    else:  # single rows, batched by tf.data (TensorFlowOnSpark-style code)
        ds = feed.dataset(label="label").batch(args["batch"])
    import os as _os

    first = last = None
    cpu_start = _os.times()
    rows = 0
    for _ in range(args["epochs"]):
        for x, _y in ds:
            now = _time.perf_counter()
            first = first or now
            last = now
            rows += int(x.shape[0])
    cpu_end = _os.times()
    cpu = (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)
    with open(f"{args['out']}/node{ctx.worker_num}.json", "w") as f:
        _json.dump({"rows": rows, "seconds": (last - first) if first else 0.0, "cpu": cpu, "first": first,
                    "last": last}, f)


def _drop(batches):
    import pyarrow as pa

    n = sum(b.num_rows for b in batches)
    yield pa.RecordBatch.from_pydict({"n": [n]})


def spark_alone(df, rows: int) -> float:
    start = time.perf_counter()
    df.mapInArrow(_drop, "n long").collect()
    return rows / (time.perf_counter() - start)


def make_df(spark, rows: int):
    import pandas as pd

    x = np.random.default_rng(0).random((rows, FEATURES), dtype=np.float32)
    pdf = pd.DataFrame({"features": list(x), "label": np.arange(rows) % 10})
    df = spark.createDataFrame(pdf, "features array<float>, label long").repartition(4).cache()
    df.count()
    return df


def make_parquet_df(spark, df):
    """The same rows as a DataFrame read from Parquet files (written once, outside any timing, with Spark's
    defaults): a plain scan, which the fast path reads from its own files without writing a cache."""
    path = tempfile.mkdtemp(prefix="tfos-bench-src-") + "/data"
    df.write.parquet(path)
    return spark.read.parquet(path)


CPU_CLASSES = ("tf", "supervisors", "python_workers", "executor_jvms", "driver")


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process of the run, with its class. The whole process table is
    read: the nodes' supervisors are detached (not children of this process)."""
    import psutil

    me = os.getpid()
    seen = {}
    for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        info = proc.info
        cmd = " ".join(info["cmdline"] or ())
        if info["cpu_times"] is None:
            continue
        if info["pid"] == me or "SparkSubmit" in cmd:
            kind = "driver"
        elif "tfos._node.child" in cmd:
            kind = "tf"
        elif "tfos._node" in cmd:
            kind = "supervisors"
        elif "CoarseGrainedExecutorBackend" in cmd:
            kind = "executor_jvms"
        elif "pyspark.daemon" in cmd or "pyspark/worker" in cmd or "pyspark.worker" in cmd:
            kind = "python_workers"
        else:
            continue
        seen[info["pid"]] = (kind, info["cpu_times"].user + info["cpu_times"].system)
    return seen


def cpu_between(before: dict, after: dict) -> dict[str, float]:
    totals = {kind: 0.0 for kind in CPU_CLASSES}
    for pid, (kind, secs) in after.items():
        totals[kind] += secs - (before[pid][1] if pid in before else 0.0)
    return totals


def tfos_feed(spark, df, rows: int, epochs: int, feed_path: str = "", batched: bool = True,
              env: dict[str, str] | None = None) -> tuple[float, float, dict]:
    import cloudpickle

    from tfos import TFCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if feed_path:  # through the environment: older checkouts (bench/feed_routing.py) ignore it
        os.environ["TFOS_FEED_PATH"] = feed_path
    for key in {key for *_, settings in VARIANTS for key in settings}:  # the variant's settings, and only those
        os.environ.pop(key, None)
    os.environ.update(env or {})
    out = tempfile.mkdtemp(prefix="tfos-bench-")
    cluster = TFCluster.run(spark.sparkContext, consume,
                            {"out": out, "batch": BATCH, "epochs": epochs, "batched": batched}, 2,
                            input_mode=TFCluster.InputMode.SPARK)
    deadline = time.monotonic() + 120
    while not all(os.path.exists(f"{out}/ready{i}") for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.2)
    before = cpu_snapshot()
    start = time.perf_counter()
    cluster.train(df, num_epochs=epochs)
    wall = time.perf_counter() - start
    cpu = cpu_between(before, cpu_snapshot())
    cluster.shutdown(timeout=600)
    nodes = [json.load(open(f"{out}/node{i}.json")) for i in range(2)]
    received = sum(n["rows"] for n in nodes)
    node_rate = sum(n["rows"] / n["seconds"] for n in nodes if n["seconds"])
    # A TF process may exit before the second snapshot: each node measures its own CPU time instead.
    cpu["tf"] = sum(n.get("cpu", 0.0) for n in nodes)
    # The nodes together: all rows over the span from any node's first batch to any node's last (their
    # per-node rates summed overstate this when one node starts later than the other).
    span = max(n["last"] for n in nodes) - min(n["first"] for n in nodes)
    return node_rate, received / wall, {**cpu, "wall": wall, "together": received / span if span > 0 else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--queue-rows", type=int, default=20000, help="rows for the (slow) queue baseline")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "feed_throughput.md"))
    parser.add_argument("--tfos-only", default="", metavar="JSON",
                        help="run only tfos's feed once and write its two rates to this file (bench/feed_routing.py)")
    parser.add_argument("--feed-path", default="spark", choices=("spark", "parquet"),
                        help="the feed path of --tfos-only")
    args = parser.parse_args()

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master("local-cluster[2,1,2048]").appName("tfos-bench-feed")
               .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
               .config("spark.driver.memory", "2g").config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    if os.environ.get("PYTHONPATH"):  # bench/feed_routing.py runs another checkout of tfos this way
        builder = builder.config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
    spark = builder.getOrCreate()
    runs: dict[str, list[float]] = {key: [] for key in ("ceiling", "queue", "spark_alone")}
    runs.update({f"{name}_{kind}": [] for name, *_ in VARIANTS for kind in ("nodes", "together", "end_to_end")})
    cpu: dict[str, list[dict]] = {name: [] for name, *_ in VARIANTS}
    df = make_df(spark, args.rows)
    if args.tfos_only:
        import tfos

        node_rate, e2e, _ = tfos_feed(spark, df, args.rows, args.epochs, args.feed_path)
        with open(args.tfos_only, "w") as f:
            json.dump({"tfos_nodes": node_rate, "tfos_end_to_end": e2e, "tfos": os.path.dirname(tfos.__file__)}, f)
        spark.stop()
        return
    files_df = make_parquet_df(spark, df)
    spark_alone(df, args.rows)  # warm-up: starts the Python workers
    ceiling(args.rows)  # warm-up: TensorFlow's first pass over a dataset is several times slower
    for i in range(args.repeats):  # alternate, so machine noise hits every variant
        runs["ceiling"].append(ceiling(args.rows))
        runs["queue"].append(queue_feed(args.queue_rows))
        runs["spark_alone"].append(spark_alone(df, args.rows))
        for name, _, source, path, batched, env in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
            node_rate, e2e, used = tfos_feed(spark, files_df if source == "files" else df, args.rows, args.epochs,
                                             path, batched, env)
            runs[f"{name}_nodes"].append(node_rate)
            runs[f"{name}_together"].append(used.pop("together"))
            runs[f"{name}_end_to_end"].append(e2e)
            cpu[name].append(used)
        print(f"run {i + 1}: " + ", ".join(f"{k}={v[-1]:,.0f} rows/s" for k, v in runs.items()), flush=True)
    spark.stop()
    write_report(args, runs, cpu)


# The tfos variants measured: (name, label, data: the cached DataFrame or the same rows read from Parquet files,
# feed_path, feed.dataset(batch_size=...) or .batch(), extra settings).
VARIANTS = [
    ("spark", "Spark path", "df", "spark", True, {}),
    ("cache", "Parquet path, DataFrame written to the cache", "df", "parquet", True, {}),
    ("direct", "Parquet path, a Parquet scan read from its own files", "files", "parquet", True, {}),
    ("direct_decode", "own files, feed_local_cache=0 (decoded every epoch)", "files", "parquet", True,
     {"TFOS_FEED_LOCAL_CACHE": "0"}),
    ("direct_rows", "own files, single rows: feed.dataset().batch(256)", "files", "parquet", False, {}),
]


def write_report(args, runs, cpu) -> None:
    med = {k: statistics.median(v) for k, v in runs.items()}
    lines = [
        "# Feed throughput into TF (InputMode.SPARK)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"date {time.strftime('%Y-%m-%d')}. Rows of {FEATURES} float32 + int64 label ({ROW_BYTES} bytes), "
        f"batch {BATCH}; tfos: {args.rows} rows x {args.epochs} epochs into 2 TF nodes on local-cluster[2,1,2048], "
        f"each node reading feed.dataset(label=..., batch_size={BATCH}) unless the row says otherwise; "
        f"median of {args.repeats} alternating runs. Produced by `bench/feed_throughput.py`.",
        "",
        "| path | rows/s (median) | MB/s | min | max | vs ceiling | vs queue | vs spark alone |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [("ceiling", "ceiling: from_tensor_slices, one process"),
            ("queue", "TFoS-style queue, one record at a time"),
            ("spark_alone", "spark alone: mapInArrow, batches dropped")]
    for name, label, *_ in VARIANTS:
        rows += [(f"{name}_nodes", f"tfos, {label}: rate received by the TF nodes"),
                 (f"{name}_together", f"tfos, {label}: the nodes together (first batch of any to last of any)"),
                 (f"{name}_end_to_end", f"tfos, {label}: whole train() call")]
    for key, label in rows:
        v = runs[key]
        lines.append(f"| {label} | {med[key]:,.0f} | {med[key] * ROW_BYTES / 1e6:,.1f} | {min(v):,.0f} | "
                     f"{max(v):,.0f} | {med[key] / med['ceiling']:.1%} | {med[key] / med['queue']:,.1f}x | "
                     f"{med[key] / med['spark_alone']:.0%} |")
    for name, what, *_ in VARIANTS[1:3]:
        nodes, whole = med[f"{name}_nodes"], med[f"{name}_end_to_end"]
        goals = [("nodes receive at least 80% of the ceiling", nodes / med["ceiling"] >= 0.8,
                  f"{nodes / med['ceiling']:.0%}"),
                 (f"a whole {args.epochs}-epoch train() at least 50% of the ceiling", whole / med["ceiling"] >= 0.5,
                  f"{whole / med['ceiling']:.0%}"),
                 ("at least 100x the per-record queue (nodes)", nodes / med["queue"] >= 100,
                  f"{nodes / med['queue']:,.0f}x")]
        lines += ["", f"Goals ({what}): " + "; ".join(f"{text}: {got}, {'met' if ok else 'MISSED'}"
                                                     for text, ok, got in goals) + "."]
    lines += ["",
              f"CPU seconds per process class during one whole train() call ({args.epochs} epochs, median of "
              f"{args.repeats}):", "",
              "| path | wall s | " + " | ".join(CPU_CLASSES) + " |", "|---|---|" + "---|" * len(CPU_CLASSES)]
    for path, used in cpu.items():
        if used:
            cells = [statistics.median(u[k] for u in used) for k in ("wall", *CPU_CLASSES)]
            lines.append(f"| {path} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    _results.save(args.out, lines, runs)
    plot(runs, os.path.splitext(args.out)[0] + ".png")


def plot(runs: dict[str, list[float]], path: str) -> None:
    """Medians (bars) and min-max (whiskers) of every tfos variant's two rates, against the ceiling and the queue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, *_ in VARIANTS]
    labels = [label for _, label, *_ in VARIANTS]
    fig, ax = plt.subplots(figsize=(10, 0.9 * len(names) + 1.5))
    kinds = (("nodes", "tab:blue", "rate received by the TF nodes (summed)"),
             ("together", "tab:green", "the nodes together"), ("end_to_end", "tab:orange", "whole train() call"))
    for k, (kind, color, label) in enumerate(kinds):
        values = [runs[f"{name}_{kind}"] for name in names]
        med = [statistics.median(v) for v in values]
        err = [[m - min(v) for m, v in zip(med, values)], [max(v) - m for m, v in zip(med, values)]]
        ax.barh([i + (k - 1) * 0.27 for i in range(len(names))], med, height=0.27, xerr=err, color=color,
                label=label)
    for key, style in (("ceiling", "--"), ("queue", ":")):
        ax.axvline(statistics.median(runs[key]), color="black", linestyle=style,
                   label={"ceiling": "ceiling (from_tensor_slices, one process)",
                          "queue": "TFoS-style queue"}[key])
    ax.set_yticks(range(len(names)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("rows/s (784 float32 + label), median of the runs; whiskers: min-max")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
