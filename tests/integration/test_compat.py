"""The two 'done when' programs: a TensorFlowOnSpark-style main_fun, and TensorFlow's tutorial main() wrapped."""

import argparse
import json
import os
import pathlib

import cloudpickle
import pytest

import nodefns
from tfos import TFCluster

cloudpickle.register_pickle_by_value(nodefns)
TUTORIAL = str(pathlib.Path(__file__).parent / "tutorial")

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def test_tensorflowonspark_style_main_fun(spark_standalone, tmp_path):
    args = argparse.Namespace(batch_size=8, epochs=2, steps_per_epoch=3, export_dir=str(tmp_path / "export"),
                              out=str(tmp_path))
    cluster = TFCluster.run(spark_standalone.sparkContext, nodefns.tfos_style_main, args, 2, num_ps=0,
                            tensorboard=False, input_mode=TFCluster.InputMode.TENSORFLOW, master_node="chief")
    cluster.shutdown()
    results = [json.load(open(tmp_path / f"tfos_style{i}.json")) for i in range(2)]
    assert [(r["job"], r["steps"]) for r in results] == [("chief", 6), ("worker", 6)]
    assert (tmp_path / "export" / "saved_model.pb").exists()


def tutorial_main_fun(args, ctx):  # the 5-line wrapper around the tutorial's unchanged main()
    import sys
    sys.path.insert(0, args["dir"])
    import main
    main.main()
    open(os.path.join(args["out"], f"done{ctx.worker_num}"), "w").close()


def test_tutorial_main_on_two_executors(spark_standalone, tmp_path):
    cloudpickle.register_pickle_by_value(__import__(__name__))
    cluster = TFCluster.run(spark_standalone.sparkContext, tutorial_main_fun, {"dir": TUTORIAL, "out": str(tmp_path)}, 2)
    cluster.shutdown(timeout=300)
    assert sorted(os.listdir(tmp_path)) == ["done0", "done1"]
