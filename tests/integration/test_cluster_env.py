"""Hadoop and Kerberos settings given to the executors reach the TF process (YARN/Kubernetes recipes rely on it).

On YARN the executor's environment holds HADOOP_CONF_DIR and, with Kerberos, HADOOP_TOKEN_FILE_LOCATION; users
add more with ``spark.executorEnv.NAME``. The TF process must see them unchanged.
"""

import json
import os
import sys

import cloudpickle
import pytest

from conftest import LOCAL_CLUSTER_MASTER
from tfos import TFCluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

NAMES = ("HADOOP_CONF_DIR", "HADOOP_USER_NAME", "KRB5CCNAME", "KRB5_CONFIG", "HADOOP_TOKEN_FILE_LOCATION",
         "CLASSPATH", "TFOS_TEST_SETTING")


def record_env(args, ctx):
    with open(os.path.join(args["out"], f"env{ctx.worker_num}.json"), "w") as f:
        json.dump({name: os.environ.get(name) for name in args["names"]}, f)


def test_executor_env_reaches_the_tf_process(spark_sessions, tmp_path):
    wanted = {name: f"/etc/{name.lower()}" for name in NAMES}
    wanted["KRB5CCNAME"] = "FILE:/tmp/krb5cc_tfos_test"
    wanted["CLASSPATH"] = "/opt/hadoop/etc/hadoop:/opt/hadoop/share/hadoop/common/*"
    spark_sessions.stop()
    try:
        spark = spark_sessions.get(LOCAL_CLUSTER_MASTER, {f"spark.executorEnv.{k}": v for k, v in wanted.items()})
        cluster = TFCluster.run(spark.sparkContext, record_env, {"out": str(tmp_path), "names": NAMES}, 2)
        cluster.shutdown(timeout=120)
    finally:
        spark_sessions.stop()  # these settings must not reach other tests' executors
    for i in range(2):
        assert json.load(open(tmp_path / f"env{i}.json")) == wanted
