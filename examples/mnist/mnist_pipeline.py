"""MNIST as a Spark ML Pipeline: TFEstimator trains on a TF cluster, TFModel scores the test DataFrame.

1. Spark reads the ``label,p0..p783`` CSV files (from ``mnist_data_setup.py``) into a DataFrame of ``image``
   (array<float>, 0..1) and ``label``.
2. ``Pipeline([TFEstimator(train_fn, args)]).fit(train_df)`` starts a TF cluster of ``--cluster_size`` nodes,
   feeds it the ``image`` and ``label`` columns (InputMode.SPARK), and ``train_fn`` trains a Keras CNN with
   MultiWorkerMirroredStrategy and exports a SavedModel to ``--export_dir``.
3. The fitted ``PipelineModel`` (its ``TFModel`` maps column ``image`` to the SavedModel's input ``image`` and
   its output ``logits`` to a ``logits`` column) scores the test DataFrame on the executors, Arrow batch by
   Arrow batch, with no TF cluster; Spark SQL takes the argmax and the driver prints the accuracy.
4. The fitted pipeline is saved to ``--pipeline_dir`` and loaded back (it records the SavedModel's path).

Run it from the repository's root, on a throwaway two-worker standalone cluster (``tfos.standalone`` starts it,
puts its URL in place of ``{MASTER}`` and stops it afterwards)::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python SPARK_LOCAL_IP=127.0.0.1
    .venv/bin/python examples/mnist/mnist_data_setup.py --output data/mnist
    .venv/bin/python -m tfos.standalone run --workers 2 --cores 1 --memory 2g -- \\
        .venv/bin/spark-submit --master {MASTER} --conf spark.cores.max=2 --conf spark.task.cpus=1 \\
        --conf spark.driver.host=127.0.0.1 \\
        examples/mnist/mnist_pipeline.py --csv data/mnist/csv --export_dir work/mnist_pipeline/export \\
        --pipeline_dir work/mnist_pipeline/pipeline

It prints a line like ``Test accuracy: 0.92xx (360 rows scored by TFModel.transform)`` (with the scikit-learn
fallback data of ``mnist_data_setup.py``) and the reloaded pipeline's accuracy, the same. Paths are made
absolute on the driver; executors must see them (one host, or a shared file system).
"""

import argparse
import os

from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from tfos.pipeline import TFEstimator


def train_fn(args, ctx):
    """Runs on every TF node; ``args`` holds the script's arguments merged with the estimator's params."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed(train_mode=True)
    # Columns arrive sorted by name (image, label), as TensorFlowOnSpark fed them.
    ds = feed.dataset(label="label").batch(args.batch_size * ctx.num_workers)
    with strategy.scope():
        model = tf.keras.Sequential([
            tf.keras.Input(shape=(784,), name="image"),  # the SavedModel's input name: TFModel maps a column to it
            tf.keras.layers.Reshape((28, 28, 1)),
            tf.keras.layers.Conv2D(16, 3, activation="relu"),
            tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10, name="logits"),
        ])
        model.compile(optimizer=tf.keras.optimizers.Adam(args.learning_rate), metrics=["accuracy"],
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds, epochs=args.epochs, verbose=2)
    ctx.export_saved_model(model, args.export_dir)  # every worker takes part; the chief's copy is kept


def read_mnist_csv(spark, path, partitions):
    """``label,p0,...,p783`` rows -> DataFrame(image array<float> in 0..1, label long)."""
    pixels = [f"p{i}" for i in range(784)]
    schema = ", ".join(["label long"] + [f"{p} float" for p in pixels])
    df = spark.read.csv(path, schema=schema)
    image = F.array(*[F.col(p) / 255.0 for p in pixels]).cast("array<float>")
    return df.select(image.alias("image"), "label").repartition(partitions)


def accuracy(scored):
    """The share of rows whose argmax of ``logits`` equals ``label``."""
    predicted = F.expr("array_position(logits, array_max(logits)) - 1")
    row = scored.select(F.avg((predicted == F.col("label")).cast("double")).alias("acc"), F.count("*").alias("n")).first()
    return row.acc, row.n


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", default="data/mnist/csv", help="directory holding train/ and test/ CSV files")
    parser.add_argument("--cluster_size", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=64, help="batch size per worker")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning_rate", type=float, default=0.003)
    parser.add_argument("--export_dir", default="mnist_pipeline_export")
    parser.add_argument("--pipeline_dir", default="mnist_pipeline_model", help="where the fitted pipeline is saved")
    args = parser.parse_args(argv)
    for name in ("csv", "export_dir", "pipeline_dir"):
        setattr(args, name, os.path.abspath(getattr(args, name)))
    return args


def main(argv=None):
    """Trains, scores, saves and reloads the pipeline; returns the test accuracy."""
    args = parse_args(argv)
    spark = SparkSession.builder.appName("mnist_pipeline").getOrCreate()
    train_df = read_mnist_csv(spark, os.path.join(args.csv, "train"), args.cluster_size * 2)
    test_df = read_mnist_csv(spark, os.path.join(args.csv, "test"), args.cluster_size * 2)

    estimator = (TFEstimator(train_fn, args)
                 .setInputMapping({"image": "image", "label": "label"})
                 .setOutputMapping({"logits": "logits"})
                 .setClusterSize(args.cluster_size)
                 .setEpochs(args.epochs)
                 .setBatchSize(args.batch_size)
                 .setExportDir(args.export_dir))
    model = Pipeline(stages=[estimator]).fit(train_df)
    acc, rows = accuracy(model.transform(test_df))
    print(f"Test accuracy: {acc:.4f} ({rows} rows scored by TFModel.transform)")

    model.write().overwrite().save(args.pipeline_dir)
    reloaded = PipelineModel.load(args.pipeline_dir)
    acc_again, _ = accuracy(reloaded.transform(test_df))
    print(f"Reloaded pipeline from {args.pipeline_dir} (SavedModel {reloaded.stages[0].getExportDir()}): "
          f"accuracy {acc_again:.4f}")
    return acc


if __name__ == "__main__":
    main()
    SparkSession.builder.getOrCreate().stop()
