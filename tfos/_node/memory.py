"""Container memory: checked before it kills a node, and named when it did.

A TF node's TensorFlow process lives outside the executor's JVM heap. On YARN and Kubernetes the executor's
container holds ``spark.executor.memory`` (the heap) plus ``spark.executor.memoryOverhead`` plus
``spark.executor.pyspark.memory``; the TF process, its supervisor and the Python worker must fit in the last
two, or the container (or the kernel's OOM killer, inside its cgroup) kills them with SIGKILL.

The figure tfos takes for a TF process is ``node_memory_mb`` (1024 MiB by default): a CPU TensorFlow 2.21
process measured 630 MiB resident after ``import tensorflow`` and 690 MiB after training a small Keras model
under MultiWorkerMirroredStrategy on this project's test machine (README, "Memory on YARN and Kubernetes"); a
GPU process, a large model or data held in memory need more.

``spark.executor.pyspark.memory`` also sets an address-space limit (``RLIMIT_AS``) on each Python worker, of
that amount divided by the executor's cores, and the TF process inherits it: TensorFlow reserves about
1.8 GiB of address space at import (measured likewise), so a limit below :data:`TF_ADDRESS_SPACE_MIB` makes it
fail with ``MemoryError`` or ``std::bad_alloc``.

Everything here is pure (a Spark conf mapping in, text out), for the driver's check and the nodes' failure hints.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

MIN_OVERHEAD_MIB = 384  # Spark's spark.executor.minMemoryOverhead default
OVERHEAD_FACTOR = 0.10  # spark.executor.memoryOverheadFactor default ...
K8S_NON_JVM_OVERHEAD_FACTOR = 0.40  # ... and its default for non-JVM (PySpark) jobs on Kubernetes
TF_ADDRESS_SPACE_MIB = 4096  # an RLIMIT_AS below this breaks a TF process (it reserves ~1.8 GiB at import)

_UNITS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 ** 2, "p": 1024 ** 3}
# Markers of a memory death in a failure's text: the container manager's words, the kernel's, TensorFlow's.
_MEMORY_MARKERS = re.compile(
    r"exceeding memory limits|OOMKilled|exit code 137|exitCode=137|Container killed on request|"
    r"MemoryError|std::bad_alloc|Cannot allocate memory|OOM when allocating|ResourceExhaustedError",
)


def size_mib(text: str | None, default_unit: str = "m") -> int | None:
    """A Spark memory size (``4g``, ``512m``, ``384`` = MiB, ``1.5g``) in MiB; None when unset or unreadable."""
    if text is None or not str(text).strip():
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", str(text).lower())
    if match is None:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2) or default_unit])


def cluster_manager(master: str) -> str:
    """``yarn``, ``kubernetes``, or ``""`` for masters whose executors run without a container memory limit."""
    master = (master or "").lower()
    if master.startswith("yarn"):
        return "yarn"
    if master.startswith("k8s://"):
        return "kubernetes"
    return ""


@dataclasses.dataclass(frozen=True)
class ContainerMemory:
    """The executor container's memory, as the Spark conf sets it (MiB)."""

    manager: str
    heap: int
    overhead: int
    overhead_default: bool  # Spark's default overhead (no spark.executor.memoryOverhead)
    factor: float
    pyspark: int | None
    cores: int

    @classmethod
    def from_conf(cls, conf: Mapping[str, str]) -> ContainerMemory:
        manager = cluster_manager(conf.get("spark.master", ""))
        heap = size_mib(conf.get("spark.executor.memory")) or 1024
        default_factor = K8S_NON_JVM_OVERHEAD_FACTOR if manager == "kubernetes" else OVERHEAD_FACTOR
        try:
            factor = float(conf.get("spark.executor.memoryOverheadFactor") or default_factor)
        except ValueError:
            factor = default_factor
        floor = size_mib(conf.get("spark.executor.minMemoryOverhead")) or MIN_OVERHEAD_MIB
        explicit = size_mib(conf.get("spark.executor.memoryOverhead"))
        overhead = explicit if explicit is not None else max(floor, int(factor * heap))
        try:
            cores = max(1, int(conf.get("spark.executor.cores") or 1))
        except ValueError:
            cores = 1
        return cls(manager, heap, overhead, explicit is None, factor, size_mib(conf.get("spark.executor.pyspark.memory")),
                   cores)

    @property
    def outside_heap(self) -> int:
        """What the container holds beyond the JVM heap: where the TF process must fit."""
        return self.overhead + (self.pyspark or 0)

    @property
    def address_limit(self) -> int | None:
        """The RLIMIT_AS (MiB) PySpark sets on each Python worker, inherited by the TF process."""
        return self.pyspark // self.cores if self.pyspark else None

    def summary(self) -> str:
        """The figures in one line, as a failure hint quotes them."""
        overhead = (f"spark.executor.memoryOverhead={self.overhead}m (Spark's default: max({MIN_OVERHEAD_MIB}m, "
                    f"{self.factor:.2f} x spark.executor.memory={self.heap}m))" if self.overhead_default
                    else f"spark.executor.memoryOverhead={self.overhead}m")
        pyspark = f"spark.executor.pyspark.memory={self.pyspark}m" if self.pyspark else \
            "spark.executor.pyspark.memory unset"
        return f"{overhead}, {pyspark}"


