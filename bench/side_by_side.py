"""Side by side: tfos against TensorFlowOnSpark 2.2.5 and hand-launched MultiWorkerMirroredStrategy.

One command sets everything up and runs every comparison, alternating tool by tool in each round so that
machine noise hits all of them:

- tfos runs as it is by default, and in the InputMode.TENSORFLOW scenario also with ``TFOS_PREIMPORT=auto``
  (``tfos_pre``: TensorFlow imported while the cluster is reserved).
- TensorFlowOnSpark 2.2.5 is installed from PyPI into its own venv (``$TFOS_BENCH_WORK/tfos225-venv``, default
  ``/tmp/tfos-bench-sbs``) with the same pyspark, tensorflow-cpu and tf-keras as ours; both tools run with
  ``TF_USE_LEGACY_KERAS=1``.
- Data: 60,000 rows of 784 random float32 + an int64 label in 0..9, written once as 4 TFRecord files (for
  InputMode.TENSORFLOW) and as an ``.npz`` that each Spark driver turns into the same cached DataFrame.
- One Spark standalone cluster on loopback (``tfos.standalone.StandaloneCluster``, 2 workers x 1 core) is used
  by both tools' drivers; the 2/8/32-node control-plane scaling runs use ``local-cluster[N,1,256]``.
- Every run is ``bench/side_by_side/driver.py`` started with the tool's own interpreter; its JSON figures plus
  the 1-minute load average are appended to ``$TFOS_BENCH_WORK/raw.jsonl``; the markdown and the PNG charts in
  ``bench/results/`` are regenerated from all raw runs of the current raw file each time.

Run: ``.venv/bin/python bench/side_by_side.py [--quick] [--runs 3] [--only tensorflow,failure,spark,scale]``
(``--report-only`` rewrites the results from the raw file).

Inference: the benchmark's CNN exported once as a SavedModel (``$TFOS_BENCH_WORK/savedmodel``); each tool scores the
same cached DataFrame through ``cluster.inference`` (2 InputMode.SPARK nodes, its documented feed loop) and through
its ``pipeline.TFModel.transform``; the ceiling is the SavedModel called in one process on the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "side_by_side", "driver.py")
sys.path.insert(0, os.path.join(HERE, "side_by_side"))

WORK = os.environ.get("TFOS_BENCH_WORK", "/tmp/tfos-bench-sbs")
TFOS225_VENV = os.environ.get("TFOS_BENCH_TFOS225_VENV", os.path.join(WORK, "tfos225-venv"))
ROWS = 60000
SCENARIOS = ["tensorflow", "failure", "spark", "inference", "scale"]


def tfos225_python() -> str:
    """Returns the TensorFlowOnSpark venv's interpreter, creating the venv from PyPI the first time."""
    python = os.path.join(TFOS225_VENV, "bin", "python")
    if os.path.exists(os.path.join(TFOS225_VENV, ".complete")):
        return python
    import pyspark
    import tensorflow as tf

    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", TFOS225_VENV], check=True, timeout=300)
    pins = ["tensorflowonspark==2.2.5", f"pyspark=={pyspark.__version__}", f"tensorflow-cpu=={tf.__version__}",
            f"tf-keras=={tf.__version__}", "pandas<3", "pyarrow", "psutil"]
    print("installing into", TFOS225_VENV, ":", " ".join(pins), flush=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *pins], check=True, timeout=1800)
    open(os.path.join(TFOS225_VENV, ".complete"), "w").close()
    return python


def make_data() -> tuple[str, str]:
    """Writes the shared data once: 4 TFRecord files and an npz of the same rows."""
    import numpy as np

    tfr, npz = os.path.join(WORK, "tfr"), os.path.join(WORK, "data.npz")
    if os.path.exists(npz):
        return tfr, npz
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((ROWS, 784), dtype=np.float32)
    y = rng.integers(0, 10, ROWS).astype(np.int64)
    os.makedirs(tfr, exist_ok=True)
    for part in range(4):
        with tf.io.TFRecordWriter(os.path.join(tfr, f"part-{part}.tfrecord")) as w:
            for i in range(part, ROWS, 4):
                feat = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=x[i])),
                        "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[y[i]]))}
                w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    np.savez(npz + ".tmp.npz", x=x, y=y)
    os.replace(npz + ".tmp.npz", npz)
    return tfr, npz


