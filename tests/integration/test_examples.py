"""examples/mnist end to end: data setup, then mnist_tf.py through spark-submit on the standalone cluster."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MNIST = ROOT / "examples" / "mnist"

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("mnist") / "data"
    setup = subprocess.run([sys.executable, str(MNIST / "mnist_data_setup.py"), "--output", str(data)],
                           capture_output=True, text=True, timeout=300)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert list((data / "tfr" / "train").glob("*.tfrecord")) and list((data / "csv" / "train").glob("*.csv"))
    return data


def spark_submit(master, script, args, cwd):
    """Runs an example with spark-submit on the test cluster; returns its output and accuracy."""
    cmd = [
        str(pathlib.Path(sys.executable).parent / "spark-submit"), "--master", master,
        "--conf", "spark.cores.max=2", "--conf", "spark.task.cpus=1", "--conf", "spark.executor.cores=1",
        "--conf", "spark.executor.memory=1g", "--conf", "spark.driver.host=127.0.0.1",
        "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.ui.enabled=false",
        str(MNIST / script), *args,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(cwd),
                         env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    accuracy = float(re.search(r"Test accuracy: ([0-9.]+)", output).group(1))
    assert accuracy > 0.5, output[-3000:]  # far above chance (0.1) after 2 short epochs
    return output


def test_mnist_tf_through_spark_submit(standalone_cluster, spark_sessions, mnist_data, tmp_path):
    spark_sessions.stop()  # free the cluster's cores for the spark-submit application
    spark_submit(standalone_cluster.master_url, "mnist_tf.py",
                 ["--cluster_size", "2", "--images_labels", str(mnist_data / "tfr"), "--epochs", "2",
                  "--model_dir", str(tmp_path / "model"), "--export_dir", str(tmp_path / "export")], tmp_path)
    steps = [json.load(open(tmp_path / "model" / f"steps_{i}.json")) for i in range(2)]
    assert steps[0]["steps"] == steps[1]["steps"] > 0
    assert (tmp_path / "export" / "saved_model.pb").exists()


def test_mnist_spark_feed_through_spark_submit(standalone_cluster, spark_sessions, mnist_data, tmp_path):
    spark_sessions.stop()
    output = spark_submit(standalone_cluster.master_url, "mnist_spark.py",
                          ["--csv", str(mnist_data / "csv"), "--epochs", "2", "--export_dir", str(tmp_path / "export")],
                          tmp_path)
    assert "rows scored by tfos inference" in output
    assert (tmp_path / "export" / "saved_model.pb").exists()
