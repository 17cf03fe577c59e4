"""Clean teardown: after Ctrl-C on the driver or a shutdown timeout, no TF process or TensorBoard is left and
the ports are free."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import cloudpickle
import psutil
import pytest

import nodefns_reliability as fns
from tfos import TFCluster
from tfos.errors import ShutdownTimeoutError

cloudpickle.register_pickle_by_value(fns)

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

HERE = pathlib.Path(__file__).parent


def wait_gone(pids, timeout=30):
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    return alive


def port_free(port):
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def connect_refused(address):
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        return False
    except OSError:
        return True


def tf_pids(out):
    return [int(p.read_text()) for p in pathlib.Path(out).glob("pid*_0")]


def wait_for_pids(out, timeout=60):
    deadline = time.monotonic() + timeout
    while len(tf_pids(out)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)


def test_ctrl_c_on_the_driver_stops_every_tf_process_and_tensorboard(tmp_path):
    # A terminal's Ctrl-C goes to the driver's whole process group: so does this SIGINT.
    proc = subprocess.Popen([sys.executable, str(HERE / "teardown_driver.py"), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    try:
        line = ""
        deadline = time.monotonic() + 240
        while "READY" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "READY" in line, f"driver did not start: {proc.poll()} {proc.stderr.read()[-3000:]}"
        info = json.loads((tmp_path / "cluster.json").read_text())
        wait_for_pids(tmp_path)
        pids = tf_pids(tmp_path) + [info["tb_pid"]]
        assert len(pids) == 3 and all(psutil.pid_exists(p) for p in pids)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 130 and "INTERRUPTED" in out, err[-3000:]
    assert wait_gone(pids) == []
    assert all(port_free(p) for p in info["ports"]) and connect_refused(info["control"])


def test_shutdown_timeout_stops_tf_processes_and_tensorboard_and_frees_ports(spark_local_cluster, tmp_path):
    cluster = TFCluster.run(spark_local_cluster.sparkContext, fns.write_pid_and_wait, {"out": str(tmp_path)}, 2,
                            master_node="chief", tensorboard=True, log_dir=str(tmp_path / "logs"),
                            stop_grace_secs=2, progress="off")
    tb_pid = next(n["tb_pid"] for n in cluster._state.node_table() if n["tb_pid"])
    ports, control = [n["port"] for n in cluster.cluster_info], cluster.server.address
    wait_for_pids(tmp_path)
    pids = tf_pids(tmp_path) + [tb_pid]
    with pytest.raises(ShutdownTimeoutError, match=r"did not finish within timeout=2s.*Still running"):
        cluster.shutdown(timeout=2)
    assert wait_gone(pids) == []
    assert all(port_free(p) for p in ports) and connect_refused(control)
