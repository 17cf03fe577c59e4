"""TFModel.transform throughput: tfos's Spark ML model against pyspark's predict_batch_udf and a one-process ceiling.

The model is a small Keras MLP (784 -> 128 -> 10) exported as a SavedModel; the data is a cached DataFrame of
784-float rows on ``local-cluster[2,1,2048]``. Each variant scores every row and writes the predictions to
Spark's ``noop`` sink (so nothing is skipped), timed end to end:

- ceiling: the SavedModel's signature called in one process on numpy batches of 1,024 rows (no Spark).
- predict_batch_udf: ``pyspark.ml.functions.predict_batch_udf`` (batch size 1,024) with a make_predict_fn that
  loads the SavedModel.
- TFModel.transform: ``tfos.pipeline.TFModel`` with ``batch_size`` 1,024 (the same model calls as the UDF), and
  with TensorFlowOnSpark's default ``batch_size`` of 100.

Run: ``.venv/bin/python bench/transform_throughput.py [--rows 40000] [--repeats 3]``; writes
``bench/results/transform_throughput.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import _results  # bench/_results.py (the script's own directory is on sys.path)
from inference_throughput import FEATURES, MAKE_MODEL, batch_udf, ceiling

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tfmodel(df, export_dir: str, batch_size: int) -> None:
    from tfos.pipeline import TFModel

    model = (TFModel({}).setExportDir(export_dir).setBatchSize(batch_size)
             .setInputMapping({"features": "input_1"}).setOutputMapping({"dense_1": "p"}))
    model.transform(df).select("p").write.format("noop").mode("overwrite").save()


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "transform_throughput.md"))
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    export_dir = os.path.join(tempfile.mkdtemp(prefix="tfos-bench-model-"), "model")
    subprocess.run([sys.executable, "-c", MAKE_MODEL, export_dir], check=True)

    import pandas as pd
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local-cluster[2,1,2048]").appName("tfos-bench-transform")
             .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    x = np.random.default_rng(0).random((args.rows, FEATURES), dtype=np.float32)
    df = spark.createDataFrame(pd.DataFrame({"features": list(x)}), "features array<float>").repartition(4).cache()
    df.count()
    # Warm-up: the first job of each kind starts Python workers and loads TensorFlow in them.
    batch_udf(df.limit(2048), export_dir)
    tfmodel(df.limit(2048), export_dir, 1024)
    runs = {"ceiling": [], "predict_batch_udf": [], "tfmodel_transform_1024": [], "tfmodel_transform_100": []}
    for i in range(args.repeats):
        runs["ceiling"].append(ceiling(export_dir, x))
        runs["predict_batch_udf"].append(args.rows / timed(batch_udf, df, export_dir))
        runs["tfmodel_transform_1024"].append(args.rows / timed(tfmodel, df, export_dir, 1024))
        runs["tfmodel_transform_100"].append(args.rows / timed(tfmodel, df, export_dir, 100))
        print(f"run {i + 1}: " + ", ".join(f"{k}={v[-1]:,.0f} rows/s" for k, v in runs.items()), flush=True)
    spark.stop()
    write_report(args, runs)


def write_report(args, runs) -> None:
    med = {k: statistics.median(v) for k, v in runs.items()}
    base = med["predict_batch_udf"]
    lines = [
        "# TFModel.transform throughput on one SavedModel",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; date "
        f"{time.strftime('%Y-%m-%d')}; 1-minute load average at the end {os.getloadavg()[0]:.1f} (the benchmark's own Spark "
        f"executors and Python workers; nothing else ran). {args.rows} rows of {FEATURES} float32, MLP 784-128-10 SavedModel, cached DataFrame on "
        f"local-cluster[2,1,2048], predictions written to the noop sink; median of {args.repeats} alternating "
        f"runs after a warm-up. Produced by `bench/transform_throughput.py`.",
        "",
        "| path | rows/s (median) | min | max | vs predict_batch_udf | vs ceiling |",
        "|---|---|---|---|---|---|",
    ]
    labels = {"ceiling": "ceiling: SavedModel in one process, no Spark",
              "predict_batch_udf": "pyspark predict_batch_udf (batch 1,024)",
              "tfmodel_transform_1024": "tfos TFModel.transform (batch_size 1,024)",
              "tfmodel_transform_100": "tfos TFModel.transform (batch_size 100, TensorFlowOnSpark's default)"}
    for key, label in labels.items():
        v = runs[key]
        lines.append(f"| {label} | {med[key]:,.0f} | {min(v):,.0f} | {max(v):,.0f} | {med[key] / base:.2f}x | "
                     f"{med[key] / med['ceiling']:.1%} |")
    _results.save(args.out, lines, runs)


if __name__ == "__main__":
    main()
