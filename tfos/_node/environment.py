"""What a TF process's environment holds, and why: one policy for TFCluster nodes and TFParallel instances.

A TF process starts from the environment of the Spark Python worker that launched it, because that is where
the cluster put what the user's code needs: ``spark.executorEnv.*``, the YARN or Kubernetes container's
variables, ``PATH``, ``HOME``, ``JAVA_HOME``, ``HADOOP_*``, cloud credentials, ``PYTHONPATH`` with
``--py-files``. From it, tfos

* **drops** the Python worker's internals, which mean nothing outside that worker (:data:`WORKER_INTERNALS`):
  ``PYTHON_WORKER_FACTORY_SECRET`` (the secret between the executor JVM and its Python workers),
  ``PYSPARK_GATEWAY_SECRET``/``_PORT`` (the driver's py4j gateway, for ps nodes on the driver),
  ``_SPARK_AUTH_SECRET``, ``PYTHON_UDF_*``, ``PYTHON_DAEMON_*`` and PySpark's worker flags. A variable the user
  set through ``spark.executorEnv.<name>`` is never dropped.
* **sets the thread counts on purpose** (:func:`thread_env`, setting ``node_threads``): by default a TF process
  uses the cores Spark gave its task (``spark.task.cpus``): ``OMP_NUM_THREADS`` and
  ``TF_NUM_INTRAOP_THREADS`` are that count, so that nodes sharing a host or a container's CPU quota do not
  oversubscribe it. ``node_threads=tf`` leaves TensorFlow's own default (every core of the host) and removes the
  ``OMP_NUM_THREADS`` PySpark set; a number sets both to it. The user's own ``TF_NUM_INTRAOP_THREADS``,
  ``TF_NUM_INTEROP_THREADS`` and ``spark.executorEnv.OMP_NUM_THREADS`` win.
* **adds** what the TF process needs: ``TF_CONFIG`` (nodes only), ``TF_USE_LEGACY_KERAS`` (the Keras tfos chose,
  see :mod:`tfos._node.keras_choice`), ``CUDA_VISIBLE_DEVICES`` (its GPUs), ``PYTHONPATH`` (the task's ``sys.path`` first),
  ``PYTHONUNBUFFERED=1`` (output reaches the driver as it is printed) and tfos's ``TFOS_*`` variables (error
  file, worker number, role, log dir).
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

# The Spark Python worker's own variables: the worker's secret and wiring, never the user's business.
WORKER_INTERNALS = frozenset({
    "PYTHON_WORKER_FACTORY_SECRET", "PYTHON_WORKER_FACTORY_PORT", "PYSPARK_GATEWAY_SECRET", "PYSPARK_GATEWAY_PORT",
    "_SPARK_AUTH_SECRET", "_PYSPARK_DRIVER_CONN_INFO_PATH", "SPARK_REUSE_WORKER", "SPARK_PYTHON_RUNTIME",
    "SPARK_JOB_ARTIFACT_UUID", "SPARK_CONNECT_MODE", "SPARK_LAUNCH_WITH_SCALA", "PYSPARK_EXECUTOR_MEMORY_MB",
})
WORKER_INTERNAL_PREFIXES = ("PYTHON_UDF_", "PYTHON_DAEMON_")

# Thread-count variables tfos sets; TensorFlow reads the TF_* ones when it creates its thread pools.
THREAD_VARS = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
USER_THREAD_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")  # PySpark never sets these


def is_worker_internal(name: str) -> bool:
    return name in WORKER_INTERNALS or name.startswith(WORKER_INTERNAL_PREFIXES)


def inherited(base: Mapping[str, str], user_names: Iterable[str] = ()) -> dict[str, str]:
    """``base`` (the Python worker's environment) without the worker's internals, except those the user set
    through ``spark.executorEnv.<name>`` (``user_names``)."""
    keep = set(user_names)
    return {k: v for k, v in base.items() if k in keep or not is_worker_internal(k)}


def node_threads(setting: str, task_cpus: int) -> int | None:
    """The thread count a TF process gets for ``node_threads`` (``task``, ``tf`` or a number); None means
    TensorFlow's default. ``task_cpus`` is 0 when the process runs outside a Spark task (ps on the driver)."""
    if setting == "tf":
        return None
    if setting == "task":
        return task_cpus if task_cpus > 0 else None
    return int(setting)


def thread_env(env: dict[str, str], threads: int | None, user_names: Iterable[str] = ()) -> None:
    """Sets (or, for TensorFlow's default, removes) the thread-count variables in ``env``, leaving the user's."""
    user = set(user_names)
    for name in THREAD_VARS:
        if name in user or (name in USER_THREAD_VARS and name in env):
            continue  # the user's own value wins
        if threads is None:
            env.pop(name, None)
        else:
            env[name] = str(threads)


def tf_process_env(base: Mapping[str, str], *, user_names: Iterable[str] = (), threads: int | None = None,
                   legacy_keras: bool = True, gpus: str | None = None, sys_path: Iterable[str] = (),
                   tfos_vars: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None,
                   ) -> dict[str, str]:
    """The whole environment of a TF process (see the module docstring).

    Args:
        base: the Python worker's environment (``os.environ`` in the task).
        user_names: variables the user set through ``spark.executorEnv.<name>``.
        threads: the thread count (:func:`node_threads`); None leaves TensorFlow's default.
        legacy_keras: tf-keras 2 (``TF_USE_LEGACY_KERAS=1``) or Keras 3 (``0``).
        gpus: ``CUDA_VISIBLE_DEVICES``; None leaves the inherited value.
        sys_path: the task's ``sys.path``, put first on ``PYTHONPATH``.
        tfos_vars: ``TF_CONFIG`` and tfos's ``TFOS_*`` variables.
        extra: what tfos adds for the node's services (S3 settings from the Hadoop conf, the GPU claim's
            ``CUDA_DEVICE_ORDER``); set before the thread counts and tfos's own variables.
    """
    user = tuple(user_names)
    env = inherited(base, user)
    env.pop("TF_CONFIG", None)  # a node gets its own below; an instance gets none
    env.update(extra or {})
    thread_env(env, threads, user)
    env["TF_USE_LEGACY_KERAS"] = "1" if legacy_keras else "0"  # one Keras in the process: the one chosen
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*sys_path, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(tfos_vars or {})
    return env


def user_env_names(conf: Mapping[str, str]) -> tuple[str, ...]:
    """The variable names of the ``spark.executorEnv.<name>`` entries in a Spark conf mapping."""
    prefix = "spark.executorEnv."
    return tuple(sorted(k[len(prefix):] for k in conf if k.startswith(prefix) and len(k) > len(prefix)))
