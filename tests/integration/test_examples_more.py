"""The TFParallel, pipeline and ParameterServerStrategy examples on a real Spark cluster.

``mnist_pipeline.py`` then ``mnist_inference.py`` run through spark-submit on the standalone cluster, as
examples/mnist/README.md runs them. The others run in-process on the local-cluster: each example's
``main(argv)`` takes the active SparkSession (``getOrCreate``), so the tests call it with a few steps.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import cloudpickle
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def load_example(path):
    """Imports an example script as a module whose functions are pickled by value (executors cannot import it)."""
    name = f"tfos_example_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("mnist_more") / "data"
    setup = subprocess.run([sys.executable, str(EXAMPLES / "mnist" / "mnist_data_setup.py"), "--output", str(data),
                            "--num-shards", "2"], capture_output=True, text=True, timeout=300)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    return data


def spark_submit(master, script, args, cwd):
    """Runs an example as examples/mnist/README.md does (the venv's spark-submit, PYSPARK_PYTHON); its output."""
    venv_bin = pathlib.Path(sys.executable).parent
    cmd = [str(venv_bin / "spark-submit"), "--master", master, "--conf", "spark.cores.max=2",
           "--conf", "spark.task.cpus=1", "--conf", "spark.driver.host=127.0.0.1",
           # Lighter than the README's command, for a shared test machine: no UI, loopback only, WARN logs.
           "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.ui.enabled=false",
           "--conf", "spark.executor.memory=1g", "--conf", "spark.log.level=WARN", str(script), *args]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(cwd), env=env)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    return run.stdout, output


def test_mnist_pipeline_then_tfparallel_inference_through_spark_submit(standalone_cluster, spark_sessions,
                                                                        mnist_data, tmp_path):
    spark_sessions.stop()  # free the cluster's cores for the spark-submit applications
    export = tmp_path / "work" / "export"
    out, log = spark_submit(standalone_cluster.master_url, EXAMPLES / "mnist" / "mnist_pipeline.py",
                            ["--csv", str(mnist_data / "csv"), "--epochs", "3", "--export_dir", str(export),
                             "--pipeline_dir", str(tmp_path / "work" / "pipeline")], tmp_path)
    found = re.search(r"Test accuracy: ([0-9.]+) \((\d+) rows scored by TFModel.transform\)", out)
    assert found, log[-5000:]
    accuracy, test_rows = float(found.group(1)), int(found.group(2))
    assert accuracy > 0.5, out  # chance is 0.1
    reloaded = float(re.search(r"Reloaded pipeline .* accuracy ([0-9.]+)", out).group(1))
    assert abs(reloaded - accuracy) < 1e-4

    predictions = tmp_path / "work" / "predictions"
    out, log = spark_submit(standalone_cluster.master_url, EXAMPLES / "mnist" / "mnist_inference.py",
                            ["--images_labels", str(mnist_data / "tfr" / "test"), "--export_dir", str(export),
                             "--output", str(predictions)], tmp_path)
    assert re.findall(r"instance (\d): 1 files", out) == ["0", "1"], log[-5000:]  # 2 files, 2 instances
    found = re.search(r"Test accuracy: ([0-9.]+) \((\d+) rows scored by 2 TFParallel instances", out)
    assert found and int(found.group(2)) == test_rows, out
    assert abs(float(found.group(1)) - accuracy) < 1e-3  # the same model, the same rows
    lines = [line for f in sorted(predictions.glob("part-*.csv")) for line in f.read_text().splitlines()]
    assert len(lines) == test_rows


def test_hyperparameter_search_returns_trials_best_first(spark_local_cluster, capsys):
    search = load_example(EXAMPLES / "hyperparam_search.py")
    ranked = search.main(["--search", "random", "--num_trials", "3", "--epochs", "2"])
    out = capsys.readouterr().out
    assert sorted(r["trial"] for r in ranked) == [0, 1, 2]
    accuracies = [r["val_accuracy"] for r in ranked]
    assert accuracies == sorted(accuracies, reverse=True) and accuracies[0] > 0.2
    assert "Best trial" in out and out.count("\n") >= 5
    grid = search.make_trials("grid", 0, 1, 0)
    assert len(grid) == 8 and len({(t["learning_rate"], t["hidden_units"], t["dropout"]) for t in grid}) == 8


def test_mnist_parameter_server_strategy(spark_local_cluster, mnist_data, tmp_path, capsys):
    ps = load_example(EXAMPLES / "mnist" / "mnist_ps.py")
    accuracy = ps.main(["--images_labels", str(mnist_data / "tfr"), "--cluster_size", "3", "--num_ps", "1",
                        "--driver_ps_nodes", "--epochs", "2", "--steps_per_epoch", "20",
                        "--export_dir", str(tmp_path / "export")])
    assert accuracy > 0.3, capsys.readouterr()  # chance is 0.1
    assert (tmp_path / "export" / "saved_model.pb").exists()
