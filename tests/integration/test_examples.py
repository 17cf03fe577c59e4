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


def spark_submit(master, script, args, cwd, conf=None, env=None):
    """Runs an example with spark-submit on the test cluster; returns its output and accuracy."""
    extra = [item for key, value in (conf or {}).items() for item in ("--conf", f"{key}={value}")]
    cmd = [
        str(pathlib.Path(sys.executable).parent / "spark-submit"), "--master", master,
        "--conf", "spark.cores.max=2", "--conf", "spark.task.cpus=1", "--conf", "spark.executor.cores=1",
        "--conf", "spark.executor.memory=1g", "--conf", "spark.driver.host=127.0.0.1",
        "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.ui.enabled=false", *extra,
        str(MNIST / script), *args,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(cwd),
                         env={**(os.environ if env is None else env), "PYSPARK_PYTHON": sys.executable})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    accuracy = float(re.search(r"Test accuracy: ([0-9.]+)", output).group(1))
    assert accuracy > 0.5, output[-3000:]  # far above chance (0.1) after 2 short epochs
    return output


def test_mnist_tf_through_spark_submit(standalone_cluster, spark_sessions, mnist_data, tmp_path):
    spark_sessions.stop()  # free the cluster's cores for the spark-submit application
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a newcomer's shell has it
    output = spark_submit(standalone_cluster.master_url, "mnist_tf.py",
                 ["--cluster_size", "2", "--images_labels", str(mnist_data / "tfr"), "--epochs", "2",
                  "--model_dir", str(tmp_path / "model"), "--export_dir", str(tmp_path / "export")], tmp_path,
                          env=env)
    # The driver shows the nodes' Keras epochs and the accuracy, without TensorFlow's C++ INFO chatter.
    assert re.search(r"^\[chief:0\] Epoch 2/2$", output, re.MULTILINE), output[-3000:]
    assert re.search(r"^\[worker:0\] .*accuracy: [0-9.]+", output, re.MULTILINE), output[-3000:]
    chatter = re.findall(r"^\[(?:chief|worker):\d+\] (?:I\d{4} \d\d:\d\d|.*absl::InitializeLog|.*cuInit).*$",
                         output, re.MULTILINE)
    assert not chatter, chatter[:5]
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


def test_mnist_tf_from_s3(standalone_cluster, spark_sessions, s3_server, tmp_path):
    """Data, checkpoints, TensorBoard logs and the SavedModel on S3; credentials only in Spark's S3A settings."""
    bucket = s3_server.make_bucket("mnist-e2e")
    setup = subprocess.run([sys.executable, str(MNIST / "mnist_data_setup.py"), "--output", f"{bucket}/data",
                            "--formats", "tfrecord"], capture_output=True, text=True, timeout=300,
                           env={**os.environ, **s3_server.env})
    assert setup.returncode == 0, setup.stdout + setup.stderr
    spark_sessions.stop()
    conf = {"spark.hadoop.fs.s3a.endpoint": s3_server.endpoint, "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.access.key": s3_server.access_key,
            "spark.hadoop.fs.s3a.secret.key": s3_server.secret_key}
    no_aws = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    output = spark_submit(standalone_cluster.master_url, "mnist_tf.py",
                          ["--cluster_size", "2", "--images_labels", "s3a://mnist-e2e/data/tfr", "--epochs", "2",
                           "--model_dir", "s3a://mnist-e2e/model", "--export_dir", "s3a://mnist-e2e/export"],
                          tmp_path, conf=conf, env=no_aws)
    assert s3_server.secret_key not in output
    keys = [obj["Key"] for obj in s3_server.client().list_objects_v2(Bucket="mnist-e2e")["Contents"]]
    assert "export/saved_model.pb" in keys
    assert any(k.startswith("model/checkpoints/weights-02") for k in keys), keys
    assert any(k.startswith("model/train/events.out.tfevents") for k in keys), keys
    assert not [k for k in keys if "_tfos-tmp-" in k]
