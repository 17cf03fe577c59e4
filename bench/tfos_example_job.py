"""The job that deadlocked tfos (issue 16), timed on tfos and on TensorFlowOnSpark 2.2.5 in one session.

TensorFlowOnSpark's own Spark-feed example, as a new user runs it: an RDD of 60,000 MNIST-like rows (784 ints
and a label, parsed from CSV text) in 10 partitions of 6,000 rows, on ``local-cluster[2,1,3072]`` with
``spark.task.cpus=1`` (2 executors of one task slot each), 2 TF nodes (chief and worker). ``main_fun`` is
TensorFlowOnSpark's Keras ``mnist_spark.py`` loop: ``TFNode.DataFeed(ctx.mgr, False)``, a ``tf.data`` generator
of ``next_batch(1)`` rows until ``should_stop()``, its CNN under MultiWorkerMirroredStrategy, ``model.fit`` with
``steps_per_epoch`` at 90% of a worker's share, then ``feed.terminate()``; the driver calls
``cluster.train(rdd, 1)`` and ``cluster.shutdown()``. The two tools run the same file; only the import differs.

Run: ``.venv/bin/python bench/tfos_example_job.py [--runs 1] [--tools tfos,tfos225]``. TensorFlowOnSpark's
venv is built from PyPI the first time (see ``bench/side_by_side.py``). Writes
``bench/results/tfos_example_job.md`` from every run in ``bench/results/tfos_example_job_raw.jsonl`` (appended).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time

ROWS, PARTITIONS, BATCH, EPOCHS = 60_000, 10, 64, 1
HERE = os.path.dirname(os.path.abspath(__file__))
RAW = os.path.join(HERE, "results", "tfos_example_job_raw.jsonl")  # every run so far; the report shows them all


def main_fun(args, ctx):
    """TensorFlowOnSpark's keras mnist_spark.py main function (its structure; the import is the only change)."""
    import numpy as np
    import tensorflow as tf

    if args["tool"] in ("tfos", "tfos_old"):
        from tfos import TFNode
    else:
        from tensorflowonspark import TFNode

    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    def build_and_compile_cnn_model():
        model = tf.keras.Sequential([
            tf.keras.layers.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)),
            tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(loss=tf.keras.losses.sparse_categorical_crossentropy,
                      optimizer=tf.keras.optimizers.SGD(learning_rate=0.001), metrics=["accuracy"])
        return model

    tf_feed = TFNode.DataFeed(ctx.mgr, False)

    def rdd_generator():
        while not tf_feed.should_stop():
            batch = tf_feed.next_batch(1)
            if len(batch) > 0:
                example = batch[0]
                image = np.array(example[0]).astype(np.float32) / 255.0
                image = np.reshape(image, (28, 28, 1))
                label = np.array(example[1]).astype(np.float32)
                label = np.reshape(label, (1,))
                yield (image, label)
            else:
                return

    ds = tf.data.Dataset.from_generator(rdd_generator, (tf.float32, tf.float32),
                                        (tf.TensorShape([28, 28, 1]), tf.TensorShape([1])))
    ds = ds.batch(args["batch_size"])
    with strategy.scope():
        multi_worker_model = build_and_compile_cnn_model()
    steps_per_epoch = ROWS / args["batch_size"]
    steps_per_epoch_per_worker = steps_per_epoch / ctx.num_workers
    max_steps_per_worker = int(steps_per_epoch_per_worker * 0.9)
    multi_worker_model.fit(x=ds, epochs=args["epochs"], steps_per_epoch=max_steps_per_worker, verbose=0)
    tf_feed.terminate()
    with open(os.path.join(args["out"], f"done{ctx.worker_num}.json"), "w") as f:
        json.dump({"steps": int(multi_worker_model.optimizer.iterations.numpy()), "time": time.time()}, f)