def make_model() -> str:
    """Exports the benchmark's CNN (untrained: scoring costs the same) once as a SavedModel whose
    ``serving_default`` signature takes ``features`` (784 floats per row) and returns ``prediction`` (10)."""
    path = os.path.join(WORK, "savedmodel")
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    code = (
        "import os, sys; os.environ['TF_USE_LEGACY_KERAS'] = '1'\n"
        "import tensorflow as tf\n"
        "sys.path.insert(0, sys.argv[2]); import driver\n"
        "model = driver._cnn(tf)\n"
        "@tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name='features')])\n"
        "def serve(features):\n"
        "    return {'prediction': model(tf.reshape(features, (-1, 28, 28, 1)))}\n"
        "tf.saved_model.save(model, sys.argv[1] + '.tmp', signatures={'serving_default': serve})\n"
        "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, path, os.path.dirname(DRIVER)], check=True, timeout=600)
    return path


def run_one(python: str, tool: str, scenario: str, common: list[str], timeout: float, variant: str = "") -> dict:
    """Runs the driver once; returns its figures (or the failure) with the load average.

    With ``TFOS_BENCH_LOCK`` naming a file, each run holds an exclusive ``flock`` on it, so that other heavy jobs
    on the machine that take the same lock (test runs) wait between runs instead of sharing the cores.
    """
    lock = os.environ.get("TFOS_BENCH_LOCK")
    if not lock:
        return _run_one(python, tool, scenario, common, timeout, variant)
    import fcntl

    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        time.sleep(3)  # let the previous holder's processes exit before the load average is read
        return _run_one(python, tool, scenario, common, timeout, variant)


VARIANTS = {"tfos_pre": ("tfos", {"TFOS_PREIMPORT": "auto"})}  # label: (tool, environment)
CURRENT_ROUND = {"id": None}  # recorded with every run: the report pairs the tools' runs of one round


def _run_one(python: str, tool: str, scenario: str, common: list[str], timeout: float, variant: str) -> dict:
    result_path = os.path.join(WORK, "last_result.json")
    if os.path.exists(result_path):
        os.remove(result_path)
    load = os.getloadavg()[0]
    cmd = [python, DRIVER, "--tool", tool, "--scenario", scenario, "--result", result_path, *common]
    log = os.path.join(WORK, "logs", f"{time.strftime('%H%M%S')}-{tool}-{scenario}.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    start = time.time()
    with open(log, "w") as f:
        env = {**_env(tool), **(VARIANTS[variant][1] if variant else {})}
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Spark JVM and anything else it started
            proc.wait(timeout=60)
    if os.path.exists(result_path):
        with open(result_path) as f:
            res = json.load(f)
    else:
        res = {"tool": tool, "scenario": scenario, "error": f"driver produced no result (see {log})"}
    if variant:
        res["tool"] = variant
    res.update(load1=load, wall_s=time.time() - start, date=time.strftime("%Y-%m-%d %H:%M:%S"), log=log,
               round=CURRENT_ROUND["id"])
    print(json.dumps(res), flush=True)
    with open(os.path.join(WORK, "raw.jsonl"), "a") as f:
        f.write(json.dumps(res) + "\n")
    return res


def _env(tool: str) -> dict:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYSPARK_PYTHON", None)
    if tool == "tfos225":
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = os.path.dirname(HERE)
    return env


def write_report() -> None:
    """Regenerates the markdown and charts from every raw run (bench/side_by_side/report.py)."""
    import importlib

    import report

    try:
        importlib.reload(report).write(os.path.join(WORK, "raw.jsonl"), os.path.join(HERE, "results"))
    except Exception as e:  # noqa: BLE001 - the raw runs are kept; the report can be redone with --report-only
        print(f"report failed ({type(e).__name__}: {e}); rerun with --report-only", flush=True)


def run_scenario(scenario: str, pythons: dict, base: list[str], args: argparse.Namespace,
                 round_index: int = 0) -> None:
    """One run of ``scenario`` for each tool, one tool after the other.

    InputMode.TENSORFLOW rotates its four tools by two places from one round to the next, so that no tool always
    runs first (right after another scenario's cluster was torn down).
    """
    if scenario == "tensorflow":  # also gives the startup figures (run -> servers up -> first step)
        steps = "100" if args.quick else "468"
        tools = ("tfos", "tfos225", "hand", "tfos_pre")
        shift = 2 * round_index % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            real = VARIANTS.get(tool, (tool,))[0]
            run_one(pythons[real], real, "tensorflow", [*base, "--epochs", "2", "--steps", steps], 1200,
                    tool if tool in VARIANTS else "")
    elif scenario == "failure":
        cap = "120" if args.quick else "300"
        for tool in ("tfos", "tfos225"):
            run_one(pythons[tool], tool, "failure", [*base, "--epochs", "50", "--cap", cap], 900)
    elif scenario == "spark":
        for tool in ("tfos", "tfos225"):
            run_one(pythons[tool], tool, "spark", [*base, "--epochs", "1" if args.quick else "2"], 1500)
    elif scenario == "inference":  # cluster.inference and TFModel.transform of each tool, then the ceiling
        common = [*base, "--export-dir", args.export_dir, "--cap", "600"]
        for path in ("cluster", "transform"):
            for tool in ("tfos", "tfos225"):
                run_one(pythons[tool], tool, "inference", [*common, "--path", path], 1200)
        run_one(pythons["hand"], "hand", "inference", common, 600)
    elif scenario == "scale":
        old_nodes = {int(n) for n in args.scale_nodes_tfos225.split(",")}
        for n in [int(n) for n in args.scale_nodes.split(",")]:
            for tool in ("tfos", "tfos225") if n in old_nodes else ("tfos",):
                run_one(pythons[tool], tool, "scale", ["--master", f"local-cluster[{n},1,256]", "--nodes", str(n),
                                                       "--executor-memory", "256m", "--cap", "600"], 900)
    else:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 steps per epoch, 1 SPARK-mode epoch, a 120 s failure cap")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--scale-nodes", default="2,8,16,32")
    parser.add_argument("--scale-nodes-tfos225", default="2,8,16",
                        help="TensorFlowOnSpark imports TensorFlow in every executor's Python worker (~0.5 GB each): "
                             "32 of them and their JVMs do not fit in 24 GiB")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    if args.report_only:
        write_report()
        return
    from tfos.standalone import StandaloneCluster

    pythons = {"tfos": sys.executable, "tfos225": tfos225_python(), "hand": sys.executable}
    tfr, npz = make_data()
    args.export_dir = make_model()
    only = args.only.split(",")
    with StandaloneCluster(workers=2, cores_per_worker=1, memory_per_worker="1500m") as spark_cluster:
        base = ["--master", spark_cluster.master_url, "--tfr", tfr, "--data", npz, "--rows", str(ROWS)]
        session = time.strftime("%Y%m%d-%H%M%S")
        for round_index in range(args.runs):
            CURRENT_ROUND["id"] = f"{session}/{round_index}"
            for scenario in only:  # in the order given, each tool in turn
                run_scenario(scenario, pythons, base, args, round_index)
            write_report()


if __name__ == "__main__":
    main()
