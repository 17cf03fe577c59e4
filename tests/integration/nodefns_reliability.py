"""main functions for the restart, hang, teardown and soak tests (pickled by value: executors cannot import tests/)."""

import json
import os
import sys
import time


def silent_on_one(args, ctx):
    """Node ``args['silent']`` blocks without a word; the others print a line a second until told to stop."""
    if ctx.worker_num == args["silent"]:
        time.sleep(3600)
    deadline = time.monotonic() + args.get("max_secs", 120)
    while time.monotonic() < deadline:
        print(f"node {ctx.worker_num} alive", flush=True)
        time.sleep(1)


def report_until_stopped(args, ctx):
    """Node 0 calls ctx.report_progress every 0.2 s; node 1 prints Keras-style output (a bar redrawn with \\r).

    Both stop when ``args['stop']`` exists (or after 90 s).
    """
    deadline = time.monotonic() + 90
    step = 0
    if ctx.worker_num == 1:
        sys.stdout.write("Epoch 2/4\n")
    while not os.path.exists(args["stop"]) and time.monotonic() < deadline:
        step += 1
        if ctx.worker_num == 0:
            ctx.report_progress(step=step, epoch=1, loss=0.5)
        else:
            sys.stdout.write("\b" * 30 + "\r" + f"{min(step, 20):2d}/20 [{'=' * min(step, 20):<20}]")
            sys.stdout.flush()
        time.sleep(0.2)
    sys.stdout.write("\n")


def write_pid_and_wait(args, ctx):
    """Writes this TF process's pid, then runs until ``args['stop']`` exists (or ``args['max_secs']``)."""
    with open(os.path.join(args["out"], f"pid{ctx.worker_num}_{ctx.attempt}"), "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + args.get("max_secs", 120)
    while not os.path.exists(args.get("stop", "/nonexistent")) and time.monotonic() < deadline:
        time.sleep(0.2)


def keras_resumable(args, ctx):
    """MWMS Keras training with BackupAndRestore(ctx.backup_dir); records every epoch and the final save.

    Files in ``args['out']``: ``pid<node>_<attempt>`` (this TF process), ``epochs.jsonl`` (one line per epoch
    end: node, attempt, epoch, time), ``begin.jsonl`` (first batch of each epoch), ``saved.jsonl`` (chief saves).
    """
    import numpy as np
    import tensorflow as tf

    out = args["out"]
    with open(os.path.join(out, f"pid{ctx.worker_num}_{ctx.attempt}"), "w") as f:
        f.write(str(os.getpid()))

    def log(name, **fields):
        with open(os.path.join(out, name), "a") as f:
            f.write(json.dumps({"node": ctx.worker_num, "attempt": ctx.attempt, "time": time.time(), **fields})
                    + "\n")

    class Marks(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.begun = epoch, False

        def on_train_batch_end(self, batch, logs=None):
            if not self.begun:
                self.begun = True
                log("begin.jsonl", epoch=self.epoch)
            time.sleep(args.get("batch_sleep", 0.05))

        def on_epoch_end(self, epoch, logs=None):
            log("epochs.jsonl", epoch=epoch)

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = np.random.default_rng(ctx.worker_num)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int64")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16 * ctx.num_workers)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    backup = tf.keras.callbacks.BackupAndRestore(ctx.backup_dir)
    model.fit(ds, epochs=args["epochs"], steps_per_epoch=args["steps"], verbose=0, callbacks=[backup, Marks()])
    path = ctx.export_saved_model(model, args["export"])
    if path:
        log("saved.jsonl", path=path)
