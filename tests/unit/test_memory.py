"""The container memory check and the memory hints (tfos._node.memory), on fake Spark confs."""

import pytest

from tfos._node.memory import ContainerMemory, check, failure_hint, looks_like_memory, size_mib, with_hint
from tfos.config import from_env
from tfos.errors import ConfigError


@pytest.mark.parametrize("text,mib", [
    ("4g", 4096), ("512m", 512), ("384", 384), ("1.5g", 1536), ("2048k", 2), ("1t", 1024 ** 2), ("2GB", 2048),
    (None, None), ("", None), ("lots", None),
])
def test_size_mib(text, mib):
    assert size_mib(text) == mib


def test_spark_default_overhead_on_yarn():
    memory = ContainerMemory.from_conf({"spark.master": "yarn", "spark.executor.memory": "2g"})
    assert (memory.manager, memory.heap, memory.overhead, memory.outside_heap) == ("yarn", 2048, 384, 384)
    assert memory.overhead_default and memory.address_limit is None


def test_kubernetes_default_overhead_for_pyspark_is_forty_percent():
    memory = ContainerMemory.from_conf({"spark.master": "k8s://https://api:6443", "spark.executor.memory": "4g"})
    assert (memory.manager, memory.overhead) == ("kubernetes", int(0.4 * 4096))


def test_a_small_overhead_gets_a_warning_with_numbers():
    [warning] = check(ContainerMemory.from_conf({"spark.master": "yarn", "spark.executor.memory": "2g"}), 1024)
    assert "TF nodes may be killed for memory" in warning
    assert "384 MiB" in warning and "1024 MiB" in warning and "spark.executor.memoryOverhead=1g" in warning
    assert "max(384m, 0.10 x spark.executor.memory=2048m)" in warning


def test_enough_overhead_or_pyspark_memory_passes():
    assert check(ContainerMemory.from_conf({"spark.master": "yarn", "spark.executor.memoryOverhead": "2g"}), 1024) == []
    conf = {"spark.master": "yarn", "spark.executor.pyspark.memory": "8g", "spark.executor.cores": "2"}
    assert check(ContainerMemory.from_conf(conf), 1024) == []


def test_no_container_no_size_warning():
    for master in ("local[2]", "local-cluster[2,1,1024]", "spark://host:7077"):
        assert check(ContainerMemory.from_conf({"spark.master": master}), 1024) == []
    assert check(ContainerMemory.from_conf({"spark.master": "yarn"}), 0) == []  # node_memory_mb=0: off


def test_a_small_pyspark_memory_warns_of_the_inherited_address_space_limit_on_any_master():
    conf = {"spark.master": "spark://host:7077", "spark.executor.pyspark.memory": "4g", "spark.executor.cores": "2"}
    [warning] = check(ContainerMemory.from_conf(conf), 1024)
    assert "RLIMIT_AS" in warning and "2048 MiB" in warning and "at least 8g" in warning


def test_failure_hints():
    summary = ContainerMemory.from_conf({"spark.master": "yarn"}).summary()
    hint = failure_hint(summary, 1024)
    assert "probably killed for memory" in hint and "spark.executor.memoryOverhead" in hint
    assert summary in hint and "limited to 1024 MiB (RLIMIT_AS" in hint
    assert looks_like_memory("Container killed by YARN for exceeding memory limits. 5 GB of 5 GB physical")
    assert looks_like_memory("Reason: OOMKilled") and looks_like_memory("terminate called ... std::bad_alloc")
    assert not looks_like_memory("ValueError: boom")
    assert with_hint("ValueError: boom", summary) == "ValueError: boom"
    assert with_hint("exit code 137", summary).endswith(failure_hint(summary))


def test_node_memory_mb_setting():
    assert from_env({"TFOS_NODE_MEMORY_MB": "2048"}).node_memory_mb == 2048
    with pytest.raises(ConfigError, match="node_memory_mb must be >= 0.*TFOS_NODE_MEMORY_MB"):
        from_env({"TFOS_NODE_MEMORY_MB": "-1"})
