"""main functions for the TFParallel, pipeline and ParameterServerStrategy tests (pickled by value, like
``nodefns``: executors cannot import tests/)."""

import json
import os
import time


def pss_train(args, ctx):
    """An unchanged ParameterServerStrategy program (TensorFlow's tutorial shape): ps and workers serve until
    stopped, the chief coordinates ``model.fit``."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type in ("worker", "ps"):
        with open(os.path.join(args["out"], f"server{ctx.worker_num}.json"), "w") as f:
            json.dump({"job": resolver.task_type, "index": resolver.task_id, "pid": os.getpid()}, f)
        server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                      task_index=resolver.task_id, protocol=resolver.rpc_layer or "grpc",
                                      start=True)
        server.join()
        return
    strategy = tf.distribute.ParameterServerStrategy(resolver)
    x = tf.random.stateless_normal((256, 4), seed=(1, 2))
    y = tf.cast(tf.reduce_sum(x, axis=1) > 0, tf.int64)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(2)])
        model.compile(optimizer="sgd", steps_per_execution=1,
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16)
    model.fit(ds, epochs=args.get("epochs", 2), steps_per_epoch=args.get("steps", 4), verbose=0)
    variables = {v.name: v.device for v in model.trainable_variables}
    with open(os.path.join(args["out"], "chief.json"), "w") as f:
        json.dump({"iterations": int(model.optimizer.iterations.numpy()), "devices": variables,
                   "num_workers": strategy.extended._num_workers if hasattr(strategy.extended, "_num_workers")
                   else None, "pid": os.getpid()}, f)


def parallel_record(args, ctx):
    """A TFParallel instance: returns what it saw (and a tiny TF computation when asked)."""
    seen = {
        "worker_num": ctx.worker_num, "executor_id": ctx.executor_id, "num_workers": ctx.num_workers,
        "default_fs": ctx.defaultFS, "tf_config": os.environ.get("TF_CONFIG"), "pid": os.getpid(),
        "legacy": os.environ.get("TF_USE_LEGACY_KERAS"), "spark_executor_id": ctx.spark_executor_id,
        "is_chief": ctx.is_chief, "abs": ctx.absolute_path("data"),
    }
    if args.get("tf"):
        import tensorflow as tf

        seen["sum"] = float(tf.reduce_sum(tf.range(ctx.worker_num + 1, dtype=tf.float32)).numpy())
    if args.get("fail") == ctx.worker_num:
        print(f"instance {ctx.worker_num} about to fail", flush=True)
        raise ValueError(f"boom on instance {ctx.worker_num}")
    time.sleep(args.get("sleep", 0))
    return seen


def pipeline_train(args, ctx):
    """TFEstimator's train_fn: InputMode.SPARK feed, MultiWorkerMirroredStrategy, SavedModel to args.export_dir."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed(train_mode=True)
    ds = feed.dataset(label="label").batch(args.batch_size * ctx.num_workers)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input(shape=(4,), name="features"),
                                     tf.keras.layers.Dense(8, activation="relu"),
                                     tf.keras.layers.Dense(2, name="logits")])
        model.compile(optimizer=tf.keras.optimizers.Adam(args.lr),
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds, epochs=args.epochs, verbose=0)
    ctx.export_saved_model(model, args.export_dir)
    with open(os.path.join(args.out, f"merged{ctx.worker_num}.json"), "w") as f:
        json.dump({"epochs": args.epochs, "lr": args.lr, "cluster_size": args.cluster_size,
                   "steps": int(model.optimizer.iterations.numpy())}, f)


def pipeline_train_tfrecords(args, ctx):
    """TFEstimator's train_fn for InputMode.TENSORFLOW: reads the TFRecords at args.tfrecord_dir itself."""
    import glob

    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(args.tfrecord_dir, "part-*")))
    spec = {"features": tf.io.FixedLenFeature([4], tf.float32), "label": tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, spec))
    rows = int(ds.reduce(0, lambda n, _: n + 1))
    model = tf.keras.Sequential([tf.keras.Input(shape=(4,), name="features"), tf.keras.layers.Dense(2, name="logits")])
    model.compile(optimizer="sgd", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds.map(lambda e: (e["features"], e["label"])).batch(16), epochs=args.epochs, verbose=0)
    ctx.export_saved_model(model, args.export_dir)
    with open(os.path.join(args.out, f"tfrecords{ctx.worker_num}.json"), "w") as f:
        json.dump({"tfrecord_dir": args.tfrecord_dir, "files": len(files), "rows": rows}, f)
