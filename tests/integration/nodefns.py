"""main functions the integration tests run on TF nodes (pickled by value: executors cannot import tests/)."""

import json
import os
import time


def record_ctx(args, ctx):
    """Writes what the node saw to ``args['out']/node{worker_num}.json``; service nodes then block."""
    info = {
        "worker_num": ctx.worker_num, "executor_id": ctx.executor_id, "job_name": ctx.job_name,
        "task_index": ctx.task_index, "cluster_spec": ctx.cluster_spec, "num_workers": ctx.num_workers,
        "tf_config": json.loads(os.environ["TF_CONFIG"]), "legacy": os.environ.get("TF_USE_LEGACY_KERAS"),
        "default_fs": ctx.defaultFS, "abs": ctx.absolute_path("data"), "pid": os.getpid(),
        "spark_executor_id": ctx.spark_executor_id, "port": ctx.port,
    }
    with open(os.path.join(args["out"], f"node{ctx.worker_num}.json"), "w") as f:
        json.dump(info, f)
    if ctx.job_name == "chief" and args.get("chief_waits_for"):
        # Beside a ps, workers are service nodes that the driver stops once the chief returns: when the test
        # needs their files, the chief returns only after every node wrote its own (as a real chief needs them).
        names = [f"node{i}.json" for i in range(args["chief_waits_for"])]
        deadline = time.time() + 60
        while not all(os.path.exists(os.path.join(args["out"], n)) for n in names) and time.time() < deadline:
            time.sleep(0.05)
    if ctx.job_name in ("ps", "evaluator") or args.get("block_all_service"):
        time.sleep(3600)  # like server.join(): runs until the driver stops it


def raise_on(args, ctx):
    if ctx.worker_num == args["fail"]:
        raise ValueError(f"boom on node {ctx.worker_num}")
    time.sleep(args.get("others_sleep", 0))


