"""tfos.scoring.predict_saved_model on a real Spark cluster, against the SavedModel called directly."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfos.scoring import load_count, predict_saved_model

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

MAKE_MODEL = textwrap.dedent("""
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np, tensorflow as tf
    out = sys.argv[1]
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(3)])
    model.save(os.path.join(out, "model"))
    x = np.load(os.path.join(out, "x.npy"))
    fn = tf.saved_model.load(os.path.join(out, "model")).signatures["serving_default"]
    (name, _), = fn.structured_input_signature[1].items()
    y = list(fn(**{name: tf.constant(x)}).values())[0].numpy()
    np.save(os.path.join(out, "y.npy"), y)
""")


def test_predictions_match_the_saved_model_and_load_once(spark_local_cluster, tmp_path):
    x = np.random.default_rng(0).random((40, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", MAKE_MODEL, str(tmp_path)], check=True, timeout=300)
    expected = np.load(tmp_path / "y.npy")
    export_dir = str(tmp_path / "model")
    spark = spark_local_cluster
    df = spark.createDataFrame([(i, x[i].tolist()) for i in range(40)], "id long, features array<float>")
    df = df.repartition(4)
    for _ in range(2):  # a second job reuses the loaded model
        rows = predict_saved_model(df, export_dir, "features").collect()
    got = np.array([r.prediction for r in sorted(rows, key=lambda r: r.id)])
    assert got.shape == (40, 3) and np.allclose(got, expected, atol=1e-5)
    def probe(batches):  # runs in the same kind of (Arrow) Python worker as the scoring jobs
        import pyarrow as pa

        for _ in batches:
            pass
        yield pa.RecordBatch.from_pydict({"pid": [os.getpid()], "loads": [load_count(export_dir)]})

    counts = spark.range(0, 4, 1, 4).mapInArrow(probe, "pid long, loads long").collect()
    assert max(r.loads for r in counts) == 1  # once per Python worker, not once per batch or per job


def test_wrong_width_names_the_column(spark_local_cluster, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 4), dtype=np.float32))
    subprocess.run([sys.executable, "-c", MAKE_MODEL, str(tmp_path)], check=True, timeout=300)
    df = spark_local_cluster.createDataFrame([([1.0, 2.0, 3.0],)], "features array<float>")
    with pytest.raises(Exception, match=r"column 'features'.*expected shape \(4,\)"):
        predict_saved_model(df, str(tmp_path / "model"), "features").collect()
