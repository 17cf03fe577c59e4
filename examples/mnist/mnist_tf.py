"""Distributed MNIST training on Spark with tfos, InputMode.TENSORFLOW.

Each TF node reads its own share of the TFRecords written by mnist_data_setup.py and trains a small CNN with
MultiWorkerMirroredStrategy. The chief exports a SavedModel, which the driver then scores on the test set.

    spark-submit --master spark://HOST:7077 examples/mnist/mnist_tf.py --cluster_size 2 \
        --images_labels data/mnist/tfr --model_dir mnist_model --export_dir mnist_export

Paths may be local, s3:// (s3a://) or hdfs://. For S3, give Spark's usual S3A settings; tfos hands them to the TF
nodes (the model directory is mirrored from a local one, the SavedModel uploaded when complete):

    spark-submit ... --conf spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:8333 \
        --conf spark.hadoop.fs.s3a.access.key=... --conf spark.hadoop.fs.s3a.secret.key=... \
        examples/mnist/mnist_tf.py --images_labels s3a://bucket/mnist/tfr \
        --model_dir s3a://bucket/mnist_model --export_dir s3a://bucket/mnist_export
"""

import os

# tf.keras must be tf-keras (Keras 2) for MultiWorkerMirroredStrategy + model.fit. tfos sets this on the TF
# nodes; the driver sets it here, before anything imports TensorFlow, to load the exported model.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse
import json


def parse_example(record):
    """A serialized tf.train.Example -> (28x28x1 float32 image in [0, 1], int64 label)."""
    import tensorflow as tf

    features = tf.io.parse_single_example(record, {
        "image": tf.io.FixedLenFeature([784], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
    })
    image = tf.reshape(tf.cast(features["image"], tf.float32) / 255.0, [28, 28, 1])
    return image, features["label"]


def main_fun(args, ctx):
    """Runs on every TF node, in its own Python process, with TF_CONFIG already set by tfos."""
    import shutil
    import tempfile

    import tensorflow as tf

    import tfos.data
    import tfos.fs

    # Create the strategy before any other TF op: it starts this node's TF server and joins the cluster.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    global_batch = args.batch_size * strategy.num_replicas_in_sync  # one replica per worker on CPU

    # --- Input: tfos.data shards the TFRecords between the workers (by file) and streams remote ones. ---
    train_files = ctx.absolute_path(args.images_labels) + "/train/part-*"  # local, s3://, hdfs://, ...
    steps_per_epoch = args.steps_per_epoch
    if not steps_per_epoch:  # one pass over the training data per epoch (the same number on every worker)
        all_records = tfos.data.tfrecord_dataset(train_files, shard=False)
        num_records = int(all_records.reduce(0, lambda n, _: n + 1))
        steps_per_epoch = max(1, num_records // global_batch)
        print(f"{num_records} training records, global batch {global_batch}: {steps_per_epoch} steps per epoch")
    if args.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, args.max_steps_per_epoch)

    ds = (tfos.data.tfrecord_dataset(train_files)  # this worker's share
          .map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)
          .shuffle(10_000, seed=42)
          .repeat()
          .batch(global_batch)  # the GLOBAL batch: tf.distribute splits it between the workers
          .prefetch(tf.data.AUTOTUNE))

    # --- Model: variables must be created inside the strategy's scope to be mirrored. ---
    with strategy.scope():
        model = tf.keras.Sequential([
            tf.keras.Input(shape=(28, 28, 1)),
            tf.keras.layers.Conv2D(32, 3, activation="relu"),
            tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10),  # logits
        ])
        model.compile(optimizer=tf.keras.optimizers.Adam(args.learning_rate),
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])

    callbacks = []
    model_dir = ctx.absolute_path(args.model_dir) if args.model_dir else None
    synced = None
    remote_model_dir = bool(model_dir) and not tfos.fs.writable_by_tensorflow(model_dir)
    if remote_model_dir:
        # TensorFlow cannot write s3:// or hdfs://: the chief writes to a local directory that tfos mirrors
        # there (every 30 s and at the end); the other workers' checkpoint copies are thrown away anyway.
        synced = tfos.data.SyncedDir(model_dir).start() if ctx.is_chief else None
        model_dir = synced.path if synced else tempfile.mkdtemp(prefix="mnist-worker-")
    if model_dir:
        # Every worker runs the checkpoint callback (saving is a collective step); tf.keras keeps the chief's
        # files and writes the other workers' copies to temporary directories that it deletes.
        callbacks.append(tf.keras.callbacks.ModelCheckpoint(
            model_dir + "/checkpoints/weights-{epoch:02d}", save_weights_only=True))
        if ctx.is_chief:  # one set of TensorBoard logs, from the chief
            callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=model_dir))

    model.fit(ds, epochs=args.epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=2)
    if synced:
        synced.close()
    elif remote_model_dir:
        shutil.rmtree(model_dir, ignore_errors=True)

    # Evidence that this node trained: its count of optimizer steps (the same on every worker).
    steps = int(model.optimizer.iterations.numpy())
    print(f"worker {ctx.worker_num} ({ctx.job_name}:{ctx.task_index}) finished {steps} steps", flush=True)
    if model_dir and not remote_model_dir:
        local_dir = model_dir[len("file://"):] if model_dir.startswith("file://") else model_dir
        os.makedirs(local_dir, exist_ok=True)
        with open(os.path.join(local_dir, f"steps_{ctx.worker_num}.json"), "w") as f:
            json.dump({"worker_num": ctx.worker_num, "job_name": ctx.job_name, "steps": steps}, f)

    # All workers must call this (saving runs collectives); only the chief's copy is kept.
    ctx.export_saved_model(model, ctx.absolute_path(args.export_dir))