def sleep_and_mark(args, ctx):
    with open(os.path.join(args["out"], f"pid{ctx.worker_num}"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(args["sleep"])


def mwms_train(args, ctx):
    """A small Keras model trained with MultiWorkerMirroredStrategy on synthetic data."""
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = np.random.default_rng(ctx.worker_num)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int64")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16 * ctx.num_workers)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(2)])
        model.compile(optimizer="adam", metrics=["accuracy"],
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds, epochs=2, steps_per_epoch=5, verbose=0)
    with open(os.path.join(args["out"], f"steps{ctx.worker_num}.json"), "w") as f:
        json.dump({"worker_num": ctx.worker_num, "job_name": ctx.job_name,
                   "steps": int(model.optimizer.iterations.numpy()), "keras": type(model).__module__}, f)


def bind_after_release(args, ctx):
    """release_port=False: the port is held until ctx.release_port(), then free for main_fun's server."""
    import socket

    probe = socket.socket()
    try:
        probe.bind(("", ctx.port))
        held = False
    except OSError:
        held = True
    finally:
        probe.close()
    ctx.release_port()
    server = socket.socket()
    server.bind(("", ctx.port))
    server.close()
    with open(os.path.join(args["out"], f"bind{ctx.worker_num}.json"), "w") as f:
        json.dump({"held": held, "bound_after_release": True}, f)


def tfos_style_main(args, ctx):
    """Written against TensorFlowOnSpark's API: argparse args, ctx fields, compat export (import changed only)."""
    import numpy as np
    import tensorflow as tf

    from tfos import compat

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x = np.random.default_rng(ctx.task_index).normal(size=(128, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(args.batch_size * ctx.num_workers)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, verbose=0)
    compat.export_saved_model(model, ctx.absolute_path(args.export_dir), ctx.job_name == "chief")
    with open(os.path.join(args.out, f"tfos_style{ctx.worker_num}.json"), "w") as f:
        json.dump({"job": ctx.job_name, "index": ctx.task_index, "steps": int(model.optimizer.iterations.numpy())}, f)


def feed_fit(args, ctx):
    """InputMode.SPARK + MultiWorkerMirroredStrategy: a plain model.fit on feed.dataset()."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed(train_mode=True)
    ds = feed.dataset(label="label").batch(8 * ctx.num_workers)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ends = []  # optimizer steps at each epoch's end

    class EpochEnds(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(int(model.optimizer.iterations.numpy()))

    model.fit(ds, epochs=args["epochs"], verbose=0, callbacks=[EpochEnds()])
    with open(os.path.join(args["out"], f"fit{ctx.worker_num}.json"), "w") as f:
        json.dump({"steps": int(model.optimizer.iterations.numpy()), "epoch_ends": ends}, f)


def feed_count(args, ctx):
    """TensorFlowOnSpark's loop: next_batch until should_stop; optionally terminate early."""
    feed = ctx.get_data_feed(train_mode=True)
    rows = []
    while not feed.should_stop():
        batch = feed.next_batch(10)
        rows.extend(batch)
        if args.get("terminate_after") and len(rows) >= args["terminate_after"]:
            feed.terminate()
    with open(os.path.join(args["out"], f"count{ctx.worker_num}.json"), "w") as f:
        ids = sorted({row[0] if isinstance(row, (tuple, list)) else row for row in rows})
        json.dump({"rows": len(rows), "ids": ids, "sample": rows[0] if rows else None}, f)


def feed_double(args, ctx):
    """Inference: one result per row, in order."""
    feed = ctx.get_data_feed(train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(7)
        if batch:
            feed.batch_results([(row[0] if isinstance(row, tuple) else row) * 2 for row in batch])


def feed_double_arrays(args, ctx):
    """Inference through the array path: next_arrays in, a numpy array of results out."""
    feed = ctx.get_data_feed(train_mode=False)
    while not feed.should_stop():
        cols = feed.next_arrays(7)
        if cols:
            values = cols["id"] if "id" in cols else cols[0]
            feed.batch_results(values * 2)


def feed_slowly(args, ctx):
    """Reads the feed slowly after writing its pid, so a test can kill it mid-train."""
    with open(os.path.join(args["out"], f"pid{ctx.worker_num}"), "w") as f:
        f.write(str(os.getpid()))
    feed = ctx.get_data_feed(train_mode=True)
    while not feed.should_stop():
        feed.next_batch(10)
        time.sleep(0.05)


def kill_when_feeding(pid_file, delay: float = 2.0) -> dict:
    """Driver side of ``feed_slowly``: a thread SIGKILLs the node once its pid file appears and the feed has run
    ``delay`` seconds; the returned dict gets ``"at"`` (``time.monotonic()``) when it did."""
    import signal
    import threading

    killed: dict = {}

    def kill():
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(delay)  # let the feed get going
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        killed["at"] = time.monotonic()

    threading.Thread(target=kill, daemon=True).start()
    return killed


def say_hello(args, ctx):
    print(f"hello from node {ctx.worker_num}", flush=True)
    import sys

    print(f"warning on stderr from node {ctx.worker_num}", file=sys.stderr, flush=True)


def tfos_loop_fit(args, ctx):
    """TensorFlowOnSpark's own Spark-feed loop (its keras mnist_spark.py), import changed only: a generator of
    next_batch(1) rows, model.fit with steps_per_epoch at 90% of a worker's share, then feed.terminate()."""
    import numpy as np
    import tensorflow as tf

    from tfos import TFNode

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    tf_feed = TFNode.DataFeed(ctx.mgr, False)

    def rdd_generator():
        while not tf_feed.should_stop():
            batch = tf_feed.next_batch(1)
            if len(batch) > 0:
                example = batch[0]
                image = np.array(example[0]).astype(np.float32) / 255.0
                yield np.reshape(image, (28, 28, 1)), np.reshape(np.array(example[1]).astype(np.float32), (1,))
            else:
                return

    ds = tf.data.Dataset.from_generator(rdd_generator, (tf.float32, tf.float32),
                                        (tf.TensorShape([28, 28, 1]), tf.TensorShape([1]))).batch(args["batch"])
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input(shape=(28, 28, 1)), tf.keras.layers.Flatten(),
                                     tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(10)])
        model.compile(optimizer="sgd", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps_per_epoch = args["rows"] / args["batch"]
    max_steps_per_worker = int(steps_per_epoch / ctx.num_workers * 0.9)
    model.fit(x=ds, epochs=args["epochs"], steps_per_epoch=max_steps_per_worker, verbose=0)
    tf_feed.terminate()
    with open(os.path.join(args["out"], f"loop{ctx.worker_num}.json"), "w") as f:
        json.dump({"steps": int(model.optimizer.iterations.numpy()), "expected": max_steps_per_worker}, f)


def feed_fit_images(args, ctx):
    """feed.dataset() of a DataFrame with an image column, plain model.fit over several epochs."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed(train_mode=True)
    ds = feed.dataset(label="label").batch(args["batch"] * ctx.num_workers)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input(shape=(784,)), tf.keras.layers.Dense(10)])
        model.compile(optimizer="sgd", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds, epochs=args["epochs"], verbose=0)
    with open(os.path.join(args["out"], f"images{ctx.worker_num}.json"), "w") as f:
        json.dump({"steps": int(model.optimizer.iterations.numpy()), "epochs": len(history.history["loss"])}, f)


def read_a_little_then_stop(args, ctx):
    """Reads a few rows, prints a line, then stops reading without feed.terminate() (a stalled feed)."""
    feed = ctx.get_data_feed(train_mode=True)
    feed.next_batch(10)
    print(f"node {ctx.worker_num} read 10 rows and stops reading", flush=True)
    time.sleep(args["sleep"])


def fit_with_validation(args, ctx):
    """model.fit(feed.dataset(), validation_data=feed.dataset(split="validation")) under MWMS; writes, per epoch,
    the row ids (column 0 of the features) this node's training and validation datasets yielded."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed(train_mode=True)
    seen = {"train": [], "val": []}

    def recorder(name):
        def note(ids):
            seen[name].extend(int(i) for i in ids.numpy())
            return 0

        def record(x, y):
            done = tf.py_function(note, [tf.cast(x[:, 0], tf.int64)], tf.int64)
            with tf.control_dependencies([done]):
                return tf.identity(x), tf.identity(y)
        return record

    batch = args["batch"] * ctx.num_workers
    if args.get("batched"):  # batches made from whole chunks: feed.dataset(batch_size=...)
        train = feed.dataset(label=args["label"], batch_size=batch).map(recorder("train"))
        val = feed.dataset(label=args["label"], split="validation", batch_size=batch).map(recorder("val"))
    else:
        train = feed.dataset(label=args["label"]).batch(batch).map(recorder("train"))
        val = feed.dataset(label=args["label"], split="validation").batch(batch).map(recorder("val"))
    epochs = []

    class Epochs(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epochs.append({"train": list(seen["train"]), "val": list(seen["val"]), "val_loss": logs["val_loss"]})
            seen["train"].clear()
            seen["val"].clear()

    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train, epochs=args["epochs"], validation_data=val, callbacks=[Epochs()], verbose=0)
    with open(os.path.join(args["out"], f"validation{ctx.worker_num}.json"), "w") as f:
        json.dump(epochs, f)


def validation_split_only(args, ctx):
    """Asks for the validation split straight away (train() is called without validation_data: it raises)."""
    feed = ctx.get_data_feed(train_mode=True)
    feed.dataset(split="validation", timeout=args.get("timeout", 120))


def epoch_steps(fits: list[dict]) -> list[list[int]]:
    """Each node's optimizer steps per epoch, from ``nodefns.feed_fit``'s records."""
    return [[b - a for a, b in zip([0, *f["epoch_ends"]], f["epoch_ends"])] for f in fits]


def assert_full_equal_epochs(fits: list[dict], epochs: int) -> None:
    """40 rows per node per epoch: MWMS re-batches each worker's (un-sharded) batches of 16 to 8 rows per step,
    so 5 steps take every row; TF adds up to two steps that carry no rows (the empty half of the re-batched last
    partial batch, the end-of-data step), depending on timing (measured 5-7). Every node takes the same steps."""
    per_epoch = epoch_steps(fits)
    assert all(steps == per_epoch[0] for steps in per_epoch), per_epoch
    assert len(per_epoch[0]) == epochs and all(5 <= n <= 7 for n in per_epoch[0]), per_epoch


def read_typed_rows(args, ctx):
    """TensorFlowOnSpark's loop over next_arrays until the feed ends; writes every row (JSON values) in the
    order read, and each column's numpy dtype."""
    feed = ctx.get_data_feed(train_mode=True)
    rows, dtypes = [], {}
    while not feed.should_stop():
        arrays = feed.next_arrays(100)
        if not arrays:
            continue
        dtypes = {k: str(v.dtype) for k, v in arrays.items()}
        for k in range(len(arrays["id"])):
            rows.append({c: (v[k].tolist() if hasattr(v[k], "tolist") else v[k]) for c, v in arrays.items()})
    for row in rows:
        row.update({c: v.decode("latin-1") if isinstance(v, bytes) else v for c, v in row.items()})
        row.update({c: str(v) for c, v in row.items() if not isinstance(v, (int, float, str, list, bool))})
    with open(os.path.join(args["out"], f"typed{ctx.worker_num}.json"), "w") as f:
        json.dump({"rows": rows, "dtypes": dtypes}, f)
