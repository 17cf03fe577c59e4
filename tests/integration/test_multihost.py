"""Several hosts: Spark executors in network namespaces with their own addresses, the driver on a third.

The test makes a bridge ``10.77.N.1/24`` in the root namespace (the driver's and the master's host) and two
namespaces ``10.77.N.11`` and ``10.77.N.12``, each running a Spark standalone worker, so every TF node is on a
"host" of its own and nothing can reach another over 127.0.0.1. It then checks that ``TF_CONFIG``, the control
plane, the InputMode.SPARK feed and TensorBoard all use those addresses. Traffic goes only to the addresses the
test made. The namespaces and the bridge are removed afterwards, even on failure. Needs root (or
CAP_SYS_ADMIN + CAP_NET_ADMIN) and ``ip``; skips with the reason otherwise.

The last test starts executors the way Spark's Kubernetes backend does, through the image's entry point
(docker/spark-entrypoint.sh) with ``SPARK_EXECUTOR_POD_IP`` set to the namespace's address, and checks that the
TF nodes advertise that "pod IP".
"""

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import cloudpickle
import pyspark
import pytest

import nodefns
from conftest import DRIVER_CONF, STANDALONE_CONF
from tfos import TFCluster
from tfos.standalone import _free_port, _kill_trees, _tail

cloudpickle.register_pickle_by_value(nodefns)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

HOSTS = 2
ENTRYPOINT = os.path.join(os.path.dirname(__file__), "..", "..", "docker", "spark-entrypoint.sh")


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _free_subnet() -> str:
    used = _ip("-4", "-o", "addr", "show").stdout + _ip("-4", "route", "show").stdout
    for third in [100 + (os.getpid() + i) % 150 for i in range(150)]:
        net = ipaddress.ip_network(f"10.77.{third}.0/24")
        if f"10.77.{third}." not in used:
            return str(net.network_address)[:-2]
    pytest.skip("no free 10.77.x.0/24 subnet for the test hosts")


class NamespacedHosts:
    """A bridge in the root namespace plus ``HOSTS`` namespaces attached to it, each with its own address."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.bridge = f"tfosbr{tag}"
        self.names = [f"tfos-{tag}-h{i}" for i in range(HOSTS)]
        self.veths = [f"tfosv{tag}h{i}" for i in range(HOSTS)]
        self.prefix = _free_subnet()
        self.driver_ip = f"{self.prefix}.1"
        self.ips = [f"{self.prefix}.{11 + i}" for i in range(HOSTS)]

    def create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.driver_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for name, veth, addr in zip(self.names, self.veths, self.ips):
            _ip("netns", "add", name)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", name, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")

    def remove(self) -> None:
        """Kills whatever still runs in the namespaces, then deletes them and the bridge; never raises."""
        for name in self.names:
            pids = _ip("netns", "pids", name, check=False).stdout.split()
            _kill_trees([int(p) for p in pids], grace=3)
            _ip("netns", "del", name, check=False)
        for veth in self.veths:
            _ip("link", "del", veth, check=False)
        _ip("link", "del", self.bridge, check=False)


def _namespaces_permitted() -> str:
    """Why network namespaces cannot be made here, or "" when they can."""
    if not sys.platform.startswith("linux") or shutil.which("ip") is None:
        return "needs Linux with the ip command (iproute2)"
    probe = f"tfos-probe-{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"'ip netns add' is not permitted here ({made.stderr.strip()}); run as root or with CAP_SYS_ADMIN"
    _ip("netns", "del", probe, check=False)
    return ""


def _spawn(cmd, env, log_path):
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _alive_workers(webui: str) -> int:
    with urllib.request.urlopen(webui + "/json/", timeout=2) as resp:
        return sum(1 for w in json.load(resp).get("workers", []) if w.get("state") == "ALIVE")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, spark_sessions):
    """A standalone master on the driver's host and one worker (1 core) in each namespace."""
    reason = _namespaces_permitted()
    if reason:
        pytest.skip(reason)
    net = NamespacedHosts()
    work = tmp_path_factory.mktemp("multihost")
    spark_class = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-class")
    env = {**os.environ, "SPARK_HOME": os.path.dirname(pyspark.__file__), "PYSPARK_PYTHON": sys.executable,
           "SPARK_DAEMON_JAVA_OPTS": "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"}
    procs, logs = [], []
    spark_sessions.stop()
    try:
        net.create()
        port, webui_port = _free_port(net.driver_ip), _free_port(net.driver_ip)
        net.master_url, webui = f"spark://{net.driver_ip}:{port}", f"http://{net.driver_ip}:{webui_port}"
        logs.append(str(work / "master.log"))
        procs.append(_spawn([spark_class, "org.apache.spark.deploy.master.Master", "--host", net.driver_ip,
                             "--port", str(port), "--webui-port", str(webui_port)],
                            {**env, "SPARK_LOCAL_IP": net.driver_ip}, logs[-1]))
        for i, (name, addr) in enumerate(zip(net.names, net.ips)):
            logs.append(str(work / f"worker{i}.log"))
            procs.append(_spawn(["ip", "netns", "exec", name, spark_class, "org.apache.spark.deploy.worker.Worker",
                                 "--host", addr, "--cores", "1", "--memory", "1500m", "--webui-port", "0",
                                 "--work-dir", str(work / f"worker{i}"), net.master_url],
                                {**env, "SPARK_LOCAL_IP": addr}, logs[-1]))
        deadline, alive = time.monotonic() + 120, 0
        while alive < HOSTS:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                tails = "".join(f"\n--- {log} ---\n{_tail(log)}" for log in logs)
                pytest.fail(f"the namespaced Spark cluster did not start ({alive}/{HOSTS} workers ALIVE){tails}")
            try:
                alive = _alive_workers(webui)
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        yield net
    finally:
        spark_sessions.stop()
        _kill_trees([p.pid for p in procs], groups=True)
        for proc in procs:
            proc.wait(timeout=10)
        net.remove()


