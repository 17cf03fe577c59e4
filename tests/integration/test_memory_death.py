"""A TF process that dies for memory: the driver's error says so and names the setting to raise.

Where this machine lets a test make a memory cgroup (v1 or v2), the TF process joins one with a small limit and
the kernel's OOM killer ends it with SIGKILL, as a YARN or Kubernetes container limit would. Elsewhere the TF
process lowers its own address-space limit (RLIMIT_AS, what spark.executor.pyspark.memory sets) and fails with
MemoryError.
"""

import os
import pathlib
import sys
import time
import uuid

import cloudpickle
import psutil
import pytest

from tfos import TFCluster
from tfos.errors import ClusterFailedError

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def memory_cgroup() -> pathlib.Path | None:
    """A new memory cgroup under this process's own, limited to 150 MiB above this process's size; None if the
    machine does not let us make one."""
    limit = psutil.Process().memory_info().rss + (150 << 20)
    for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):  # v1
            root, limit_file = pathlib.Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        elif controllers == "" and pathlib.Path("/sys/fs/cgroup/cgroup.controllers").exists():  # v2
            root, limit_file = pathlib.Path("/sys/fs/cgroup"), "memory.max"
        else:
            continue
        group = root / path.lstrip("/") / f"tfos-test-{uuid.uuid4().hex[:8]}"
        try:
            group.mkdir()
            (group / limit_file).write_text(str(limit))
            return group
        except OSError:
            try:
                group.rmdir()
            except OSError:
                pass
    return None


def eat_memory(args, ctx):
    if ctx.worker_num != 1:
        time.sleep(120)  # stopped by the driver once node 1 failed
        return
    if args["cgroup"]:
        with open(os.path.join(args["cgroup"], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    else:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    hog = []
    for _ in range(400):  # up to 8 GiB, touched page by page
        block = bytearray(20 << 20)
        block[::4096] = b"x" * len(block[::4096])
        hog.append(block)
    raise AssertionError("the memory limit did not stop this process")


def test_a_node_killed_for_memory_says_so(spark_local_cluster, tmp_path):
    group = memory_cgroup()
    try:
        cluster = TFCluster.run(spark_local_cluster.sparkContext, eat_memory,
                                {"cgroup": str(group) if group else ""}, 2, stop_grace_secs=2)
        with pytest.raises(ClusterFailedError) as info:
            cluster.shutdown(timeout=120)
    finally:
        if group is not None:
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except OSError:  # its last process is still exiting
                    time.sleep(0.1)
    text = str(info.value)
    assert "Root cause (first observed failure): node 1" in text
    if group is not None:
        assert "signal 9 (SIGKILL)" in text
    else:
        assert "MemoryError" in text
    assert "The TF process was probably killed for memory" in text
    assert "raise spark.executor.memoryOverhead" in text
    assert "spark.executor.memoryOverhead=384m (Spark's default" in text  # this cluster's figures
