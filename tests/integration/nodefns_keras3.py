"""Keras 3 main functions (``import keras``) for tests/integration/test_keras3.py, pickled by value."""

import json
import os
import time

FEATURES = 8
ROWS = 256


def data(np):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, FEATURES)).astype("float32")
    return x, (x.sum(axis=1) > 0).astype("int64")


def build(keras):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def one_process(batch, epochs, steps):
    """The reference: one process, no strategy, global batch ``batch`` over the same rows in the same order."""
    import keras
    import numpy as np
    import tensorflow as tf

    x, y = data(np)
    model = build(keras)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch)
    history = model.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=0)
    return history.history["loss"], float(sum(np.sum(w) for w in model.get_weights()))


def fit_everything(args, ctx):
    """MWMS with Keras 3: fit (validation_data, ModelCheckpoint), evaluate, predict, export; writes the figures."""
    import keras
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = data(np)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    # Node i takes rows i, i + n, ..., batched by the global batch B, which MWMS splits across the n replicas:
    # step k's rows on all nodes together are rows [k * B, (k + 1) * B) of the reference run.
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).repeat().shard(ctx.num_workers, ctx.worker_num)
          .batch(args["batch"]).with_options(options))
    val = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(16)
    with strategy.scope():
        model = build(keras)
    checkpoints = os.path.join(args["out"], "ckpt-{epoch}.keras")
    history = model.fit(ds, epochs=args["epochs"], steps_per_epoch=args["steps"], verbose=2, validation_data=val,
                        callbacks=[keras.callbacks.ModelCheckpoint(checkpoints)])
    loss, accuracy = model.evaluate(val, verbose=0)
    predictions = model.predict(val, verbose=0)
    if ctx.job_name == "chief":
        model.export(args["export"])
    with open(os.path.join(args["out"], f"keras3_{ctx.worker_num}.json"), "w") as f:
        json.dump({"keras": keras.__version__, "tf_keras_is": tf.keras.Model.__module__,
                   "losses": history.history["loss"], "val_loss": history.history["val_loss"],
                   "evaluate": [loss, accuracy], "predictions": list(predictions.shape),
                   "weights": float(sum(np.sum(w) for w in model.get_weights()))}, f)


def resumable(args, ctx):
    """Keras 3 + BackupAndRestore(ctx.backup_dir) under MWMS; logs epochs, like nodefns_reliability.keras_resumable."""
    import keras
    import numpy as np
    import tensorflow as tf

    out = args["out"]
    with open(os.path.join(out, f"pid{ctx.worker_num}_{ctx.attempt}"), "w") as f:
        f.write(str(os.getpid()))

    def log(name, **fields):
        with open(os.path.join(out, name), "a") as f:
            f.write(json.dumps({"node": ctx.worker_num, "attempt": ctx.attempt, **fields}) + "\n")

    class Marks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.begun = epoch, False

        def on_train_batch_end(self, batch, logs=None):
            if not self.begun:
                self.begun = True
                log("begin.jsonl", epoch=self.epoch)
            time.sleep(0.1)

        def on_epoch_end(self, epoch, logs=None):
            log("epochs.jsonl", epoch=epoch)

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = data(np)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16 * ctx.num_workers)
    with strategy.scope():
        model = build(keras)
    model.fit(ds, epochs=args["epochs"], steps_per_epoch=args["steps"], verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(ctx.backup_dir), Marks()])


def unsupported_version(args, ctx):
    """As if the executors had a Keras release tfos's repair was not checked with."""
    import keras
    import numpy as np
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    from tfos._node import keras3

    keras3._install_refusal(trainer, "3.99.0")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = data(np)
    with strategy.scope():
        model = build(keras)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)
