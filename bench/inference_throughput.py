"""Inference throughput on one SavedModel: tfos against pyspark's predict_batch_udf and a one-process ceiling.

The model is a small Keras MLP (784 -> 128 -> 10) exported as a SavedModel; the data is a cached DataFrame of
784-float rows on ``local-cluster[2,1,2048]``. Each variant scores every row and writes the predictions to
Spark's ``noop`` sink (so nothing is skipped), timed end to end:

- ceiling: the SavedModel's signature called in one process on numpy batches of 1,024 rows (no Spark).
- predict_batch_udf: ``pyspark.ml.functions.predict_batch_udf`` (batch size 1,024) with a make_predict_fn that
  loads the SavedModel.
- tfos.scoring: ``tfos.scoring.predict_saved_model`` (one signature call per Arrow batch, model loaded once per
  Python worker).
- tfos cluster.inference: a 2-node InputMode.SPARK cluster whose nodes load the model and answer
  ``feed.next_batch`` with ``feed.batch_results`` (TensorFlowOnSpark's inference path), and the same with
  tfos's array path (``feed.next_arrays`` in, a numpy array of results out).

Run: ``.venv/bin/python bench/inference_throughput.py [--rows 40000] [--repeats 3]``; writes
``bench/results/inference_throughput.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

import _results  # bench/_results.py (the script's own directory is on sys.path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
FEATURES = 784

MAKE_MODEL = textwrap.dedent("""
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    model = tf.keras.Sequential([tf.keras.Input(shape=(784,)), tf.keras.layers.Dense(128, activation="relu"),
                                 tf.keras.layers.Dense(10)])
    model.save(sys.argv[1])
""")


def ceiling(export_dir: str, x: np.ndarray) -> float:
    import tensorflow as tf

    fn = tf.saved_model.load(export_dir).signatures["serving_default"]
    (name, _), = fn.structured_input_signature[1].items()
    start = time.perf_counter()
    for i in range(0, len(x), 1024):
        fn(**{name: tf.constant(x[i:i + 1024])})
    return len(x) / (time.perf_counter() - start)


def _make_predict_fn(export_dir):
    def make():
        import tensorflow as tf

        fn = tf.saved_model.load(export_dir).signatures["serving_default"]
        (name, _), = fn.structured_input_signature[1].items()

        def predict(inputs):
            out = fn(**{name: tf.constant(inputs)})
            return list(out.values())[0].numpy()

        return predict

    return make


def batch_udf(df, export_dir: str) -> None:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    udf = predict_batch_udf(_make_predict_fn(export_dir), return_type=ArrayType(FloatType()), batch_size=1024,
                            input_tensor_shapes=[[FEATURES]])
    df.select(udf("features").alias("p")).write.format("noop").mode("overwrite").save()


def tfos_scoring(df, export_dir: str) -> None:
    from tfos.scoring import predict_saved_model

    predict_saved_model(df, export_dir, "features").select("prediction").write.format("noop").mode(
        "overwrite").save()


def score_nodes(args, ctx):
    import numpy as np
    import tensorflow as tf

    fn = tf.saved_model.load(args["export_dir"]).signatures["serving_default"]
    (name, _), = fn.structured_input_signature[1].items()
    feed = ctx.get_data_feed(train_mode=False)
    while not feed.should_stop():
        if args["arrays"]:  # tfos's array path: no Python object per row either way
            cols = feed.next_arrays(1024)
            if cols:
                y = list(fn(**{name: tf.constant(cols["features"])}).values())[0].numpy()
                feed.batch_results(y)
            continue
        rows = feed.next_batch(1024)  # TensorFlowOnSpark's loop: rows in, one result per row out
        if rows:
            x = np.asarray([row.features for row in rows], dtype=np.float32)
            y = list(fn(**{name: tf.constant(x)}).values())[0].numpy()
            feed.batch_results([(r.tolist(),) for r in y])


def tfos_cluster(spark, df, export_dir: str, arrays: bool) -> float:
    import cloudpickle

    from tfos import TFCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = TFCluster.run(spark.sparkContext, score_nodes, {"export_dir": export_dir, "arrays": arrays}, 2,
                            input_mode=TFCluster.InputMode.SPARK)
    time.sleep(15)  # let both nodes import TensorFlow and load the model before the clock starts
    start = time.perf_counter()
    cluster.inference(df, schema="p array<float>").write.format("noop").mode("overwrite").save()
    elapsed = time.perf_counter() - start
    cluster.shutdown(timeout=300)
    return elapsed


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "inference_throughput.md"))
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    export_dir = os.path.join(tempfile.mkdtemp(prefix="tfos-bench-model-"), "model")
    subprocess.run([sys.executable, "-c", MAKE_MODEL, export_dir], check=True)

    import pandas as pd
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local-cluster[2,1,2048]").appName("tfos-bench-inference")
             .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    x = np.random.default_rng(0).random((args.rows, FEATURES), dtype=np.float32)
    df = spark.createDataFrame(pd.DataFrame({"features": list(x)}), "features array<float>").repartition(4).cache()
    df.count()
    # Warm-up: the first job of each kind starts Python workers and loads TensorFlow in them.
    batch_udf(df.limit(2048), export_dir)
    tfos_scoring(df.limit(2048), export_dir)
    runs = {"ceiling": [], "predict_batch_udf": [], "tfos_scoring": [], "tfos_cluster_inference": [],
            "tfos_cluster_inference_arrays": []}
    for i in range(args.repeats):
        runs["ceiling"].append(ceiling(export_dir, x))
        runs["predict_batch_udf"].append(args.rows / timed(batch_udf, df, export_dir))
        runs["tfos_scoring"].append(args.rows / timed(tfos_scoring, df, export_dir))
        runs["tfos_cluster_inference"].append(args.rows / tfos_cluster(spark, df, export_dir, False))
        runs["tfos_cluster_inference_arrays"].append(args.rows / tfos_cluster(spark, df, export_dir, True))
        print(f"run {i + 1}: " + ", ".join(f"{k}={v[-1]:,.0f} rows/s" for k, v in runs.items()), flush=True)
    spark.stop()
    write_report(args, runs)


def write_report(args, runs) -> None:
    med = {k: statistics.median(v) for k, v in runs.items()}
    base = med["predict_batch_udf"]
    lines = [
        "# Inference throughput on one SavedModel",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; date "
        f"{time.strftime('%Y-%m-%d')}. {args.rows} rows of {FEATURES} float32, MLP 784-128-10 SavedModel, "
        f"cached DataFrame on local-cluster[2,1,2048], results written to the noop sink; median of "
        f"{args.repeats} alternating runs after a warm-up. Produced by `bench/inference_throughput.py`.",
        "",
        "| path | rows/s (median) | min | max | vs predict_batch_udf | vs ceiling |",
        "|---|---|---|---|---|---|",
    ]
    labels = {"ceiling": "ceiling: SavedModel in one process, no Spark",
              "predict_batch_udf": "pyspark predict_batch_udf",
              "tfos_scoring": "tfos.scoring.predict_saved_model",
              "tfos_cluster_inference": "tfos cluster.inference (2 TF nodes, TFoS-style next_batch loop)",
              "tfos_cluster_inference_arrays": "tfos cluster.inference (2 TF nodes, next_arrays + array results)"}
    for key, label in labels.items():
        v = runs[key]
        lines.append(f"| {label} | {med[key]:,.0f} | {min(v):,.0f} | {max(v):,.0f} | {med[key] / base:.2f}x | "
                     f"{med[key] / med['ceiling']:.1%} |")
    _results.save(args.out, lines, runs)


if __name__ == "__main__":
    main()
