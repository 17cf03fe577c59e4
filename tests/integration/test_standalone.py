"""tfos.standalone against real Spark daemons: a job runs, and stop() leaves no process behind."""

from __future__ import annotations

import subprocess
import sys

import psutil

from tfos.standalone import StandaloneCluster


def _alive(procs):
    live = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                live.append(proc)
        except psutil.NoSuchProcess:
            pass
    return live


def _daemons_of(master_url):
    """Running master or worker JVMs of the standalone master at ``master_url`` (not the driver's JVM)."""
    port = master_url.rsplit(":", 1)[1]
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or ()) + " "
        if ("deploy.master.Master " in cmd and f"--port {port} " in cmd) or \
                ("deploy.worker.Worker " in cmd and f"{master_url} " in cmd):
            found.append(proc)
    return _alive(found)


def _running_in(directory):
    """Running processes whose working directory is under ``directory`` (executors and their Python workers)."""
    found = []
    for proc in psutil.process_iter(["cwd"]):
        if (proc.info["cwd"] or "").startswith(str(directory)):
            found.append(proc)
    return _alive(found)


def test_cluster_runs_a_job_and_stops_clean(spark_sessions, tmp_path, no_leftover_processes):
    cluster = StandaloneCluster(workers=2, cores_per_worker=1, memory_per_worker="1g", work_dir=str(tmp_path))
    try:
        cluster.start()
        assert cluster.master_url.startswith("spark://127.0.0.1:")
        assert len(cluster.pids) == 3
        spark = spark_sessions.get(cluster.master_url, {"spark.executor.memory": "512m", "spark.cores.max": "2"})
        assert spark.sparkContext.parallelize(range(100), 4).sum() == 4950
        tree = []
        for pid in cluster.pids:
            root = psutil.Process(pid)
            tree += [root, *root.children(recursive=True)]
        # Master, 2 workers and at least one executor JVM, the executors running in the work dir.
        assert len([p for p in tree if "java" in p.name()]) >= 4, [p.cmdline() for p in tree]
        assert _running_in(tmp_path)
    finally:
        spark_sessions.stop()
        cluster.stop()
    assert cluster.pids == []
    assert _alive(tree) == [], [p.cmdline() for p in _alive(tree)]
    assert _daemons_of(cluster.master_url) == []
    assert _running_in(tmp_path) == []
    assert (tmp_path / "logs" / "master.log").exists()  # A caller's work_dir is kept.


def test_cli_runs_command_with_master_url(no_leftover_processes):
    script = "import os, sys; print(os.environ['SPARK_MASTER_URL']); print(sys.argv[1]); sys.exit(3)"
    result = subprocess.run(
        [sys.executable, "-m", "tfos.standalone", "run", "--workers", "1", "--memory", "1g", "--",
         sys.executable, "-c", script, "{MASTER}"],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 3, result.stderr
    env_url, arg_url = result.stdout.split()
    assert env_url.startswith("spark://127.0.0.1:") and arg_url == env_url
    assert "stopped" in result.stderr
    assert _daemons_of(env_url) == []
