"""Which GPUs a node's TF process may see (``CUDA_VISIBLE_DEVICES``).

Two ways, in this order:

1. **Spark schedules GPUs** (``spark.executor.resource.gpu.amount`` + ``spark.task.resource.gpu.amount`` and a
   discovery script): the task's ``TaskContext.resources()["gpu"]`` addresses, remapped through the executor's
   own ``CUDA_VISIBLE_DEVICES`` (:func:`visible_devices`).
2. **Otherwise**, as TensorFlowOnSpark did, each node picks ``gpus_per_node`` GPUs of its host with
   ``nvidia-smi``: GPUs that no process computes on first, then those with the least memory in use
   (:func:`choose`). Nodes on one host never get the same GPU: they choose under a host-wide lock
   (``fcntl.flock`` on ``tfos-gpus.lock`` in the lock directory) and record their choice in
   ``tfos-gpus.json`` next to it until the node ends; claims of processes that are gone are ignored
   (:func:`claim_gpus`). Parameter servers get no GPU. Without ``nvidia-smi`` nothing is changed.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
from typing import Iterable, Iterator, Sequence

from ..errors import PlacementError

logger = logging.getLogger(__name__)

LOCK_NAME = "tfos-gpus.lock"
CLAIMS_NAME = "tfos-gpus.json"
NVIDIA_SMI_TIMEOUT = 20.0
LOCK_TIMEOUT = 60.0


def visible_devices(assigned: Sequence[str] | None, inherited: str | None) -> str | None:
    """Maps the GPUs Spark assigned to a task to the child's ``CUDA_VISIBLE_DEVICES``.

    Spark's addresses index the devices this executor sees; when the executor itself was started with a
    ``CUDA_VISIBLE_DEVICES`` list, address ``i`` is that list's ``i``-th entry.

    Args:
        assigned: ``TaskContext.resources()["gpu"].addresses``, or None when Spark does not schedule GPUs.
        inherited: the executor's own ``CUDA_VISIBLE_DEVICES`` (None if unset).

    Returns:
        The value for the child, or None to leave the inherited one (Spark does not schedule GPUs).

    Raises:
        ValueError: an address is not an index into the inherited list.
    """
    if assigned is None:
        return None
    if not assigned:
        return ""
    if not inherited:
        return ",".join(str(a).strip() for a in assigned)
    visible = [d.strip() for d in inherited.split(",") if d.strip()]
    out = []
    for address in assigned:
        try:
            out.append(visible[int(address)])
        except (ValueError, IndexError):
            raise ValueError(
                f"Spark assigned GPU {address!r}, but this executor only sees CUDA_VISIBLE_DEVICES={inherited!r}; "
                "check spark.executor.resource.gpu.discoveryScript"
            ) from None
    return ",".join(out)


# ----- nvidia-smi -------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Gpu:
    """One GPU as ``nvidia-smi`` lists it."""

    index: str
    uuid: str
    memory_used: float = 0.0  # MiB
    memory_total: float = 0.0  # MiB


GPU_QUERY = ["--query-gpu=index,uuid,memory.used,memory.total", "--format=csv,noheader,nounits"]
APPS_QUERY = ["--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader,nounits"]


def _rows(text: str) -> Iterator[list[str]]:
    for row in csv.reader(io.StringIO(text)):
        cells = [c.strip() for c in row]
        if cells and any(cells):
            yield cells


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return 0.0


def parse_gpus(text: str) -> list[Gpu]:
    """Parses ``nvidia-smi --query-gpu=index,uuid,memory.used,memory.total --format=csv,noheader,nounits``."""
    gpus = []
    for cells in _rows(text):
        if len(cells) < 2 or not cells[0].isdigit():
            continue  # "No devices were found" and other messages
        used, total = (_number(cells[i]) if len(cells) > i else 0.0 for i in (2, 3))
        gpus.append(Gpu(cells[0], cells[1], used, total))
    return gpus


def parse_busy(text: str) -> set[str]:
    """The GPU UUIDs with compute processes, from ``nvidia-smi --query-compute-apps=gpu_uuid,pid ...``."""
    return {cells[0] for cells in _rows(text) if cells[0].startswith("GPU-")}


def query(nvidia_smi: str = "nvidia-smi", timeout: float = NVIDIA_SMI_TIMEOUT) -> tuple[list[Gpu], set[str]] | None:
    """Lists this host's GPUs and the busy ones with ``nvidia-smi``; None when it is missing or fails."""
    outputs = []
    for args in (GPU_QUERY, APPS_QUERY):
        try:
            done = subprocess.run([nvidia_smi, *args], capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            logger.debug("%s not found: GPUs are not detected", nvidia_smi)
            return None
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.warning("%s failed (%s): GPUs are not detected", nvidia_smi, exc)
            return None
        if done.returncode != 0:
            if "No devices were found" in done.stdout + done.stderr:
                return [], set()
            logger.warning("%s %s exited with %s: %s", nvidia_smi, " ".join(args), done.returncode,
                           (done.stderr or done.stdout).strip()[:500])
            return None
        outputs.append(done.stdout)
    return parse_gpus(outputs[0]), parse_busy(outputs[1])


def restrict(gpus: Iterable[Gpu], inherited: str | None) -> list[tuple[str, Gpu]]:
    """The GPUs this executor may use, each with the name to put in the child's ``CUDA_VISIBLE_DEVICES``.

    With an inherited ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs) only its GPUs count, named as it names them;
    otherwise every GPU, by ``nvidia-smi`` index (the child then gets ``CUDA_DEVICE_ORDER=PCI_BUS_ID``).
    """
    gpus = list(gpus)
    if inherited is None:
        return [(g.index, g) for g in gpus]
    out = []
    for name in (d.strip() for d in inherited.split(",") if d.strip()):
        match = next((g for g in gpus if name in (g.index, g.uuid) or (len(name) > 8 and g.uuid.startswith(name))),
                     None)
        if match is not None:
            out.append((name, match))
    return out


def choose(candidates: Sequence[tuple[str, Gpu]], busy: set[str], taken: set[str], count: int,
           where: str = "") -> list[tuple[str, Gpu]]:
    """Picks ``count`` GPUs: never one in ``taken``; free ones (not in ``busy``) first, then least memory used.

    Args:
        candidates: ``(name, gpu)`` pairs from :func:`restrict`.
        busy: UUIDs of GPUs with compute processes.
        taken: UUIDs claimed by other tfos nodes on this host.
        count: how many GPUs to pick.
        where: the node and host, for the error message.

    Raises:
        PlacementError: fewer than ``count`` GPUs are not taken.
    """
    free = [c for c in candidates if c[1].uuid not in taken]
    if len(free) < count:
        raise PlacementError(
            f"{where or 'this node'} needs {count} GPU(s) but only {len(free)} of the {len(candidates)} GPU(s) it "
            f"may use are not held by other tfos nodes on this host. Without Spark GPU scheduling each node takes "
            "TFOS_GPUS_PER_NODE GPUs of its host (nvidia-smi): lower TFOS_GPUS_PER_NODE (or num_gpus), run fewer "
            "nodes per host, or let Spark schedule GPUs (spark.executor.resource.gpu.amount, "
            "spark.task.resource.gpu.amount)."
        )
    order = sorted(free, key=lambda c: (c[1].uuid in busy, c[1].memory_used, _sort_index(c[1].index)))
    return order[:count]


def _sort_index(index: str) -> int:
    return int(index) if index.isdigit() else 1 << 30


# ----- the host-wide claim ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(lock_dir: str, timeout: float) -> Iterator[None]:
    """Holds ``fcntl.flock`` on ``lock_dir/tfos-gpus.lock``, waiting at most ``timeout`` seconds for it."""
    os.makedirs(lock_dir, exist_ok=True)
    path = os.path.join(lock_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PlacementError(
                        f"could not lock {path} within {timeout:.0f}s to choose GPUs: another process holds it. "
                        "Set TFOS_GPU_LOCK_DIR to a directory of this host's that every executor can write."
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _process_key(pid: int) -> float | None:
    """The process's start time (tells a live claimant from a reused pid), or None if it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _read_claims(path: str) -> dict[str, dict]:
    """Live claims ``{uuid: {"pid", "started", "owner", "name"}}``; claims of processes that are gone are dropped."""
    try:
        with open(path) as f:
            claims = json.load(f)
    except (OSError, ValueError):
        return {}
    return {uuid: c for uuid, c in claims.items()
            if isinstance(c, dict) and _process_key(int(c.get("pid", 0))) == c.get("started")}


def _write_claims(path: str, claims: dict[str, dict]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(claims, f)
    os.replace(tmp, path)


@dataclasses.dataclass
class GpuClaim:
    """GPUs a node holds on its host until :meth:`release`.

    Attributes:
        devices: the child's ``CUDA_VISIBLE_DEVICES``.
        uuids: the claimed GPUs' UUIDs.
        env: extra variables for the child (``CUDA_DEVICE_ORDER`` when the names are nvidia-smi indices).
    """

    devices: str
    uuids: tuple[str, ...] = ()
    env: dict = dataclasses.field(default_factory=dict)
    lock_dir: str = ""
    pid: int = 0

    def release(self, timeout: float = LOCK_TIMEOUT) -> None:
        """Gives the GPUs back (best effort: a claim of a process that is gone is ignored anyway)."""
        if not self.uuids:
            return
        try:
            with _locked(self.lock_dir, timeout):
                path = os.path.join(self.lock_dir, CLAIMS_NAME)
                claims = _read_claims(path)
                for uuid in self.uuids:
                    if claims.get(uuid, {}).get("pid") == self.pid:
                        del claims[uuid]
                _write_claims(path, claims)
        except (OSError, PlacementError) as exc:
            logger.warning("could not release GPUs %s: %s", self.devices, exc)
        self.uuids = ()


def claim_gpus(count: int, owner: str, lock_dir: str | None = None, inherited: str | None = None,
               nvidia_smi: str = "nvidia-smi", pid: int | None = None,
               lock_timeout: float = LOCK_TIMEOUT) -> GpuClaim | None:
    """Chooses and claims ``count`` GPUs of this host for one node (Spark does not schedule GPUs).

    Args:
        count: GPUs to take; 0 hides every GPU from the child (``CUDA_VISIBLE_DEVICES=""``).
        owner: who claims, for the claims file and messages (e.g. ``"cluster 1a2b node 1 (worker:0)"``).
        lock_dir: where the lock and claims files live; the temp directory when None or empty.
        inherited: the executor's ``CUDA_VISIBLE_DEVICES`` (None when unset).
        nvidia_smi: the ``nvidia-smi`` command.
        pid: the process the claim lives as long as (this one by default).
        lock_timeout: seconds to wait for the host-wide lock.

    Returns:
        The claim, or None to leave ``CUDA_VISIBLE_DEVICES`` as inherited (no ``nvidia-smi``, or no GPU).

    Raises:
        PlacementError: the host has fewer unclaimed GPUs than ``count``, or the lock stayed busy.
    """
    if count <= 0:
        return GpuClaim("")
    if inherited is not None and not inherited.strip():
        return None  # the executor was given no GPU: the child inherits that
    lock_dir = lock_dir or tempfile.gettempdir()
    pid = pid or os.getpid()
    with _locked(lock_dir, lock_timeout):
        found = query(nvidia_smi)
        if not found or not found[0]:
            return None
        gpus, busy = found
        path = os.path.join(lock_dir, CLAIMS_NAME)
        claims = _read_claims(path)
        where = f"{owner} on host {socket.gethostname()}"
        picked = choose(restrict(gpus, inherited), busy, set(claims), count, where)
        started = _process_key(pid)
        for _, gpu in picked:
            claims[gpu.uuid] = {"pid": pid, "started": started, "owner": owner, "name": gpu.index}
        _write_claims(path, claims)
    devices = ",".join(name for name, _ in picked)
    logger.info("%s takes GPU(s) %s (free first, then least memory used; %d busy, %d held by other tfos nodes)",
                owner, devices, len(busy), len(claims) - len(picked))
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"} if inherited is None else {}
    return GpuClaim(devices, tuple(g.uuid for _, g in picked), env, lock_dir, pid)
