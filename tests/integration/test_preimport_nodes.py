"""The TF process starts with its Spark task and imports main_fun's modules while the cluster is reserved
(``preimport``); main_fun still gets its TF_CONFIG and environment. Cheap modules stand in for TensorFlow."""

import json
import os
import sys

import cloudpickle
import pytest

from tfos import TFCluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def record_modules(args, ctx):
    info = {
        "preimported": [m for m in args["modules"] if m in sys.modules],
        "tf_config": json.loads(os.environ["TF_CONFIG"]),
        "job": os.environ["TFOS_JOB_NAME"], "worker_num": ctx.worker_num,
    }
    with open(os.path.join(args["out"], f"node{ctx.worker_num}.json"), "w") as f:
        json.dump(info, f)


def nodes(out, n):
    return [json.load(open(os.path.join(out, f"node{i}.json"))) for i in range(n)]


@pytest.mark.parametrize("preimport, expected", [
    ("xml.dom.minidom,no_such_module_tfos_test", ["xml.dom.minidom"]),  # a module that fails is left alone
    ("off", []),
])
def test_preimported_modules_are_loaded_before_main_fun_and_tf_config_arrives(spark_local_cluster, tmp_path,
                                                                               preimport, expected):
    args = {"out": str(tmp_path), "modules": ["xml.dom.minidom"]}
    cluster = TFCluster.run(spark_local_cluster.sparkContext, record_modules, args, 2, master_node="chief",
                            preimport=preimport)
    cluster.shutdown(timeout=120)
    chief, worker = nodes(tmp_path, 2)
    assert chief["preimported"] == expected and worker["preimported"] == expected
    assert chief["tf_config"]["task"] == {"type": "chief", "index": 0}
    assert worker["tf_config"]["task"] == {"type": "worker", "index": 0}
    assert chief["tf_config"]["cluster"] == worker["tf_config"]["cluster"]
    assert (chief["job"], worker["job"]) == ("chief", "worker")
