"""main functions of the Spark Connect tests (pickled by value: executors cannot import tests/)."""

import json
import os


def digits_train(args, ctx):
    """MNIST-like: a small CNN on scikit-learn's 8x8 digits, one shard per worker, MultiWorkerMirroredStrategy."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)[ctx.worker_num::ctx.num_workers]
    y = y.astype("int64")[ctx.worker_num::ctx.num_workers]
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(512, seed=1).repeat().batch(32 * ctx.num_workers)
    with strategy.scope():
        model = tf.keras.Sequential([
            tf.keras.Input(shape=(8, 8, 1)), tf.keras.layers.Conv2D(16, 3, activation="relu"),
            tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)])
        model.compile(optimizer=tf.keras.optimizers.Adam(0.01), metrics=["accuracy"],
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds.with_options(options), epochs=4, steps_per_epoch=15, verbose=0)
    with open(os.path.join(args["out"], f"digits{ctx.worker_num}.json"), "w") as f:
        json.dump({"worker_num": ctx.worker_num, "job_name": ctx.job_name, "num_workers": ctx.num_workers,
                   "steps": int(model.optimizer.iterations.numpy()), "accuracy": history.history["accuracy"][-1],
                   "tf_config": json.loads(os.environ["TF_CONFIG"]), "default_fs": ctx.defaultFS,
                   "aws": [os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_ENDPOINT_URL")]}, f)
    print(f"node {ctx.worker_num}: accuracy {history.history['accuracy'][-1]:.3f}", flush=True)


def fail_on(args, ctx):
    """Prints a marker line, then fails on node ``args['fail']``; the others sleep until stopped."""
    import time

    print(f"node {ctx.worker_num} marker line before the failure", flush=True)
    if ctx.worker_num == args["fail"]:
        raise ValueError(f"connect boom on node {ctx.worker_num}")
    time.sleep(args.get("others_sleep", 0))


def kill_own_supervisor(args, ctx):
    """Node 0 kills its supervisor (the Spark task's Python worker, which hosts the control server)."""
    import signal
    import time

    if ctx.worker_num == 0:
        time.sleep(1)
        os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(args.get("others_sleep", 60))


def parallel_square(args, ctx):
    return {"worker_num": ctx.worker_num, "num_workers": ctx.num_workers, "square": args["x"] ** 2}
