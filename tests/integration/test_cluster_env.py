"""What the YARN and Kubernetes recipes (docs/cluster.md) rely on, on the test clusters.

- Hadoop and Kerberos settings given to the executors reach the TF process: on YARN the executor's environment
  holds HADOOP_CONF_DIR and, with Kerberos, HADOOP_TOKEN_FILE_LOCATION; users add more with
  ``spark.executorEnv.NAME``. The TF process must see them unchanged.
- A Python environment shipped with ``--archives env.tar.gz#environment`` and
  ``PYSPARK_PYTHON=./environment/bin/python`` runs the nodes (on the standalone cluster: no YARN here).
"""

import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import venv

import cloudpickle
import pytest

from conftest import DRIVER_CONF, LOCAL_CLUSTER_MASTER, STANDALONE_CONF
from tfos import TFCluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

NAMES = ("HADOOP_CONF_DIR", "HADOOP_USER_NAME", "KRB5CCNAME", "KRB5_CONFIG", "HADOOP_TOKEN_FILE_LOCATION",
         "CLASSPATH", "TFOS_TEST_SETTING", "OMP_NUM_THREADS")


def record_env(args, ctx):
    with open(os.path.join(args["out"], f"env{ctx.worker_num}.json"), "w") as f:
        json.dump({name: os.environ.get(name) for name in args["names"]}, f)


def record_whole_env(args, ctx):
    with open(os.path.join(args["out"], f"whole{ctx.worker_num}.json"), "w") as f:
        json.dump(dict(os.environ), f)


def test_executor_env_reaches_the_tf_process(spark_sessions, tmp_path):
    wanted = {name: f"/etc/{name.lower()}" for name in NAMES}
    wanted["KRB5CCNAME"] = "FILE:/tmp/krb5cc_tfos_test"
    wanted["CLASSPATH"] = "/opt/hadoop/etc/hadoop:/opt/hadoop/share/hadoop/common/*"
    wanted["OMP_NUM_THREADS"] = "3"  # the user's own thread count wins over tfos's (the task's cores)
    spark_sessions.stop()
    try:
        spark = spark_sessions.get(LOCAL_CLUSTER_MASTER, {f"spark.executorEnv.{k}": v for k, v in wanted.items()})
        cluster = TFCluster.run(spark.sparkContext, record_env, {"out": str(tmp_path), "names": NAMES}, 2)
        cluster.shutdown(timeout=120)
    finally:
        spark_sessions.stop()  # these settings must not reach other tests' executors
    for i in range(2):
        assert json.load(open(tmp_path / f"env{i}.json")) == wanted


@pytest.mark.parametrize("threads", ["task", "tf", "2"])
def test_the_tf_process_environment_is_deliberate(spark_local_cluster, tmp_path, threads):
    """What the TF process gets (tfos._node.environment): the worker's internals and secret never; the thread
    counts as node_threads says; TF_CONFIG, the Keras choice and tfos's variables always."""
    cluster = TFCluster.run(spark_local_cluster.sparkContext, record_whole_env, {"out": str(tmp_path)}, 2,
                            node_threads=threads)
    cluster.shutdown(timeout=120)
    for i in range(2):
        env = json.load(open(tmp_path / f"whole{i}.json"))
        leaked = sorted(k for k in env if k in ("PYTHON_WORKER_FACTORY_SECRET", "PYSPARK_GATEWAY_SECRET",
                                                "SPARK_REUSE_WORKER", "SPARK_PYTHON_RUNTIME",
                                                "_PYSPARK_DRIVER_CONN_INFO_PATH")
                        or k.startswith(("PYTHON_UDF_", "PYTHON_DAEMON_")))
        assert leaked == []
        expected_threads = {"task": "1", "tf": None, "2": "2"}[threads]  # local-cluster[2,1,...]: 1 core a task
        assert env.get("OMP_NUM_THREADS") == expected_threads
        assert env.get("TF_NUM_INTRAOP_THREADS") == expected_threads
        assert json.loads(env["TF_CONFIG"])["task"] == {"type": "worker", "index": i}
        assert env["TF_USE_LEGACY_KERAS"] == "1" and env["PYTHONUNBUFFERED"] == "1"
        assert env["TFOS_WORKER_NUM"] == str(i) and env["SPARK_HOME"]  # Spark's own locations stay


WHERE_AM_I = """
    import json, os, sys
    # No TensorFlow import: what is tested is the interpreter the node runs in.
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    with open(os.path.join(sys.argv[1], f"{task['type']}{task['index']}.json"), "w") as f:
        json.dump({"executable": sys.executable, "prefix": sys.prefix, "cwd": os.getcwd()}, f)
"""


def pack_environment(where: pathlib.Path) -> pathlib.Path:
    """A small stand-in for ``venv-pack -o env.tar.gz``: a venv of this test's base Python whose site-packages
    reach this project's installed packages through a .pth file (instead of holding 2 GB of copies).

    Like a venv-pack archive, it needs the same base Python at the same path on every node (true here).
    """
    env_dir = where / "tfos_env"
    venv.EnvBuilder(symlinks=True, with_pip=False).create(env_dir)
    site = env_dir / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    project_site = sysconfig.get_paths()["purelib"]
    (site / "tfos_project.pth").write_text(f"import site; site.addsitedir({project_site!r})\n")
    archive = where / "tfos_env.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for entry in sorted(env_dir.iterdir()):
            tar.add(entry, arcname=entry.name)  # symlinks (bin/python, lib64) stay symlinks
    return archive


def test_packed_environment_shipped_with_archives_runs_the_nodes(standalone_cluster, spark_sessions, tmp_path):
    spark_sessions.stop()  # spark-submit starts its own application: free the standalone cluster's cores
    archive = pack_environment(tmp_path)
    script = tmp_path / "where_am_i.py"
    script.write_text(textwrap.dedent(WHERE_AM_I))
    out = tmp_path / "out"
    out.mkdir()
    launcher = subprocess.run([sys.executable, "-m", "tfos", "launcher"], capture_output=True, text=True,
                              timeout=60, check=True).stdout.strip()
    conf = [arg for key, value in {**DRIVER_CONF, **STANDALONE_CONF}.items() for arg in ("--conf", f"{key}={value}")]
    # As docs/cluster.md's YARN recipe: the driver keeps its Python, the executors use the unpacked archive.
    env = {**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable, "PYSPARK_PYTHON": "./environment/bin/python"}
    cmd = [pathlib.Path(sys.executable).parent / "spark-submit", "--master", standalone_cluster.master_url,
           "--archives", f"{archive}#environment", *conf, launcher, "run", script, "--num-executors", "2", "--", out]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    work = os.path.realpath(standalone_cluster.work_dir)
    for name in ("worker0.json", "worker1.json"):
        seen = json.load(open(out / name))
        prefix = os.path.realpath(seen["prefix"])
        # The executor's copy of the archive, in its work dir (<work>/worker-N/<app>/<executor>/environment).
        assert os.path.basename(prefix) == "environment" and prefix.startswith(work + os.sep), seen
        assert os.path.dirname(prefix) == os.path.realpath(seen["cwd"]), seen
        assert os.path.realpath(os.path.dirname(os.path.dirname(seen["executable"]))) == prefix, seen
