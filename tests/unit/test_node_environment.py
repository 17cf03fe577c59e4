"""The TF process's environment policy (tfos._node.environment), on fake worker environments."""

import json

import pytest

from tfos._node.environment import inherited, node_threads, tf_process_env, thread_env, user_env_names
from tfos._node.spec import LaunchSpec, NodePlace
from tfos._node.supervisor import child_env
from tfos.config import from_env
from tfos.errors import ConfigError

WORKER = {
    "PATH": "/usr/bin", "HOME": "/home/u", "HADOOP_CONF_DIR": "/etc/hadoop", "SPARK_HOME": "/opt/spark",
    "PYTHONPATH": "/opt/spark/python/lib/pyspark.zip", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "4",
    "PYTHON_WORKER_FACTORY_SECRET": "s3cret", "PYTHON_WORKER_FACTORY_PORT": "4040", "PYSPARK_GATEWAY_SECRET": "g",
    "PYTHON_UDF_BATCH_SIZE": "100", "PYTHON_DAEMON_KILL_WORKER_ON_FLUSH_FAILURE": "1", "SPARK_REUSE_WORKER": "1",
    "SPARK_PYTHON_RUNTIME": "PYTHON_WORKER", "_PYSPARK_DRIVER_CONN_INFO_PATH": "/tmp/x", "TF_CONFIG": "{stale}",
}


def test_the_workers_internals_and_secrets_are_dropped_and_the_rest_kept():
    env = inherited(WORKER)
    assert sorted(env) == ["HADOOP_CONF_DIR", "HOME", "OMP_NUM_THREADS", "PATH", "PYTHONHASHSEED", "PYTHONPATH",
                           "SPARK_HOME", "TF_CONFIG"]


def test_a_variable_the_user_set_through_executor_env_is_kept():
    assert inherited(WORKER, ["SPARK_REUSE_WORKER"])["SPARK_REUSE_WORKER"] == "1"


@pytest.mark.parametrize("setting,cpus,expected", [
    ("task", 4, 4), ("task", 0, None), ("tf", 4, None), ("3", 4, 3),
])
def test_node_threads(setting, cpus, expected):
    assert node_threads(setting, cpus) == expected


def test_thread_counts_are_set_removed_or_left_to_the_user():
    env = {"OMP_NUM_THREADS": "4"}
    thread_env(env, 2)
    assert env == {"OMP_NUM_THREADS": "2", "TF_NUM_INTRAOP_THREADS": "2"}
    env = {"OMP_NUM_THREADS": "4"}
    thread_env(env, None)  # TensorFlow's default: PySpark's OMP_NUM_THREADS goes too
    assert env == {}
    env = {"OMP_NUM_THREADS": "8", "TF_NUM_INTRAOP_THREADS": "6"}
    thread_env(env, 2, ["OMP_NUM_THREADS"])  # the user's spark.executorEnv value and own TF variable win
    assert env == {"OMP_NUM_THREADS": "8", "TF_NUM_INTRAOP_THREADS": "6"}


def test_the_whole_environment_of_a_node():
    spec = LaunchSpec("c", "127.0.0.1:1", "s", template={"worker": [0, 1]}, legacy_keras=False,
                      extra_env={"AWS_REGION": "x"})
    place = NodePlace(1, "127.0.0.1", "3", sys_path=("/task/dir",), gpus="", cpus=2)
    env = child_env(WORKER, spec, place, json.dumps({"task": {"type": "worker", "index": 1}}), "/tmp/err.json",
                    "worker", 1, "/logs")
    assert "PYTHON_WORKER_FACTORY_SECRET" not in env and "PYSPARK_GATEWAY_SECRET" not in env
    assert json.loads(env["TF_CONFIG"])["task"]["index"] == 1
    assert (env["OMP_NUM_THREADS"], env["TF_NUM_INTRAOP_THREADS"]) == ("2", "2")
    assert env["TF_USE_LEGACY_KERAS"] == "0" and env["CUDA_VISIBLE_DEVICES"] == "" and env["AWS_REGION"] == "x"
    assert env["PYTHONPATH"] == "/task/dir:/opt/spark/python/lib/pyspark.zip" and env["PYTHONUNBUFFERED"] == "1"
    assert (env["TFOS_WORKER_NUM"], env["TFOS_JOB_NAME"], env["TFOS_LOG_DIR"]) == ("1", "worker", "/logs")


def test_an_instance_gets_no_tf_config():
    assert "TF_CONFIG" not in tf_process_env(WORKER)


def test_user_env_names_come_from_the_spark_conf():
    conf = {"spark.executorEnv.OMP_NUM_THREADS": "8", "spark.executorEnv.": "", "spark.master": "yarn"}
    assert user_env_names(conf) == ("OMP_NUM_THREADS",)


@pytest.mark.parametrize("raw,value", [("task", "task"), ("TF", "tf"), (" 4 ", "4")])
def test_the_node_threads_setting(raw, value):
    assert from_env({"TFOS_NODE_THREADS": raw}).node_threads == value


@pytest.mark.parametrize("raw", ["0", "-1", "all", "1.5"])
def test_a_bad_node_threads_setting_says_what_is_accepted(raw):
    with pytest.raises(ConfigError, match=r"node_threads must be 'task'.*'tf'.*TFOS_NODE_THREADS"):
        from_env({"TFOS_NODE_THREADS": raw})
