"""Batch scoring of MNIST TFRecords with a SavedModel, as independent TF instances (TFParallel).

``TFParallel.run(sc, inference_fn, args, N)`` starts N single-node TF instances, one per executor. Instance
``i`` takes every N-th TFRecord file (files ``i, i+N, ...``), loads the SavedModel once, scores its records
with ``tf.data`` and writes ``label,prediction`` lines to ``--output/part-0000i.csv``; it returns its counts,
which the driver sums into the accuracy. No TF cluster is formed: the instances never talk to each other.

The SavedModel must take a flat 784-float ``image`` (0..1) and return 10 logits, as the one
``mnist_pipeline.py`` exports. Run it from the repository's root after ``mnist_data_setup.py`` and
``mnist_pipeline.py`` (see that script), on a throwaway two-worker standalone cluster::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python SPARK_LOCAL_IP=127.0.0.1
    .venv/bin/python -m tfos.standalone run --workers 2 --cores 1 --memory 2g -- \\
        .venv/bin/spark-submit --master {MASTER} --conf spark.cores.max=2 --conf spark.task.cpus=1 \\
        --conf spark.driver.host=127.0.0.1 \\
        examples/mnist/mnist_inference.py --images_labels data/mnist/tfr/test \\
        --export_dir work/mnist_pipeline/export --output work/mnist_inference/predictions

It prints one line per instance and ``Test accuracy: 0.92xx (360 rows scored by 2 TFParallel instances; ...)``:
the accuracy ``mnist_pipeline.py`` printed, from the same model on the same rows. TFRecords are read with
``tf.data.TFRecordDataset`` from paths every executor can see (one host, or a shared file system).
"""

import argparse
import os

from pyspark.sql import SparkSession

from tfos import TFParallel


def inference_fn(args, ctx):
    """Runs once per instance, in its own Python process: scores this instance's share of the files."""
    import glob

    import numpy as np
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(args.images_labels, "part-*")))[ctx.worker_num::ctx.num_workers]
    if not files:
        return {"instance": ctx.worker_num, "files": 0, "rows": 0, "correct": 0}
    model = tf.saved_model.load(args.export_dir)
    predict = model.signatures["serving_default"]
    spec = {"image": tf.io.FixedLenFeature([784], tf.int64), "label": tf.io.FixedLenFeature([], tf.int64)}
    ds = (tf.data.TFRecordDataset(files)
          .batch(args.batch_size)
          .map(lambda records: tf.io.parse_example(records, spec)))
    rows = correct = 0
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, f"part-{ctx.worker_num:05d}.csv"), "w") as out:
        for batch in ds:
            images = tf.cast(batch["image"], tf.float32) / 255.0
            logits = predict(image=images)["logits"].numpy()
            labels = batch["label"].numpy()
            predictions = np.argmax(logits, axis=1)
            out.writelines(f"{label},{prediction}\n" for label, prediction in zip(labels, predictions))
            rows += len(labels)
            correct += int((predictions == labels).sum())
    return {"instance": ctx.worker_num, "files": len(files), "rows": rows, "correct": correct}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images_labels", default="data/mnist/tfr/test", help="directory of TFRecord files")
    parser.add_argument("--export_dir", default="mnist_pipeline_export", help="the SavedModel to score with")
    parser.add_argument("--output", default="mnist_predictions", help="directory for the label,prediction files")
    parser.add_argument("--cluster_size", type=int, default=2, help="number of TF instances (one per executor)")
    parser.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args(argv)
    for name in ("images_labels", "export_dir", "output"):
        setattr(args, name, os.path.abspath(getattr(args, name)))
    return args


def main(argv=None):
    """Scores the files on ``--cluster_size`` instances; returns the per-instance counts."""
    args = parse_args(argv)
    sc = SparkSession.builder.appName("mnist_inference").getOrCreate().sparkContext
    counts = TFParallel.run(sc, inference_fn, args, args.cluster_size)
    for c in counts:
        print(f"instance {c['instance']}: {c['files']} files, {c['rows']} rows, {c['correct']} correct")
    rows = sum(c["rows"] for c in counts)
    correct = sum(c["correct"] for c in counts)
    print(f"Test accuracy: {correct / max(rows, 1):.4f} ({rows} rows scored by {len(counts)} TFParallel instances; "
          f"predictions in {args.output})")
    return counts


if __name__ == "__main__":
    main()
    SparkSession.builder.getOrCreate().stop()