@pytest.fixture
def spark(hosts, spark_sessions):
    return spark_sessions.get(hosts.master_url, {**STANDALONE_CONF, "spark.driver.host": hosts.driver_ip,
                                                 "spark.driver.bindAddress": hosts.driver_ip})


def train_and_record(args, ctx):
    """MultiWorkerMirroredStrategy training that also records what the node saw."""
    nodefns.mwms_train(args, ctx)
    with open(os.path.join(args["out"], f"seen{ctx.worker_num}.json"), "w") as f:
        json.dump({"tf_config": json.loads(os.environ["TF_CONFIG"]), "host": ctx.host}, f)


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


def _get(url: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_mwms_control_plane_and_tensorboard_use_the_hosts_addresses(hosts, spark, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cluster = TFCluster.run(spark.sparkContext, train_and_record, {"out": str(out)}, HOSTS, master_node="chief",
                            tensorboard=True, log_dir=str(tmp_path / "tb"))
    try:
        assert _host(cluster.server.address) == hosts.driver_ip  # the control server the nodes registered with
        assert sorted(n["host"] for n in cluster.cluster_info) == hosts.ips  # one node per namespace
        url = cluster.tensorboard_url()
        assert url is not None and url.split("//")[1].split(":")[0] in hosts.ips
        assert _get(url) == 200  # reachable from another host
    finally:
        cluster.shutdown(timeout=300)
    seen = [json.load(open(out / f"seen{i}.json")) for i in range(HOSTS)]
    for node in seen:
        addresses = [a for job in node["tf_config"]["cluster"].values() for a in job]
        assert sorted(_host(a) for a in addresses) == hosts.ips, node
        assert node["host"] in hosts.ips
    steps = [json.load(open(out / f"steps{i}.json"))["steps"] for i in range(HOSTS)]
    assert steps[0] == steps[1] > 0


def test_spark_feed_reaches_nodes_on_other_hosts(hosts, spark, tmp_path):
    cluster = TFCluster.run(spark.sparkContext, nodefns.feed_count, {"out": str(tmp_path)}, HOSTS,
                            input_mode=TFCluster.InputMode.SPARK)
    try:
        assert sorted(_host(n["feed_addr"]) for n in cluster.cluster_info) == hosts.ips
        cluster.train(spark.sparkContext.parallelize(range(100), 4), num_epochs=1)
    finally:
        cluster.shutdown(timeout=300)
    counts = [json.load(open(tmp_path / f"count{i}.json")) for i in range(HOSTS)]
    assert [c["rows"] for c in counts] == [50, 50]
    assert sorted(i for c in counts for i in c["ids"]) == list(range(100))


def record_address(args, ctx):
    with open(os.path.join(args["out"], f"node{ctx.worker_num}.json"), "w") as f:
        json.dump({"tf_config": json.loads(os.environ["TF_CONFIG"]), "host": ctx.host,
                   "pod": os.environ.get("SPARK_EXECUTOR_POD_NAME")}, f)


def test_kubernetes_style_executors_advertise_their_pod_ip(hosts, spark_sessions, tmp_path):
    """Executors started by the image's entry point, as Spark on Kubernetes starts them, one per "pod"."""
    spark_home = os.path.dirname(pyspark.__file__)
    port, webui_port = _free_port(hosts.driver_ip), _free_port(hosts.driver_ip)
    master_url = f"spark://{hosts.driver_ip}:{port}"
    # A master without workers: the only executors are the ones this test starts.
    master = _spawn([os.path.join(spark_home, "bin", "spark-class"), "org.apache.spark.deploy.master.Master",
                     "--host", hosts.driver_ip, "--port", str(port), "--webui-port", str(webui_port)],
                    {**os.environ, "SPARK_HOME": spark_home, "SPARK_LOCAL_IP": hosts.driver_ip},
                    tmp_path / "master.log")
    executors = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _alive_workers(f"http://{hosts.driver_ip}:{webui_port}")
                break
            except (OSError, ValueError):
                assert time.monotonic() < deadline and master.poll() is None, _tail(str(tmp_path / "master.log"))
                time.sleep(0.5)
        spark = spark_sessions.get(master_url, {**STANDALONE_CONF, "spark.driver.host": hosts.driver_ip,
                                                "spark.driver.bindAddress": hosts.driver_ip})
        sc = spark.sparkContext
        for i, (name, addr) in enumerate(zip(hosts.names, hosts.ips)):
            env = {**os.environ, "SPARK_HOME": spark_home, "PYSPARK_PYTHON": sys.executable,
                   "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@{hosts.driver_ip}:{sc.getConf().get('spark.driver.port')}",
                   "SPARK_EXECUTOR_ID": str(100 + i), "SPARK_EXECUTOR_CORES": "1", "SPARK_EXECUTOR_MEMORY": "768m",
                   "SPARK_APPLICATION_ID": sc.applicationId, "SPARK_EXECUTOR_POD_IP": addr,
                   "SPARK_RESOURCE_PROFILE_ID": "0", "SPARK_EXECUTOR_POD_NAME": f"tfos-exec-{i}",
                   "SPARK_JAVA_OPT_0": DRIVER_CONF["spark.executor.extraJavaOptions"].split()[0],
                   "SPARK_JAVA_OPT_1": DRIVER_CONF["spark.executor.extraJavaOptions"].split()[1],
                   "SPARK_LOCAL_IP": "127.0.0.1"}  # loopback, as in the test run: the pod IP must win
            executors.append(_spawn(["ip", "netns", "exec", name, "bash", ENTRYPOINT, "executor"], env,
                                    tmp_path / f"executor{i}.log"))
        out = tmp_path / "out"
        out.mkdir()
        cluster = TFCluster.run(sc, record_address, {"out": str(out)}, HOSTS, slot_wait_timeout=120)
        cluster.shutdown(timeout=120)
        seen = [json.load(open(out / f"node{i}.json")) for i in range(HOSTS)]
        assert sorted(n["pod"] for n in seen) == ["tfos-exec-0", "tfos-exec-1"]
        assert sorted(n["host"] for n in seen) == hosts.ips
        for node in seen:
            assert sorted(_host(a) for a in node["tf_config"]["cluster"]["worker"]) == hosts.ips
    finally:
        spark_sessions.stop()
        _kill_trees([p.pid for p in executors + [master]], groups=True)
        for proc in executors + [master]:
            proc.wait(timeout=10)
