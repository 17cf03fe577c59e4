"""Soak: 20 train/shutdown cycles on one Spark application leave no growth in processes, threads, open files
or memory, on the driver and on the executors.

Not in the default run (marked ``soak``). Run it with::

    scripts/test.sh -m soak tests/soak

Set ``TFOS_SOAK_REPORT=bench/results/soak.md`` to write the before/after table there. ``TFOS_SOAK_CYCLES``
changes the number of cycles (default 20).
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time

import cloudpickle
import psutil
import pytest

pytestmark = [pytest.mark.soak, pytest.mark.timeout(2400), pytest.mark.usefixtures("no_leftover_processes")]

CYCLES = int(os.environ.get("TFOS_SOAK_CYCLES", "20"))


def train_a_little(args, ctx):
    """A small MultiWorkerMirroredStrategy Keras fit: a real train cycle, a few seconds long."""
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x = np.random.default_rng(ctx.worker_num).normal(size=(128, 4)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, x.sum(axis=1))).repeat().batch(8 * ctx.num_workers)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(4, activation="relu"), tf.keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
    model.fit(ds, epochs=2, steps_per_epoch=5, verbose=0)
    ctx.report_progress(step=10)


cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _safe(fn, default=0):
    try:
        return fn()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return default


def _group(procs) -> dict:
    return {
        "processes": len(procs),
        "threads": sum(_safe(p.num_threads) for p in procs),
        "open files": sum(_safe(p.num_fds) for p in procs),
        "memory MB": round(sum(_safe(lambda p=p: p.memory_info().rss) for p in procs) / 2**20, 1),
    }


def snapshot() -> dict:
    """Resource counts of the driver (this Python process, its JVM) and the executors (JVMs, Python workers)."""
    me = psutil.Process()
    family = me.children(recursive=True)
    cmd = {p.pid: " ".join(_safe(p.cmdline, [])) for p in family}
    executors = [p for p in family if "org.apache.spark.executor." in cmd[p.pid]]
    python_workers = [p for p in family if "pyspark.daemon" in cmd[p.pid] or "pyspark.worker" in cmd[p.pid]]
    tf_nodes = [p for p in psutil.process_iter() if "tfos._node." in " ".join(_safe(p.cmdline, []))
                and _safe(lambda p=p: p.environ().get("TFOS_TEST_RUN_ID"), None) == os.environ["TFOS_TEST_RUN_ID"]]
    driver_jvm = [p for p in family if "pyspark-shell" in cmd[p.pid] and p not in executors]
    return {
        "driver python": {**_group([me]), "python threads": threading.active_count()},
        "driver JVM": _group(driver_jvm),
        "executor JVMs": _group(executors),
        "executor Python workers": _group(python_workers),
        "TF processes (tfos._node.*)": _group(tf_nodes),
        "all descendants of the driver": {"processes": len(family)},
    }


def growth_problems(before: dict, after: dict) -> list[str]:
    """What grew beyond noise. Threads, files and processes must not grow (small slack for the JVMs' pools);
    memory may grow by allocator noise, not by a leak per cycle."""
    limits = {"processes": 0, "threads": 8, "python threads": 0, "open files": 8, "memory MB": 150}
    problems = []
    for group, counts in after.items():
        for key, value in counts.items():
            slack = limits[key] if group.endswith("JVMs") or group == "driver JVM" or key == "memory MB" else \
                min(limits[key], 2)
            if value - before[group].get(key, 0) > slack:
                problems.append(f"{group} {key}: {before[group].get(key, 0)} -> {value}")
    return problems


NOTES = ("Reading: the driver's Python process and the TF processes must not grow at all (they do not); JVM "
         "threads and open files within a few of the start (Spark's own pools and caches); JVM memory moves by "
         "heap noise (no full GC is forced). Python workers idle for 60 s are stopped by PySpark, hence fewer after. "
         "Cycle times include a loaded machine (other test runs shared its 2 cores).")


def write_report(path: str, before: dict, after: dict, seconds: list[float]) -> None:
    lines = [
        "# Soak: train/shutdown cycles on one Spark application",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}; "
        f"date {time.strftime('%Y-%m-%d')}. {len(seconds)} cycles of `TFCluster.run` (2 nodes, a small "
        "MultiWorkerMirroredStrategy Keras fit) + `shutdown()` on local-cluster[2,1,1024]; counts taken after a "
        "warm-up cycle (before) and after the last cycle (after), once the cluster has shut down and then "
        f"{IDLE_SECS} s idle (Spark's cached JVM thread pools drop threads idle for 60 s). Produced by "
        "`TFOS_SOAK_REPORT=bench/results/soak.md scripts/test.sh -m soak tests/soak`.",
        "",
        "| where | measure | before | after | change |",
        "|---|---|---|---|---|",
    ]
    for group, counts in after.items():
        for key, value in counts.items():
            old = before[group].get(key, 0)
            lines.append(f"| {group} | {key} | {old} | {value} | {value - old:+.1f} |")
    lines += ["", NOTES]
    lines += ["", f"Cycle time: median {sorted(seconds)[len(seconds) // 2]:.1f} s, min {min(seconds):.1f} s, "
              f"max {max(seconds):.1f} s.", "", "Raw cycle times (s): " + ", ".join(f"{s:.1f}" for s in seconds)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local-cluster[2,1,1024]").appName("tfos-soak")
               .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false").getOrCreate())
    yield session
    session.stop()


# Spark's cached thread pools (block-manager-ask-thread-pool, block-manager-storage-async-thread-pool, ...) grow
# with every job and drop threads idle for 60 s: counts are taken after that, so they show leaks, not pool sizes.
IDLE_SECS = 65


def _settled_snapshot() -> dict:
    """A snapshot once the TF processes of the last cycle are gone and Spark's idle pool threads expired."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and snapshot()["TF processes (tfos._node.*)"]["processes"]:
        time.sleep(1)
    time.sleep(IDLE_SECS)
    return snapshot()


def test_train_shutdown_cycles_leave_no_growth(spark):
    from tfos import TFCluster

    def cycle() -> float:
        start = time.monotonic()
        cluster = TFCluster.run(spark.sparkContext, train_a_little, {}, 2, stop_grace_secs=2, progress="off")
        cluster.shutdown(timeout=300)
        return time.monotonic() - start

    cycle()  # warm-up: Python workers, JIT, gRPC's first channel
    before = _settled_snapshot()
    seconds = [cycle() for _ in range(CYCLES)]
    after = _settled_snapshot()
    if os.environ.get("TFOS_SOAK_REPORT"):
        write_report(os.environ["TFOS_SOAK_REPORT"], before, after, seconds)
    assert after["TF processes (tfos._node.*)"]["processes"] == 0
    assert growth_problems(before, after) == [], (before, after)
