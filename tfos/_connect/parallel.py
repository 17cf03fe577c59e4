"""``TFParallel.run`` for a Spark Connect session: the same instances, started by a DataFrame stage.

The instance tasks are :func:`tfos._node.instance.instance_task`, run through ``mapInArrow`` (with
``barrier=use_barrier``) instead of an RDD; each task's report (return value or failure) travels back pickled
in one binary column.
"""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from .. import _keras
from .._node.environment import user_env_names
from .._node.instance import DEFAULT_TIMEOUT, InstanceSpec, ReturnsResult, instance_task
from .._pickle import dumps_for_nodes
from .._spark import bind
from ..config import from_env
from ..errors import ClusterFailedError, ConfigError, NodeFailure
from . import session as connect

logger = logging.getLogger(__name__)

REPORT_SCHEMA = "report binary"


def instance_batches(spec, batches: Iterable) -> Iterator:
    """``mapInArrow`` body: runs one instance (:func:`tfos._node.instance.instance_task`), yields its report."""
    import pyarrow as pa

    for report in instance_task(spec, batches):
        yield pa.RecordBatch.from_pydict({"report": [pickle.dumps(report)]},
                                         schema=pa.schema([("report", pa.binary())]))


def run(spark, map_fn: Callable[[Any, Any], Any], tf_args: Any, num_executors: int, use_barrier: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT, **settings: Any) -> list:
    """``TFParallel.run`` on a Connect session; same arguments, results and errors."""
    import cloudpickle

    if not callable(map_fn):
        raise ConfigError(f"map_fn must be callable, got {type(map_fn).__name__}")
    if not isinstance(num_executors, int) or isinstance(num_executors, bool) or num_executors < 1:
        raise ConfigError(f"num_executors must be an int >= 1, got {num_executors!r}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be > 0 seconds or None, got {timeout!r}")
    config = from_env(**settings)
    spec = InstanceSpec(
        fn=dumps_for_nodes(ReturnsResult(map_fn, num_executors), "map_fn",
                           " It must not capture the SparkSession, open files, locks or sockets; define it at "
                           "module level and pass what it needs through tf_args."),
        args=dumps_for_nodes(tf_args, "tf_args", ""),
        num_executors=num_executors, use_barrier=bool(use_barrier), default_fs=connect.default_fs(spark),
        working_dir=os.getcwd(), legacy_keras=_keras.choose(config.legacy_keras, map_fn) == _keras.TF_KERAS,
        stop_grace_secs=config.stop_grace_secs,
        log_tail_lines=config.log_tail_lines, timeout=float(timeout) if timeout is not None else None,
        gpus_per_node=config.gpus_per_node, gpu_lock_dir=config.gpu_lock_dir,
        user_env=user_env_names(connect.all_conf(spark)), node_threads=config.node_threads,
    )
    if use_barrier:
        connect.check_placement(spark, num_executors, config.slot_wait_timeout, parallel=True)
    reports = _collect(spark, spec)
    failures = [r["failure"] for r in reports if r["failure"] is not None]
    if failures:
        raise ClusterFailedError(failures, f"{len(failures)} of {num_executors} TFParallel instances failed.")
    return [cloudpickle.loads(r["result"]) if r["result"] is not None else None
            for r in sorted(reports, key=lambda r: r["worker_num"])]


def _collect(spark, spec) -> list[dict]:
    n = spec.num_executors
    fn = bind(instance_batches, spec)
    done = threading.Event()
    job = connect.background_job(
        spark, lambda: spark.range(0, n, 1, n).mapInArrow(fn, REPORT_SCHEMA, barrier=spec.use_barrier).collect(),
        f"tfos-parallel-{secrets.token_hex(4)}", f"tfos: {n} TFParallel instances", on_done=done.set)
    logger.info("starting %s TFParallel instances over Spark Connect (barrier=%s)", n, spec.use_barrier)
    started = time.monotonic()
    job.start()
    try:
        while not done.wait(1.0):
            pass
    except BaseException:
        job.cancel()
        job.join(30)
        raise
    job.join(30)
    if job.error is not None:
        raise ClusterFailedError(
            [NodeFailure(-1, "spark job", time=time.time(),
                         message=f"the Spark stage running the TFParallel instances failed: {job.error_text()}")],
            "TFParallel failed.",
        ) from job.error
    logger.info("%s TFParallel instances ended in %.1fs", n, time.monotonic() - started)
    return [pickle.loads(row.report) for row in job.results or []]
