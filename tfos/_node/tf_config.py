"""Pure functions that lay out TF roles and build each node's ``TF_CONFIG``.

Layout (TensorFlowOnSpark's, by node index ``worker_num``)::

    [0, num_ps)                 ps
    num_ps                      master_node ("chief" or "master"), if one is asked for
    ...                         worker
    num_executors - 1           evaluator, if eval_node

No I/O here: these are unit-tested for every layout.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

from ..errors import ConfigError

# Jobs that take part in synchronous training (counted by ctx.num_workers, as in TensorFlowOnSpark).
TRAINING_JOBS = ("chief", "master", "worker")


def service_jobs(template: Mapping[str, Sequence[int]]) -> frozenset[str]:
    """Jobs whose nodes serve others and run until the driver stops them (TensorFlowOnSpark: ps, evaluator).

    With parameter servers and a chief, the chief is ParameterServerStrategy's coordinator and the workers
    only serve it, so they are service nodes too: training is over when the chief is done.
    """
    jobs = {"ps", "evaluator"}
    if "ps" in template and ("chief" in template or "master" in template):
        jobs.add("worker")
    return frozenset(jobs)


def make_template(
    num_executors: int, num_ps: int = 0, master_node: str | None = None, eval_node: bool = False
) -> dict[str, list[int]]:
    """Assigns each node index to a TF job.

    Returns:
        ``{job_name: [worker_num, ...]}`` in job order ps, chief/master, worker, evaluator, without empty jobs.

    Raises:
        ConfigError: the counts leave no training node, or master_node is not chief/master.
    """
    if num_executors < 1:
        raise ConfigError(f"num_executors must be at least 1, got {num_executors}")
    if num_ps < 0:
        raise ConfigError(f"num_ps must be >= 0, got {num_ps}")
    if master_node not in (None, "chief", "master"):
        raise ConfigError(f"master_node must be None, 'chief' or 'master', got {master_node!r}")
    training = num_executors - num_ps - (1 if eval_node else 0)
    if training < 1:
        raise ConfigError(
            f"num_executors={num_executors} leaves no training node after num_ps={num_ps}"
            f"{' and eval_node' if eval_node else ''}; raise num_executors or lower num_ps."
        )
    template: dict[str, list[int]] = {}
    nodes = list(range(num_executors))
    if num_ps:
        template["ps"] = nodes[:num_ps]
    rest = nodes[num_ps : num_ps + training]
    if master_node:
        template[master_node] = rest[:1]
        rest = rest[1:]
    if rest:
        template["worker"] = rest
    if eval_node:
        template["evaluator"] = [num_executors - 1]
    return template


def role_of(template: Mapping[str, Sequence[int]], worker_num: int) -> tuple[str, int]:
    """Returns ``(job_name, task_index)`` of a node index."""
    for job, nums in template.items():
        if worker_num in nums:
            return job, list(nums).index(worker_num)
    raise ConfigError(f"node {worker_num} is not in the cluster template {dict(template)}")


def make_cluster_spec(
    template: Mapping[str, Sequence[int]], addresses: Mapping[int, str]
) -> dict[str, list[str]]:
    """Builds ``{job: ["host:port", ...]}`` from the template and each node's address."""
    missing = [n for nums in template.values() for n in nums if n not in addresses]
    if missing:
        raise ConfigError(f"no address for nodes {missing}")
    return {job: [addresses[n] for n in nums] for job, nums in template.items()}


def make_tf_config(cluster_spec: Mapping[str, Sequence[str]], job_name: str, task_index: int) -> dict:
    """Builds the ``TF_CONFIG`` dict of one node.

    The evaluator is left out of ``cluster`` for every node, as TensorFlow requires (it is not part of the
    training cluster); its own ``task`` still says ``evaluator``.
    """
    cluster = {job: list(addrs) for job, addrs in cluster_spec.items() if job != "evaluator" and addrs}
    if job_name != "evaluator" and task_index >= len(cluster.get(job_name, ())):
        raise ConfigError(f"{job_name}:{task_index} is not in the cluster spec {cluster}")
    return {"cluster": cluster, "task": {"type": job_name, "index": task_index}, "environment": "cloud"}


def tf_config_json(cluster_spec: Mapping[str, Sequence[str]], job_name: str, task_index: int) -> str:
    return json.dumps(make_tf_config(cluster_spec, job_name, task_index), sort_keys=True)


def num_training_workers(cluster_spec: Mapping[str, Sequence]) -> int:
    """TensorFlowOnSpark's ``ctx.num_workers``: chief + master + worker nodes."""
    return sum(len(v) for k, v in cluster_spec.items() if k in TRAINING_JOBS)
