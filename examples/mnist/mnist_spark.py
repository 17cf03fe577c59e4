"""MNIST with InputMode.SPARK: Spark reads the CSV into a DataFrame and feeds it to the TF nodes.

1. Spark reads ``label,p0..p783`` CSV rows into a DataFrame of ``image`` (array<float>, scaled to 0..1) and
   ``label``.
2. ``cluster.train(df, num_epochs)`` streams it as Arrow batches to two TF nodes, which train a Keras CNN with
   MultiWorkerMirroredStrategy on ``feed.dataset()``; the chief exports a SavedModel.
3. A second cluster scores the test DataFrame with ``cluster.inference`` (each node loads the SavedModel once
   and answers ``feed.next_batch`` with ``feed.batch_results``) and the driver prints the accuracy.

Run it (after ``python examples/mnist/mnist_data_setup.py --output data/mnist``) with::

    python -m tfos.standalone run --workers 2 --cores 1 --memory 2g -- \\
        spark-submit --master {MASTER} --conf spark.cores.max=2 --conf spark.task.cpus=1 \\
        examples/mnist/mnist_spark.py --csv $PWD/data/mnist/csv --export_dir $PWD/work/mnist_spark/export
"""

import argparse
import os

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from tfos import TFCluster


def train_fun(args, ctx):
    """Runs on every TF node: trains on the rows Spark feeds to this node."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed(train_mode=True)
    # One epoch per iteration; every node gets the same number of rows (tfos's equal-rows policy),
    # so model.fit takes the same number of steps on both workers.
    ds = (feed.dataset(label="label")
          .map(lambda image, label: (tf.reshape(image, [28, 28, 1]), label))
          .batch(args.batch_size * ctx.num_workers))
    with strategy.scope():
        model = tf.keras.Sequential([
            tf.keras.Input(shape=(28, 28, 1)),
            tf.keras.layers.Conv2D(32, 3, activation="relu"),
            tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10),
        ])
        model.compile(optimizer=tf.keras.optimizers.Adam(args.learning_rate), metrics=["accuracy"],
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds, epochs=args.epochs, verbose=2)
    ctx.export_saved_model(model, args.export_dir)  # every worker takes part; the chief's copy is kept


def inference_fun(args, ctx):
    """Runs on every TF node: loads the SavedModel once, then scores partitions as they come."""
    import numpy as np
    import tensorflow as tf

    model = tf.keras.models.load_model(args.export_dir)
    feed = ctx.get_data_feed(train_mode=False)
    while not feed.should_stop():
        rows = feed.next_batch(512)
        if rows:
            images = np.asarray([row.image for row in rows], dtype="float32").reshape(-1, 28, 28, 1)
            predictions = np.argmax(model.predict_on_batch(images), axis=1)
            feed.batch_results([(row.label, int(p)) for row, p in zip(rows, predictions)])


def read_mnist_csv(spark, path, partitions):
    """``label,p0,...,p783`` rows -> DataFrame(image array<float> in 0..1, label long)."""
    pixels = [f"p{i}" for i in range(784)]
    schema = ", ".join(["label long"] + [f"{p} float" for p in pixels])
    df = spark.read.csv(path, schema=schema)
    image = F.array(*[F.col(p) / 255.0 for p in pixels]).cast("array<float>")
    return df.select(image.alias("image"), "label").repartition(partitions)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", default="data/mnist/csv", help="directory holding train/ and test/ CSV files")
    parser.add_argument("--cluster_size", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=64, help="batch size per worker")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning_rate", type=float, default=0.003)
    parser.add_argument("--export_dir", default="mnist_spark_export")
    args = parser.parse_args()
    args.csv = os.path.abspath(args.csv)
    args.export_dir = os.path.abspath(args.export_dir)

    spark = SparkSession.builder.appName("mnist_spark").getOrCreate()
    sc = spark.sparkContext
    train_df = read_mnist_csv(spark, os.path.join(args.csv, "train"), args.cluster_size * 2).cache()
    test_df = read_mnist_csv(spark, os.path.join(args.csv, "test"), args.cluster_size * 2).cache()
    print(f"training rows: {train_df.count()}, test rows: {test_df.count()}")

    cluster = TFCluster.run(sc, train_fun, args, args.cluster_size, input_mode=TFCluster.InputMode.SPARK,
                            master_node="chief")
    cluster.train(train_df, num_epochs=args.epochs)
    cluster.shutdown()

    cluster = TFCluster.run(sc, inference_fun, args, args.cluster_size, input_mode=TFCluster.InputMode.SPARK)
    scored = cluster.inference(test_df, schema="label long, prediction long").cache()
    total = scored.count()
    correct = scored.filter(F.col("label") == F.col("prediction")).count()
    cluster.shutdown()
    print(f"Test accuracy: {correct / total:.4f} ({total} rows scored by tfos inference)")
    spark.stop()


if __name__ == "__main__":
    main()
