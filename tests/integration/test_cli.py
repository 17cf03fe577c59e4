"""``python -m tfos run`` and the same through ``spark-submit``: unmodified scripts on real Spark clusters.

Each test runs the command line in a subprocess (its own Spark driver), as a user would.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from conftest import LOCAL_CLUSTER_MASTER

TUTORIAL = pathlib.Path(__file__).parent / "tutorial" / "main.py"
PYTHON_BIN = pathlib.Path(sys.executable).parent
# What the in-process test sessions get from conftest.DRIVER_CONF: loopback, no UI, light JVMs.
LIGHT = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
CONF = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1", "spark.ui.enabled": "false",
        "spark.driver.extraJavaOptions": LIGHT, "spark.executor.extraJavaOptions": LIGHT}
STANDALONE = {"spark.cores.max": "2", "spark.task.cpus": "1", "spark.executor.cores": "1",
              "spark.executor.memory": "1g"}

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def conf_args(conf):
    return [arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")]


# The progress display's first lines would come after 1 s (default 10 s): short enough for any run here to show
# them if the display were on.
FAST_PROGRESS = {"TFOS_PROGRESS_INTERVAL": "1"}
PROGRESS_HEADER = "tfos progress after "


def run(cmd, cwd, timeout=900, env=None):
    """Runs ``cmd`` with its stdout and stderr piped (not a terminal); returns (exit status, output)."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=str(cwd),
                          env={**os.environ, "PYSPARK_PYTHON": sys.executable, **(env or {})})
    return proc.returncode, proc.stdout + proc.stderr


def tfos_run(script_and_options, cwd, script_args=(), env=None):
    cmd = [sys.executable, "-m", "tfos", "run", *script_and_options, "--master", LOCAL_CLUSTER_MASTER,
           *conf_args(CONF), "--", *script_args]
    return run(cmd, cwd, env=env)


@pytest.fixture
def spark_free(spark_sessions):
    spark_sessions.stop()  # the CLI starts its own driver: free this process's executors and cores first


def test_tutorial_script_unchanged(spark_free, tmp_path):
    env = {**FAST_PROGRESS, "TFOS_PROGRESS": "auto"}
    code, output = tfos_run([TUTORIAL, "--num-executors", "2"], tmp_path, env=env)
    assert code == 0, output[-5000:]
    for node in ("worker:0", "worker:1"):
        assert f"[{node}] Epoch 2/2" in output, output[-5000:]
    assert "tfos: main.py finished on 2 TF nodes" in output
    # Piped output: progress="auto" turns the display off (no status lines, no INFO records of them).
    assert PROGRESS_HEADER not in output, output[-5000:]


RECORD = """
    import json, os, sys
    # Unmodified-script behaviour: TF_CONFIG in the environment, __main__, sys.argv, the executor's cwd.
    out = sys.argv[sys.argv.index("--out") + 1]
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    with open(os.path.join(out, f"{task['type']}{task['index']}.json"), "w") as f:
        json.dump({"argv": sys.argv[1:], "name": __name__, "cwd": os.getcwd(), "tf_config": os.environ["TF_CONFIG"]}, f)
    if task == {"type": "worker", "index": 1} and "--exit" in sys.argv:
        sys.exit(int(sys.argv[sys.argv.index("--exit") + 1]))
    if task == {"type": "worker", "index": 1} and "--raise" in sys.argv:
        raise RuntimeError("cannot open the training data")
"""


def write_script(tmp_path, name="record.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(RECORD))
    return path


def test_argv_main_and_chief_with_module_form_and_py_files(spark_free, tmp_path):
    shipped = tmp_path / "shipped"  # not on any sys.path: only --py-files brings it to the executors
    shipped.mkdir()
    module = write_script(shipped, "tfos_cli_record.py")
    out = tmp_path / "out"
    out.mkdir()
    code, output = tfos_run(["-m", "tfos_cli_record", "--py-files", module, "-n", "2", "--master-node", "chief"],
                            tmp_path, ["--out", out, "--epochs", "3"])
    assert code == 0, output[-5000:]
    chief, worker = (json.load(open(out / name)) for name in ("chief0.json", "worker0.json"))
    assert chief["argv"] == worker["argv"] == ["--out", str(out), "--epochs", "3"]
    assert chief["name"] == "__main__"
    assert json.loads(chief["tf_config"])["cluster"].keys() == {"chief", "worker"}
    assert chief["cwd"] != str(tmp_path)  # the executor's working directory, not the driver's
    assert "node 0 (chief:0) ended: ok, exit code 0" in output
    assert "RuntimeWarning" not in output  # runpy's warning when tfos._node.child was imported before it ran


def test_script_exit_status_is_the_run_status(spark_free, tmp_path):
    code, output = tfos_run([write_script(tmp_path), "-n", "2"], tmp_path, ["--out", tmp_path, "--exit", "3"])
    assert code == 3, output[-5000:]
    assert "Root cause (first observed failure): node 1, worker:1" in output
    assert "record.py exited with status 3 (sys.exit(3))" in output


def test_script_that_raises_fails_the_run_with_its_traceback(spark_free, tmp_path):
    code, output = tfos_run([write_script(tmp_path), "-n", "2"], tmp_path, ["--out", tmp_path, "--raise"])
    assert code == 1, output[-5000:]
    assert "Root cause (first observed failure): node 1, worker:1" in output
    assert "error: RuntimeError: cannot open the training data" in output
    assert f'File "{tmp_path / "record.py"}", line 11' in output  # the script's own line, in the traceback


def test_tutorial_through_spark_submit(standalone_cluster, spark_free, tmp_path):
    code, launcher = run([sys.executable, "-m", "tfos", "launcher"], tmp_path)
    assert code == 0, launcher
    cmd = [PYTHON_BIN / "spark-submit", "--master", standalone_cluster.master_url,
           *conf_args({**CONF, **STANDALONE}), launcher.strip(), "run", TUTORIAL, "--num-executors", "2",
           "--progress", "log"]
    code, output = run(cmd, tmp_path, env=FAST_PROGRESS)
    assert code == 0, output[-5000:]
    for node in ("worker:0", "worker:1"):
        assert f"[{node}] Epoch 2/2" in output, output[-5000:]
    assert f"master {standalone_cluster.master_url}" in output
    # --progress log: the display's lines arrive as the tfos logger's INFO records, even though output is piped.
    assert f"INFO tfos._driver.progress: {PROGRESS_HEADER}" in output, output[-5000:]
