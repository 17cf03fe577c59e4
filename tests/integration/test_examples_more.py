"""The TFParallel, pipeline and ParameterServerStrategy examples, run in-process on a real local-cluster.

Each example's ``main(argv)`` takes the active SparkSession (``getOrCreate``), so the tests call it with a few
steps instead of going through spark-submit; ``test_examples.py`` covers spark-submit itself.
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


def test_mnist_pipeline_then_tfparallel_inference(spark_local_cluster, mnist_data, tmp_path, capsys):
    pipeline = load_example(EXAMPLES / "mnist" / "mnist_pipeline.py")
    export = tmp_path / "export"
    accuracy = pipeline.main(["--csv", str(mnist_data / "csv"), "--epochs", "3", "--export_dir", str(export),
                              "--pipeline_dir", str(tmp_path / "pipeline")])
    out = capsys.readouterr().out
    assert accuracy > 0.5 and "rows scored by TFModel.transform" in out, out  # chance is 0.1
    reloaded = float(re.search(r"Reloaded pipeline .* accuracy ([0-9.]+)", out).group(1))
    assert abs(reloaded - accuracy) < 1e-4

    inference = load_example(EXAMPLES / "mnist" / "mnist_inference.py")
    counts = inference.main(["--images_labels", str(mnist_data / "tfr" / "test"), "--export_dir", str(export),
                             "--output", str(tmp_path / "predictions")])
    out = capsys.readouterr().out
    assert [c["files"] for c in counts] == [1, 1]  # 2 files, 2 instances
    test_rows = int(re.search(r"test_rows=(\d+)", (mnist_data / "SOURCE.txt").read_text()).group(1))
    assert sum(c["rows"] for c in counts) == test_rows
    assert abs(sum(c["correct"] for c in counts) / test_rows - accuracy) < 1e-3  # the same model, the same rows
    assert len((tmp_path / "predictions" / "part-00000.csv").read_text().splitlines()) == counts[0]["rows"]
    assert "Test accuracy" in out


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
