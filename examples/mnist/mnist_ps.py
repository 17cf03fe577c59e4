"""MNIST with ParameterServerStrategy (asynchronous training) on Spark executors, InputMode.TENSORFLOW.

The program in ``main_fun`` is TensorFlow's own parameter-server recipe, unchanged: ``ps`` and ``worker``
nodes start a ``tf.distribute.Server`` and ``join()`` it forever; the ``chief`` is the coordinator: it builds
the model under ``ParameterServerStrategy`` (variables live on the ps nodes), and ``model.fit`` dispatches
steps to the workers, which read the TFRecords through ``dataset_fn``. tfos starts the nodes with
``num_ps`` ps nodes and ``master_node="chief"``; when the chief returns, ``cluster.shutdown()`` stops the
ps and worker nodes (still in ``server.join()``), so nothing is left running. The chief exports a
SavedModel, which the driver then scores on the test TFRecords.

This is what Elephas's asynchronous/hogwild modes and dist-keras's DOWNPOUR/ADAG trainers did.

Run it from the repository's root (after ``mnist_data_setup.py``) on a throwaway four-worker standalone
cluster, one executor per node (1 ps, the chief and 2 workers)::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python SPARK_LOCAL_IP=127.0.0.1
    .venv/bin/python examples/mnist/mnist_data_setup.py --output data/mnist
    .venv/bin/python -m tfos.standalone run --workers 4 --cores 1 --memory 1g -- \\
        .venv/bin/spark-submit --master {MASTER} --conf spark.cores.max=4 --conf spark.task.cpus=1 \\
        --conf spark.driver.host=127.0.0.1 \\
        examples/mnist/mnist_ps.py --cluster_size 4 --num_ps 1 --images_labels data/mnist/tfr \\
        --export_dir work/mnist_ps/export

It ends with a line like ``Test accuracy: 0.95xx (360 test rows)`` (3 epochs of 50 asynchronous steps, with
the scikit-learn fallback data of ``mnist_data_setup.py``).

``--driver_ps_nodes`` runs the ps nodes on the driver instead (for testing on fewer executors).
"""

import os

# The driver loads the exported model with TensorFlow too; tf.keras must be tf-keras there as on the nodes.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse

from pyspark.sql import SparkSession

from tfos import TFCluster


def parse_example(record):
    """A serialized tf.train.Example -> (784 float32 pixels in [0, 1], int64 label)."""
    import tensorflow as tf

    features = tf.io.parse_single_example(record, {
        "image": tf.io.FixedLenFeature([784], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
    })
    return tf.cast(features["image"], tf.float32) / 255.0, features["label"]


def main_fun(args, ctx):
    """TensorFlow's parameter-server program; tfos has set TF_CONFIG for this node's role."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type in ("worker", "ps"):
        server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                      task_index=resolver.task_id, protocol=resolver.rpc_layer or "grpc",
                                      start=True)
        server.join()  # until tfos stops this node, once the chief is done
        return

    strategy = tf.distribute.ParameterServerStrategy(resolver)
    train_pattern = os.path.join(args.images_labels, "train", "part-*")

    def dataset_fn(input_context):
        batch = input_context.get_per_replica_batch_size(args.batch_size)
        return (tf.data.Dataset.list_files(train_pattern, shuffle=False)
                .shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
                .interleave(tf.data.TFRecordDataset)
                .map(parse_example)
                .shuffle(1024)
                .repeat()
                .batch(batch)
                .prefetch(2))

    with strategy.scope():
        model = tf.keras.Sequential([
            tf.keras.Input(shape=(784,), name="image"),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(10, name="logits"),
        ])
        model.compile(optimizer=tf.keras.optimizers.Adam(args.learning_rate), steps_per_execution=5,
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(tf.keras.utils.experimental.DatasetCreator(dataset_fn), epochs=args.epochs,
              steps_per_epoch=args.steps_per_epoch, verbose=2)
    print(f"chief: {int(model.optimizer.iterations.numpy())} steps run by {ctx.num_workers - 1} workers")
    model.save(args.export_dir)


def test_accuracy(export_dir, test_dir):
    """Scores the test TFRecords with the exported SavedModel on the driver."""
    import numpy as np
    import tensorflow as tf

    predict = tf.saved_model.load(export_dir).signatures["serving_default"]
    correct = rows = 0
    for images, labels in tf.data.TFRecordDataset(tf.io.gfile.glob(os.path.join(test_dir, "part-*"))) \
            .map(parse_example).batch(512):
        predictions = np.argmax(predict(image=images)["logits"].numpy(), axis=1)
        correct += int((predictions == labels.numpy()).sum())
        rows += len(predictions)
    return correct / max(rows, 1), rows


def main(argv=None):
    """Trains with ParameterServerStrategy, then scores the export; returns the test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images_labels", default="data/mnist/tfr", help="directory holding train/ and test/")
    parser.add_argument("--cluster_size", type=int, default=4, help="TF nodes: num_ps ps + chief + workers")
    parser.add_argument("--num_ps", type=int, default=1)
    parser.add_argument("--driver_ps_nodes", action="store_true", help="run the ps nodes on the driver (testing)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps_per_epoch", type=int, default=50)
    parser.add_argument("--learning_rate", type=float, default=0.003)
    parser.add_argument("--export_dir", default="mnist_ps_export")
    args = parser.parse_args(argv)
    args.images_labels = os.path.abspath(args.images_labels)
    args.export_dir = os.path.abspath(args.export_dir)
    if args.num_ps < 1 or args.cluster_size < args.num_ps + 2:
        parser.error("ParameterServerStrategy needs --num_ps >= 1 and --cluster_size >= num_ps + 2 (chief + worker)")

    sc = SparkSession.builder.appName("mnist_ps").getOrCreate().sparkContext
    cluster = TFCluster.run(sc, main_fun, args, args.cluster_size, num_ps=args.num_ps, master_node="chief",
                            driver_ps_nodes=args.driver_ps_nodes)
    cluster.shutdown()  # returns once the chief is done; the ps and worker servers are stopped
    accuracy, rows = test_accuracy(args.export_dir, os.path.join(args.images_labels, "test"))
    print(f"Test accuracy: {accuracy:.4f} ({rows} test rows)")
    return accuracy


if __name__ == "__main__":
    main()
    SparkSession.builder.getOrCreate().stop()
