"""``TFParallel.run`` for a Spark Connect session: the same instances, started by a DataFrame stage.

The instance tasks are :func:`tfos._node.instance.instance_task`, run through ``mapInArrow`` (with
``barrier=use_barrier``) instead of an RDD; each task's report (return value or failure) travels back pickled
in one binary column.
"""

from __future__ import annotations

import logging
import pickle
import secrets
from typing import Any, Callable, Iterable, Iterator

from .._driver.backends import ConnectBackend
from .._driver.launch import instance_results, prepare_instances, run_instance_job
from .._node.instance import DEFAULT_TIMEOUT, instance_task
from .._driver.spark import bind
from . import session as connect

logger = logging.getLogger(__name__)

REPORT_SCHEMA = "report binary"


def instance_batches(spec, batches: Iterable) -> Iterator:
    """``mapInArrow`` body: runs one instance (:func:`tfos._node.instance.instance_task`), yields its report."""
    import pyarrow as pa

    for report in instance_task(spec, batches):
        yield pa.RecordBatch.from_pydict({"report": [pickle.dumps(report)]},
                                         schema=pa.schema([("report", pa.binary())]))


def run(spark, map_fn: Callable[[Any, Any], Any], tf_args: Any, num_executors: Any, use_barrier: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT, **settings: Any) -> list:
    """``TFParallel.run`` on a Connect session; same arguments, results and errors."""
    spec = prepare_instances(ConnectBackend(spark), map_fn, tf_args, num_executors, use_barrier, timeout, settings)
    return instance_results(_collect(spark, spec), spec.num_executors)


def _collect(spark, spec) -> list[dict]:
    n = spec.num_executors
    fn = bind(instance_batches, spec)
    rows = run_instance_job(lambda on_done: connect.background_job(
        spark, lambda: spark.range(0, n, 1, n).mapInArrow(fn, REPORT_SCHEMA, barrier=spec.use_barrier).collect(),
        f"tfos-parallel-{secrets.token_hex(4)}", f"tfos: {n} TFParallel instances", on_done=on_done),
        spec, over=" over Spark Connect")
    return [pickle.loads(row.report) for row in rows]