def evaluate(export_dir, test_dir, batch_size=256):
    """Scores the exported SavedModel on the test TFRecords (on the driver); returns (accuracy, rows)."""
    import tensorflow as tf

    import tempfile

    import tfos.data
    import tfos.fs

    if not tfos.fs.is_local(export_dir):  # s3://, hdfs://: fetch the SavedModel first
        local = tempfile.mkdtemp(prefix="mnist-export-")
        tfos.fs.download_tree(export_dir, local)
        export_dir = local
    model = tf.keras.models.load_model(export_dir, compile=False)
    ds = tfos.data.tfrecord_dataset(test_dir + "/part-*", shard=False).map(parse_example).batch(batch_size)
    correct = rows = 0
    for images, labels in ds:
        predictions = tf.argmax(model(images, training=False), axis=1)
        correct += int(tf.reduce_sum(tf.cast(predictions == labels, tf.int32)))
        rows += int(labels.shape[0])
    return correct / max(rows, 1), rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="MNIST training with tfos (InputMode.TENSORFLOW)")
    parser.add_argument("--cluster_size", type=int, default=None,
                        help="number of TF nodes (default: spark.executor.instances, else 2)")
    parser.add_argument("--images_labels", default="data/mnist/tfr",
                        help="directory with train/ and test/ TFRecords from mnist_data_setup.py")
    parser.add_argument("--batch_size", type=int, default=64, help="batch size per worker")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning_rate", type=float, default=0.003,
                        help="Adam's learning rate (a little high, so the small fallback data set learns in 3 epochs)")
    parser.add_argument("--steps_per_epoch", type=int, default=0,
                        help="default: one pass over the training records per epoch")
    parser.add_argument("--max_steps_per_epoch", type=int, default=0, help="cap on steps per epoch (0: none)")
    parser.add_argument("--model_dir", default="mnist_model", help="checkpoints and TensorBoard logs")
    parser.add_argument("--export_dir", default="mnist_export", help="where the chief exports the SavedModel")
    parser.add_argument("--tensorboard", action="store_true", help="run TensorBoard on the chief's executor")
    parser.add_argument("--master_node", default="chief",
                        help="TF job name of the first node: chief or master; 'none' makes every node a worker")
    args = parser.parse_args(argv)
    if args.master_node.lower() in ("", "none"):
        args.master_node = None
    return args


if __name__ == "__main__":
    from pyspark.sql import SparkSession

    from tfos import TFCluster, fs

    args = parse_args()
    spark = SparkSession.builder.appName("mnist_tf").getOrCreate()
    sc = spark.sparkContext
    if args.cluster_size is None:
        args.cluster_size = int(sc.getConf().get("spark.executor.instances", "2"))

    # Relative local paths mean "relative to where spark-submit ran": make them absolute for the driver
    # (the nodes resolve them the same way with ctx.absolute_path).
    default_fs = sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"
    for name in ("images_labels", "model_dir", "export_dir"):
        value = getattr(args, name)
        if value and "://" not in value and default_fs.startswith("file:"):
            setattr(args, name, os.path.abspath(value))
    print(f"args: {vars(args)}")
    # The driver reads the test data and the exported model too: give it Spark's S3A settings (if any).
    for key, value in fs.spark_env(sc).items():
        os.environ.setdefault(key, value)

    cluster = TFCluster.run(sc, main_fun, args, args.cluster_size, num_ps=0, tensorboard=args.tensorboard,
                            input_mode=TFCluster.InputMode.TENSORFLOW, log_dir=args.model_dir,
                            master_node=args.master_node)
    cluster.shutdown()  # waits for training to finish; raises if a node failed

    accuracy, rows = evaluate(args.export_dir, args.images_labels + "/test")
    print(f"Test accuracy: {accuracy:.4f} ({rows} rows evaluated)")
    spark.stop()
