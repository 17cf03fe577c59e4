"""One benchmark run of one tool: tfos, TensorFlowOnSpark 2.2.5 ("tfos225") or hand-launched MWMS ("hand").

Started by ``bench/side_by_side.py`` with the interpreter of the tool's own virtual environment (tfos: the
project's ``.venv``; TensorFlowOnSpark: the venv the orchestrator builds from PyPI). It writes one JSON object
with the run's figures to ``--result``. Each node appends timestamped events (``time.time()``, all processes
run on this machine) to ``<out>/events.jsonl``; the figures are computed from them here.

The main functions live in this file, which runs as ``__main__``, so that both tools' cloudpickle ships them
by value to the executors. They use only what both tools' ``ctx`` objects have (``worker_num``,
``num_workers``, ``job_name``) and each tool's public feed API, the way each tool's README/examples do.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"


def _mark(out, node, event, **fields):
    import json as _json
    import os as _os
    import time as _time

    with open(_os.path.join(out, "events.jsonl"), "a") as f:
        f.write(_json.dumps({"node": node, "ev": event, "t": _time.time(), "pid": _os.getpid(), **fields}) + "\n")


def no_tf_main(args, ctx):
    """Startup scaling: a main function that does not import TensorFlow."""
    _mark(args["out"], ctx.worker_num, "start")


def _cnn(tf):
    model = tf.keras.Sequential([
        tf.keras.layers.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=tf.keras.optimizers.SGD(learning_rate=0.001),
                  metrics=["accuracy"])
    return model


def _marks_callback(tf, out, node):
    class Marks(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.steps = epoch, 0
            _mark(out, node, "epoch_begin", epoch=epoch)

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == 1:
                _mark(out, node, "first_step", epoch=self.epoch)

        def on_epoch_end(self, epoch, logs=None):
            _mark(out, node, "epoch_end", epoch=epoch, steps=self.steps)

    return Marks()


def _tfrecord_dataset(tf, args):
    import glob

    files = sorted(glob.glob(os.path.join(args["tfr"], "*.tfrecord")))
    spec = {"x": tf.io.FixedLenFeature([784], tf.float32), "y": tf.io.FixedLenFeature([], tf.int64)}

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        return tf.reshape(ex["x"], (28, 28, 1)), ex["y"]

    return tf.data.TFRecordDataset(files).map(parse).repeat().batch(args["batch"]).prefetch(2)


def train_main(args, ctx):
    """Every TF scenario: MWMS Keras CNN on TFRecords (mode "tensorflow") or fed by Spark (mode "spark")."""
    import os as _os

    out, node = args["out"], ctx.worker_num
    _mark(out, node, "start")
    _os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    _mark(out, node, "tf_imported")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    _mark(out, node, "server_up")
    if args.get("kill_node") == node:
        _mark(out, node, "victim")
    steps = args["steps"]
    feed = None
    if args["mode"] == "tensorflow":
        ds = _tfrecord_dataset(tf, args)
    elif args["tool"] == "tfos":
        feed = ctx.get_data_feed(train_mode=True)
        ds = feed.dataset(label="label").map(lambda x, y: (tf.reshape(x, (28, 28, 1)), y)).batch(args["batch"])
        steps = None  # tfos gives every node an equal share: one pass of the feed per epoch
    else:
        ds, feed = _tfos225_generator_dataset(tf, ctx)
        ds = ds.batch(args["batch"])
        # as TensorFlowOnSpark's keras mnist_spark.py: stop at 90% of a worker's share (uneven partitions)
        steps = int(args["rows"] / args["batch"] * 0.9)
    with strategy.scope():
        model = _cnn(tf)
    model.fit(ds, epochs=args["epochs"], steps_per_epoch=steps, verbose=0,
              callbacks=[_marks_callback(tf, out, node)])
    if feed is not None and args["tool"] == "tfos225":
        feed.terminate()
    _mark(out, node, "done")


def _tfos225_generator_dataset(tf, ctx):
    """TensorFlowOnSpark's documented feed: TFNode.DataFeed + next_batch(1) in a from_generator."""
    import numpy as np
    from tensorflowonspark import TFNode

    feed = TFNode.DataFeed(ctx.mgr, False)

    def rows():
        while not feed.should_stop():
            batch = feed.next_batch(1)
            if not batch:
                return
            x, y = batch[0]
            yield np.reshape(np.asarray(x, dtype=np.float32), (28, 28, 1)), np.int64(y)

    sig = (tf.TensorSpec((28, 28, 1), tf.float32), tf.TensorSpec((), tf.int64))
    return tf.data.Dataset.from_generator(rows, output_signature=sig), feed


