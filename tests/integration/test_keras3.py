"""Keras 3 (``import keras``) under MultiWorkerMirroredStrategy on tfos: tfos._node.keras3's repair, on a real
Spark cluster, through TFCluster.run and the CLI; the loss curve against a one-process run."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import cloudpickle
import pytest

import nodefns
import nodefns_keras3 as k3
from test_cli import tfos_run
from test_restart import read_jsonl, wait_for
from tfos import TFCluster
from tfos.errors import ClusterFailedError

cloudpickle.register_pickle_by_value(k3)
cloudpickle.register_pickle_by_value(nodefns)
HERE = pathlib.Path(__file__).parent

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

BATCH, EPOCHS, STEPS = 32, 3, 8


def reference():
    """The one-process run (its own interpreter: this one may have tf.keras switched to tf-keras)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import nodefns_keras3 as k; "
            f"print(json.dumps(k.one_process({BATCH}, {EPOCHS}, {STEPS})))")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", code, str(HERE)], capture_output=True, text=True, env=env,
                         timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_keras3_fit_evaluate_predict_export_match_one_process(spark_local_cluster, tmp_path):
    args = {"out": str(tmp_path), "export": str(tmp_path / "export"), "batch": BATCH, "epochs": EPOCHS,
            "steps": STEPS}
    cluster = TFCluster.run(spark_local_cluster.sparkContext, k3.fit_everything, args, 2, master_node="chief")
    cluster.shutdown(timeout=300)
    nodes = [json.load(open(tmp_path / f"keras3_{i}.json")) for i in range(2)]
    assert all(n["keras"].startswith("3.") and n["tf_keras_is"].startswith("keras") for n in nodes)  # one Keras
    assert nodes[0]["weights"] == nodes[1]["weights"]  # the workers end with identical weights
    assert nodes[0]["losses"] == nodes[1]["losses"] and len(nodes[0]["val_loss"]) == EPOCHS
    assert nodes[0]["predictions"] == [64, 2] and len(nodes[0]["evaluate"]) == 2
    losses, weights = reference()
    # Same rows, same global batch, same initial weights: the loss curve agrees within float rounding.
    assert nodes[0]["losses"] == pytest.approx(losses, rel=1e-4)
    assert nodes[0]["weights"] == pytest.approx(weights, rel=1e-4, abs=1e-4)
    assert "saved_model.pb" in os.listdir(tmp_path / "export")  # the chief's model.export(...)
    # ... which the scoring side reads: one prediction of 2 logits per row
    from tfos.scoring import predict_saved_model

    df = spark_local_cluster.createDataFrame([([0.5] * k3.FEATURES, i) for i in range(20)], "x array<float>, id long")
    scored = predict_saved_model(df, str(tmp_path / "export"), "x").collect()
    assert len(scored) == 20 and all(len(r.prediction) == 2 for r in scored)
    assert {f"ckpt-{e}.keras" for e in range(1, EPOCHS + 1)} <= set(os.listdir(tmp_path))  # chief-only writes


def test_keras3_resumes_from_backup_and_restore_after_a_sigkill(spark_local_cluster, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cluster = TFCluster.run(spark_local_cluster.sparkContext, k3.resumable, {"out": str(out), "epochs": 5,
                            "steps": 10}, 2, max_restarts=1, stop_grace_secs=2, log_dir=str(tmp_path / "logs"),
                            progress="off")
    try:
        wait_for(lambda: any(e["node"] == 1 and e["epoch"] >= 1 for e in read_jsonl(out / "epochs.jsonl")), 180,
                 "worker 1 to finish its second epoch")
        os.kill(int((out / "pid1_0").read_text()), signal.SIGKILL)
        done_before = max(e["epoch"] for e in read_jsonl(out / "epochs.jsonl") if e["attempt"] == 0)
    finally:
        cluster.shutdown(timeout=300)
    assert cluster.attempt == 1 and "signal 9 (SIGKILL)" in cluster.restarts[0]
    begun = [e for e in read_jsonl(out / "begin.jsonl") if e["attempt"] == 1]
    resumed = [min(e["epoch"] for e in begun if e["node"] == node) for node in (0, 1)]
    assert resumed == [done_before + 1] * 2  # both workers resume from the chief's backup
    finished = {(e["node"], e["epoch"]) for e in read_jsonl(out / "epochs.jsonl") if e["attempt"] == 1}
    assert {(0, 4), (1, 4)} <= finished


def test_keras3_classes_made_on_the_driver_and_the_spark_feed(spark_local_cluster, tmp_path):
    import keras  # Keras 3 here, whatever tf.keras is in this process: its classes travel by reference

    layers = [keras.Input((4,)), keras.layers.Dense(2)]

    def main_fun(args, ctx):
        import tensorflow as tf

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        ds = ctx.get_data_feed().dataset(label="label").batch(8 * ctx.num_workers)
        with strategy.scope():
            model = keras.Sequential(layers)
            model.compile(optimizer=keras.optimizers.SGD(), loss="sparse_categorical_crossentropy")
        model.fit(ds, epochs=2, verbose=0)
        with open(os.path.join(args["out"], f"driver{ctx.worker_num}.json"), "w") as f:
            json.dump({"steps": int(model.optimizer.iterations.numpy()), "tf_keras": tf.keras.__name__}, f)

    df = nodefns_uneven_df(spark_local_cluster)
    cluster = TFCluster.run(spark_local_cluster.sparkContext, main_fun, {"out": str(tmp_path)}, 2,
                            input_mode=TFCluster.InputMode.SPARK, master_node="chief")
    cluster.train(df, num_epochs=2)
    cluster.shutdown(timeout=300)
    nodes = [json.load(open(tmp_path / f"driver{i}.json")) for i in range(2)]
    assert nodes[0]["steps"] == nodes[1]["steps"] > 0 and all(n["tf_keras"].startswith("keras") for n in nodes)


def nodefns_uneven_df(spark):
    rows = [([float(i % 7)] * 4, i % 2) for i in range(150)]
    return spark.createDataFrame(rows, "x array<float>, label long").repartition(5)


def test_an_unchecked_keras_release_fails_fast_saying_what_to_do(spark_local_cluster):
    cluster = TFCluster.run(spark_local_cluster.sparkContext, k3.unsupported_version, {}, 2, progress="off")
    with pytest.raises(ClusterFailedError, match=r"(?s)Keras3UnsupportedError: Keras 3 \(3\.99\.0\) does not run "
                                                 r"model\.fit.*keras-team/keras#20585.*legacy_keras=1"):
        cluster.shutdown(timeout=180)


def test_keras3_script_through_the_cli(spark_sessions, tmp_path):
    spark_sessions.stop()  # the CLI starts its own driver
    code, output = tfos_run([HERE / "keras3_script.py", "--num-executors", "2"], tmp_path, [tmp_path])
    assert code == 0, output[-5000:]
    weights = [json.load(open(tmp_path / f"script_worker{i}.json"))["weights"] for i in range(2)]
    assert weights[0] == weights[1]