def _csv_lines(p):
    """Partition ``p``'s 6,000 rows as CSV text, ``label,p0,...,p783``, made on the executor."""
    import random

    rng = random.Random(p)
    return [",".join([str(rng.randrange(10))] + [str(rng.randrange(256)) for _ in range(784)])
            for _ in range(ROWS // PARTITIONS)]


def _parse(line):
    values = [int(v) for v in line.split(",")]
    return (values[1:], values[0])


def run_job(tool: str, out: str) -> dict:
    """One run of the job (in the tool's own interpreter); returns its figures."""
    from pyspark import cloudpickle  # the copy both tools' Spark uses (TensorFlowOnSpark's venv has no other)
    from pyspark.sql import SparkSession

    if tool in ("tfos", "tfos_old"):
        from tfos import TFCluster
    else:
        from tensorflowonspark import TFCluster
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the executors run the tool's own interpreter too
    spark = (SparkSession.builder.master("local-cluster[2,1,3072]").appName(f"tfos-example-job-{tool}")
             .config("spark.task.cpus", "1").config("spark.driver.host", "127.0.0.1")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.executorEnv.TF_USE_LEGACY_KERAS", "1")
             .config("spark.executorEnv.PYTHONPATH", os.environ.get("PYTHONPATH", "")).getOrCreate())
    sc = spark.sparkContext
    rdd = sc.parallelize(range(PARTITIONS), PARTITIONS).flatMap(_csv_lines).map(_parse)
    args = {"tool": tool, "out": out, "batch_size": BATCH, "epochs": EPOCHS}
    start = time.time()
    result = {"tool": tool}
    try:
        cluster = TFCluster.run(sc, main_fun, args, 2, num_ps=0, input_mode=TFCluster.InputMode.SPARK,
                                master_node="chief")
        cluster.train(rdd, EPOCHS)
        result["train_returned_s"] = time.time() - start
        cluster.shutdown()
        result["job_s"] = time.time() - start
        done = [json.load(open(os.path.join(out, f"done{i}.json"))) for i in range(2)]
        result["steps"] = [d["steps"] for d in done]
    except BaseException as exc:  # noqa: BLE001 - recorded for the report
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        result["failed_after_s"] = time.time() - start
    spark.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--tools", default="tfos,tfos225",
                        help="tfos, tfos225 (TensorFlowOnSpark 2.2.5), tfos_old (tfos before the new routing, "
                        "checked out from --old-rev; stopped after --old-timeout seconds)")
    parser.add_argument("--old-rev", default="f80db4e~1")
    parser.add_argument("--old-timeout", type=float, default=300)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a run is stopped")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the raw runs")
    parser.add_argument("--one", choices=["tfos", "tfos225", "tfos_old"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import tempfile

        out = tempfile.mkdtemp(prefix="tfos-example-job-")
        with open(args.result, "w") as f:
            json.dump(run_job(args.one, out), f)
        return
    if args.report_only:
        with open(RAW) as f:
            write_report([json.loads(line) for line in f if line.strip()])
        return
    sys.path.insert(0, HERE)
    import side_by_side

    for r in range(args.runs):
        for tool in args.tools.split(","):
            python = sys.executable if tool in ("tfos", "tfos_old") else side_by_side.tfos225_python()
            path = os.path.join(side_by_side.WORK, "example_job.json")
            if os.path.exists(path):
                os.remove(path)
            env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
            env.pop("PYSPARK_PYTHON", None)
            timeout = args.timeout
            if tool == "tfos":
                env["PYTHONPATH"] = os.path.dirname(HERE)
            elif tool == "tfos_old":
                sys.path.insert(0, HERE)
                import feed_routing

                env["PYTHONPATH"] = feed_routing.baseline_tree(args.old_rev)
                timeout = args.old_timeout
            else:
                env.pop("PYTHONPATH", None)
            log = os.path.join(side_by_side.WORK, "logs", f"{time.strftime('%H%M%S')}-example-job-{tool}.log")
            os.makedirs(os.path.dirname(log), exist_ok=True)
            wall = time.time()
            with open(log, "w") as f:
                try:
                    proc = subprocess.Popen([python, __file__, "--one", tool, "--result", path], stdout=f,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)  # its driver, Spark JVM, executors and TF processes
                    proc.wait(60)
            try:
                with open(path) as f:
                    res = json.load(f)
            except (OSError, ValueError):
                res = {"tool": tool, "error": f"no result within {timeout:.0f}s (see {log})"}
            res.update(run=r, wall_s=time.time() - wall, date=time.strftime("%Y-%m-%d %H:%M:%S"), log=log)
            print(json.dumps(res), flush=True)
            with open(RAW, "a") as f:
                f.write(json.dumps(res) + "\n")
    with open(RAW) as f:
        write_report([json.loads(line) for line in f if line.strip()])


def _medians(results: list[dict], names: dict) -> list[str]:
    import statistics

    lines = []
    for tool, name in names.items():
        done = [r["job_s"] for r in results if r["tool"] == tool and r.get("job_s")]
        failed = [r for r in results if r["tool"] == tool and not r.get("job_s")]
        if done:
            lines.append(f"- {name}: median {statistics.median(done):.1f} s over {len(done)} run(s)"
                         + (f", {len(failed)} run(s) did not finish" if failed else ""))
        elif failed:
            lines.append(f"- {name}: did not finish in any of {len(failed)} run(s)")
    return lines


def write_report(results: list[dict]) -> None:
    names = {"tfos": "tfos", "tfos225": "TensorFlowOnSpark 2.2.5", "tfos_old": "tfos before the new routing"}
    lines = [
        "# TensorFlowOnSpark's Spark-feed example, the job that deadlocked tfos (issue 16)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}. {ROWS:,} MNIST-like rows parsed from CSV text in {PARTITIONS} partitions, "
        "`local-cluster[2,1,3072]` (2 one-slot executors), 2 nodes, TensorFlowOnSpark's keras `mnist_spark.py` "
        "loop (`DataFeed(ctx.mgr, False)`, `next_batch(1)` generator, `steps_per_epoch` at 90%, `terminate()`), "
        f"`cluster.train(rdd, {EPOCHS})`. Produced by `bench/tfos_example_job.py` (the job: its docstring).",
        "",
        *_medians(results, names),
        "",
        "| tool | started | whole job (run() to shutdown() returned) | train() returned | steps per node | outcome |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        outcome = "ok" if not r.get("error") else r["error"].splitlines()[0][:160]
        job = f"{r['job_s']:.1f} s" if r.get("job_s") else f"failed after {r.get('failed_after_s', r['wall_s']):.0f} s"
        train = f"{r['train_returned_s']:.1f} s" if r.get("train_returned_s") else "-"
        lines.append(f"| {names[r['tool']]} | {r['date']} | {job} | {train} | {r.get('steps', '-')} | {outcome} |")
    if not any(r["tool"] == "tfos_old" for r in results):
        lines += ["", "Before the new routing, tfos did not finish this job: the feeding tasks waited on node 0 "
                  "until `feed_timeout` (600 s) and Spark retried them (issue 16; `--tools tfos_old` measures it)."]
    path = os.path.join(HERE, "results", "tfos_example_job.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