def infer_main(args, ctx):
    """Inference scenario: each node loads the SavedModel and scores what the feed gives it, through each
    tool's documented inference loop (tfos: arrays in and out; TensorFlowOnSpark: rows and a list out)."""
    import numpy as np
    import tensorflow as tf

    fn = tf.saved_model.load(args["export_dir"]).signatures["serving_default"]
    _mark(args["out"], ctx.worker_num, "model_loaded")
    if args["tool"] == "tfos":
        feed = ctx.get_data_feed(train_mode=False)
        while not feed.should_stop():
            cols = feed.next_arrays(args["batch"])
            if cols:
                feed.batch_results(fn(features=tf.constant(cols["features"]))["prediction"].numpy())
        return
    from tensorflowonspark import TFNode

    feed = TFNode.DataFeed(ctx.mgr, False)
    while not feed.should_stop():
        rows = feed.next_batch(args["batch"])
        if rows:
            x = np.asarray([r[0] for r in rows], dtype=np.float32)
            feed.batch_results(fn(features=tf.constant(x))["prediction"].numpy().tolist())


# ---------------------------------------------------------------- driver side


def _events(out):
    path = os.path.join(out, "events.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _first(events, ev, node=None):
    ts = [e["t"] for e in events if e["ev"] == ev and (node is None or e["node"] == node)]
    return min(ts) if ts else None


def _all_nodes(events, ev, n):
    ts = [_first(events, ev, i) for i in range(n)]
    return None if None in ts else max(ts)


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")


def _spark(args):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master(args.master).appName(f"sbs-{args.tool}-{args.scenario}")
               .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.executor.memory", args.executor_memory).config("spark.executor.cores", "1")
               .config("spark.task.maxFailures", "1").config("spark.executorEnv.TF_USE_LEGACY_KERAS", "1")
               .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "2")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    if os.environ.get("TFOS_BENCH_EXECUTOR_PYTHONPATH"):  # bench/feed_routing.py: another checkout of tfos
        builder = builder.config("spark.executorEnv.PYTHONPATH", os.environ["TFOS_BENCH_EXECUTOR_PYTHONPATH"])
    if args.master.startswith("local-cluster"):
        # small executors for the control-plane scaling runs: Spark's 300 MiB reserve would not fit 256 MiB
        builder = builder.config("spark.testing.reservedMemory", "0")
    # (TensorFlowOnSpark's InputMode.SPARK needs spark.python.worker.reuse=true, Spark's default)
    spark = builder.getOrCreate()
    # wait until every executor registered: startup is measured "after executors are available"
    sc = spark.sparkContext
    _wait_for(lambda: len(sc._jsc.sc().statusTracker().getExecutorInfos()) - 1 >= args.nodes, 300,
              f"{args.nodes} executors registering")
    sc.parallelize(range(args.nodes), args.nodes).map(lambda x: x).collect()  # start the Python workers
    return spark


def _tfcluster(tool):
    if tool == "tfos":
        from tfos import TFCluster
    else:
        from tensorflowonspark import TFCluster
    return TFCluster


def _make_df(spark, data):
    import numpy as np
    import pandas as pd

    z = np.load(data)
    pdf = pd.DataFrame({"features": list(z["x"]), "label": z["y"]})
    df = spark.createDataFrame(pdf, "features array<float>, label long").repartition(4).cache()
    df.count()
    return df