def check(memory: ContainerMemory, need_mib: int) -> list[str]:
    """Warnings, with numbers, for a container too small for a TF process (``[]`` when it looks fine)."""
    warnings = []
    if need_mib and memory.manager and memory.outside_heap < need_mib:
        want = max(need_mib - (memory.pyspark or 0), MIN_OVERHEAD_MIB)  # the overhead that makes it fit
        warnings.append(
            f"TF nodes may be killed for memory: on {memory.manager} the executor's container holds the JVM heap "
            f"plus {memory.outside_heap} MiB for everything else ({memory.summary()}), and each TF node's "
            f"TensorFlow process, outside the heap, is taken to need {need_mib} MiB (node_memory_mb; a CPU "
            f"TensorFlow process measured 690 MiB training a small Keras model). Set "
            f"spark.executor.memoryOverhead={_round_up_gib(want)}g or more (or TFOS_NODE_MEMORY_MB to your "
            "model's figure; 0 turns this check off)."
        )
    limit = memory.address_limit
    if limit is not None and limit < TF_ADDRESS_SPACE_MIB:
        warnings.append(
            f"spark.executor.pyspark.memory={memory.pyspark}m limits each Python worker's address space (RLIMIT_AS) "
            f"to {limit} MiB ({memory.pyspark} MiB / spark.executor.cores={memory.cores}), and the TF process "
            f"inherits that limit: TensorFlow reserves about 1.8 GiB of address space at import and fails below "
            f"{TF_ADDRESS_SPACE_MIB} MiB with MemoryError or std::bad_alloc. Unset spark.executor.pyspark.memory "
            f"and raise spark.executor.memoryOverhead instead, or set it to at least "
            f"{_round_up_gib(TF_ADDRESS_SPACE_MIB * memory.cores)}g."
        )
    return warnings


def looks_like_memory(text: str) -> bool:
    """True when a failure's message, traceback or output names a memory death."""
    return bool(_MEMORY_MARKERS.search(text or ""))


def failure_hint(summary: str, address_limit_mib: int | None = None) -> str:
    """The hint a memory-shaped node failure carries: what probably happened and which setting to raise.

    Args:
        summary: :meth:`ContainerMemory.summary` from the driver ("" when unknown).
        address_limit_mib: the TF process's RLIMIT_AS, when it had one.
    """
    lines = ["The TF process was probably killed for memory (by the kernel's OOM killer or the container's "
             "limit on YARN/Kubernetes), or ran out of it. It lives outside the executor's JVM heap: raise "
             "spark.executor.memoryOverhead (or give the executors more memory), or use less per node "
             "(smaller batches, less data held in memory)."]
    if summary:
        lines.append(f"This cluster has {summary}.")
    if address_limit_mib is not None:
        lines.append(f"Its address space was limited to {address_limit_mib} MiB (RLIMIT_AS, set by "
                     "spark.executor.pyspark.memory): TensorFlow needs more; unset spark.executor.pyspark.memory "
                     f"or raise it to at least {TF_ADDRESS_SPACE_MIB} MiB per executor core.")
    return " ".join(lines)


def launch_memory(conf: Mapping[str, str], need_mib: int, log) -> str:
    """The driver's check before a launch: logs each warning with ``log``; returns the summary for the nodes."""
    memory = ContainerMemory.from_conf(conf)
    for warning in check(memory, need_mib):
        log(warning)
    return memory.summary()


def with_hint(text: str, summary: str) -> str:
    """``text`` (a Spark stage failure), with the memory hint when it names a memory death."""
    return f"{text}\n{failure_hint(summary)}" if looks_like_memory(text) else text


def _round_up_gib(mib: int) -> int:
    return max(1, -(-mib // 1024))
