"""ParameterServerStrategy on a real Spark cluster: 1 ps + chief (coordinator) + 2 workers.

ps and worker nodes run ``tf.distribute.Server(...).join()`` forever; the cluster must end when the chief
(the coordinator) is done, with no node left in ``server.join()``.
"""

import json

import cloudpickle
import psutil
import pytest

import nodefns_more
from tfos import TFCluster

cloudpickle.register_pickle_by_value(nodefns_more)

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

PS_MASTER = "local-cluster[4,1,1024]"


@pytest.fixture
def spark_four_executors(spark_sessions):
    """A SparkSession on a local-cluster with 4 single-core executors (1 ps + chief + 2 workers)."""
    return spark_sessions.get(PS_MASTER)


def _servers(out):
    return sorted((json.loads(p.read_text()) for p in out.glob("server*.json")), key=lambda s: (s["job"], s["index"]))


def test_parameter_server_strategy_ends_when_the_chief_is_done(spark_four_executors, tmp_path):
    cluster = TFCluster.run(spark_four_executors.sparkContext, nodefns_more.pss_train, {"out": str(tmp_path)}, 4,
                            num_ps=1, master_node="chief", stop_grace_secs=3)
    assert [n["job_name"] for n in cluster.cluster_info] == ["ps", "chief", "worker", "worker"]
    cluster.shutdown(timeout=300)
    chief = json.loads((tmp_path / "chief.json").read_text())
    assert chief["iterations"] == 8
    assert all("/job:ps/" in device for device in chief["devices"].values())
    servers = _servers(tmp_path)
    assert [(s["job"], s["index"]) for s in servers] == [("ps", 0), ("worker", 0), ("worker", 1)]
    for server in servers:  # stopped by the driver once the chief returned: nobody is left in server.join()
        assert not psutil.pid_exists(server["pid"]) or psutil.Process(server["pid"]).status() == psutil.STATUS_ZOMBIE