def run_cluster(args, out):
    """Startup / tensorflow / spark / failure scenarios through TFCluster.run of tfos or TensorFlowOnSpark."""
    spark = _spark(args)
    TFCluster = _tfcluster(args.tool)
    mode = "spark" if args.scenario == "spark" else "tensorflow"
    fn_args = {"out": out, "tool": args.tool, "mode": mode, "tfr": args.tfr, "batch": args.batch,
               "epochs": args.epochs, "steps": args.steps, "rows": args.rows // 2}
    fn = no_tf_main if args.scenario == "scale" else train_main
    if args.scenario == "failure":
        fn_args["kill_node"] = 1
    input_mode = TFCluster.InputMode.SPARK if mode == "spark" else TFCluster.InputMode.TENSORFLOW
    df = _make_df(spark, args.data) if mode == "spark" else None
    result = {"tool": args.tool, "scenario": args.scenario, "nodes": args.nodes,
              "package": os.path.dirname(sys.modules[TFCluster.__name__.split(".")[0]].__file__)}
    master = "chief" if fn is train_main else None
    t0 = time.time()
    cluster = TFCluster.run(spark.sparkContext, fn, fn_args, args.nodes, num_ps=0, input_mode=input_mode,
                             master_node=master)  # TensorFlowOnSpark 2.2.5 requires num_ps
    result["run_returned_s"] = time.time() - t0
    error = None
    try:
        if args.scenario == "failure":
            result.update(_kill_and_wait(cluster, args, out, t0))
        else:
            if mode == "spark":
                start = time.time()
                if args.tool == "tfos":
                    cluster.train(df, num_epochs=args.epochs)
                else:
                    cluster.train(df.rdd.map(lambda r: (r.features, r.label)), args.epochs)
                result["train_wall_s"] = time.time() - start
            cluster.shutdown(timeout=int(args.cap))  # int: TFoS passes it to signal.alarm
    except BaseException as e:  # noqa: BLE001 - recorded, the orchestrator decides
        error = f"{type(e).__name__}: {e}"
    result["end_s"] = time.time() - t0
    result.update(_figures(_events(out), t0, args))
    if error and args.scenario != "failure":
        result["error"] = error[:2000]
    spark.stop()
    return result


def _kill_and_wait(cluster, args, out, t0):
    """SIGKILLs node 1's TF process once both nodes took a step; times how long until the driver says so.

    ``shutdown()`` is called from the main thread: TensorFlowOnSpark's installs a SIGALRM handler for its
    timeout (and then calls ``sys.exit(1)``), which only works there.
    """
    events = lambda: _events(out)  # noqa: E731
    _wait_for(lambda: _all_nodes(events(), "first_step", args.nodes), args.cap, "first training step on all nodes")
    time.sleep(2.0)
    victim = [e for e in events() if e["ev"] == "victim"][0]
    kill_t = time.time()
    os.kill(victim["pid"], signal.SIGKILL)
    try:
        cluster.shutdown(timeout=int(args.cap))  # int: TFoS passes it to signal.alarm
        verdict = "returned normally (reported success)"
    except BaseException as e:  # noqa: BLE001 - what the driver reports is the figure
        verdict = f"{type(e).__name__}: {e}"
    detect = time.time() - kill_t
    res = {"victim_pid": victim["pid"], "kill_after_start_s": kill_t - t0, "cap": args.cap, "verdict": verdict[:1500]}
    if detect >= args.cap - 1:  # tfos: ShutdownTimeoutError; TensorFlowOnSpark: SystemExit from its alarm
        res.update(detect_s=None, capped=True, verdict=f"no report within the {args.cap:.0f} s cap ({verdict[:200]})")
        return res
    names = any(s in verdict for s in ("executor 1", "node 1", "worker:0", "worker 0", "executors 1", "[1]"))
    res.update(detect_s=detect, names_node=names, capped=False)
    return res


def _figures(events, t0, args):
    n = args.nodes
    fig = {}
    for ev in ("start", "tf_imported", "server_up", "first_step", "done"):
        t = _all_nodes(events, ev, n)
        fig[f"all_{ev}_s"] = None if t is None else t - t0
    ends = [e for e in events if e["ev"] == "epoch_end" and e["node"] == 0]
    if ends:
        last = ends[-1]
        begin = [e["t"] for e in events if e["ev"] == "epoch_begin" and e["node"] == 0 and e["epoch"] == last["epoch"]]
        first = [e["t"] for e in events if e["ev"] == "first_step" and e["node"] == 0 and e["epoch"] == last["epoch"]]
        fig["epoch_s"] = last["t"] - begin[0]
        fig["steps"] = last["steps"]
        fig["samples_per_s"] = (last["steps"] - 1) * args.batch / (last["t"] - first[0]) if last["steps"] > 1 else None
        fig["epochs_done"] = len(ends)
    return fig


# ------------------------------------------------------------ inference


def run_inference(args, out):
    """Rows/s scoring the same SavedModel on the same cached DataFrame: each tool's cluster.inference (a
    2-node InputMode.SPARK cluster) or its pipeline TFModel.transform; "hand" is the one-process ceiling."""
    result = {"tool": args.tool, "scenario": "inference", "path": args.path, "nodes": args.nodes}
    if args.tool == "hand":
        result["path"] = "ceiling"
        result.update(_ceiling(args))
        return result
    spark = _spark(args)
    df = _make_df(spark, args.data).select("features")
    rows = df.count()
    try:
        secs = _score_cluster(spark, df, args, out) if args.path == "cluster" else _score_transform(df, args)
        result.update(rows=rows, score_s=secs, rows_per_s=rows / secs)
    except BaseException as e:  # noqa: BLE001 - recorded, the orchestrator decides
        result["error"] = f"{type(e).__name__}: {e}"[:2000]
    spark.stop()
    return result


def _score_cluster(spark, df, args, out):
    TFCluster = _tfcluster(args.tool)
    fn_args = {"out": out, "tool": args.tool, "export_dir": args.export_dir, "batch": 1024}
    cluster = TFCluster.run(spark.sparkContext, infer_main, fn_args, args.nodes, num_ps=0,
                            input_mode=TFCluster.InputMode.SPARK)
    try:  # the clock starts once every node has TensorFlow imported and the model loaded
        _wait_for(lambda: _all_nodes(_events(out), "model_loaded", args.nodes), args.cap, "model loaded on all nodes")
        start = time.time()
        if args.tool == "tfos":
            cluster.inference(df, schema="prediction array<float>").write.format("noop").mode("overwrite").save()
        else:
            cluster.inference(df.rdd.map(lambda r: (r.features,))).count()
        return time.time() - start
    finally:
        cluster.shutdown(timeout=int(args.cap))


def _score_transform(df, args):
    if args.tool == "tfos":
        from tfos.pipeline import TFModel
    else:
        from tensorflowonspark.pipeline import TFModel
    model = (TFModel({}).setExportDir(args.export_dir).setBatchSize(1024).setTagSet("serve")
             .setSignatureDefKey("serving_default").setInputMapping({"features": "features"})
             .setOutputMapping({"prediction": "prediction"}))
    sink = lambda d: model.transform(d).write.format("noop").mode("overwrite").save()  # noqa: E731
    sink(df.limit(4096))  # warm-up: Python workers start, import TensorFlow and load the model (cached per worker)
    start = time.time()
    sink(df)
    return time.time() - start


def _ceiling(args):
    import numpy as np
    import tensorflow as tf

    x = np.load(args.data)["x"]
    fn = tf.saved_model.load(args.export_dir).signatures["serving_default"]
    fn(features=tf.constant(x[:1024]))  # warm-up (tracing)
    start = time.time()
    for i in range(0, len(x), 1024):
        fn(features=tf.constant(x[i:i + 1024]))["prediction"].numpy()
    secs = time.time() - start
    return {"rows": len(x), "score_s": secs, "rows_per_s": len(x) / secs}


# ------------------------------------------------------------ hand-launched MWMS


class _HandCtx:
    def __init__(self, index, n):
        self.worker_num, self.num_workers = index, n
        self.job_name = "chief" if index == 0 else "worker"


def hand_worker(args):
    tf_config = json.loads(os.environ["TF_CONFIG"])
    index = tf_config["task"]["index"] + (0 if tf_config["task"]["type"] == "chief" else 1)
    train_main(json.loads(args.fn_args), _HandCtx(index, args.nodes))


def run_hand(args, out):
    """The same train_main started as two processes with TF_CONFIG: the floor for any launcher."""
    import socket

    ports = []
    for _ in range(args.nodes):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    addrs = [f"127.0.0.1:{p}" for p in ports]
    cluster = {"chief": addrs[:1], "worker": addrs[1:]}
    fn_args = {"out": out, "tool": "hand", "mode": "tensorflow", "tfr": args.tfr, "batch": args.batch,
               "epochs": args.epochs, "steps": args.steps}
    procs = []
    t0 = time.time()
    for i in range(args.nodes):
        task = {"type": "chief", "index": 0} if i == 0 else {"type": "worker", "index": i - 1}
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": task}))
        procs.append(subprocess.Popen([sys.executable, __file__, "--hand-worker", "--nodes", str(args.nodes),
                                       "--fn-args", json.dumps(fn_args)], env=env))
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=args.cap))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait(timeout=30))
    result = {"tool": "hand", "scenario": args.scenario, "nodes": args.nodes, "end_s": time.time() - t0}
    if any(codes):
        result["error"] = f"worker exit codes {codes}"
    result.update(_figures(_events(out), t0, args))
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tool", choices=["tfos", "tfos225", "hand"])
    p.add_argument("--scenario", choices=["startup", "scale", "tensorflow", "spark", "failure", "inference"])
    p.add_argument("--path", choices=["cluster", "transform"], default="cluster", help="inference path")
    p.add_argument("--export-dir", default="", help="the SavedModel scored in the inference scenario")
    p.add_argument("--master", default="")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--executor-memory", default="1g")
    p.add_argument("--tfr", default="")
    p.add_argument("--data", default="")
    p.add_argument("--rows", type=int, default=60000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=468)
    p.add_argument("--cap", type=float, default=300)
    p.add_argument("--result", default="")
    p.add_argument("--hand-worker", action="store_true")
    p.add_argument("--fn-args", default="")
    p.add_argument("--out", default="", help="the events directory (default: a new temporary one)")
    args = p.parse_args()
    if args.hand_worker:
        hand_worker(args)
        return
    out = args.out or tempfile.mkdtemp(prefix="sbs-events-")
    if args.scenario == "inference":
        result = run_inference(args, out)
    else:
        result = run_hand(args, out) if args.tool == "hand" else run_cluster(args, out)
    result["events_dir"] = out
    with open(args.result, "w") as f:
        json.dump(result, f)
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # TensorFlowOnSpark leaves non-daemon threads (its reservation server) behind


if __name__ == "__main__":
    main()
