"""The driver side of InputMode.SPARK: count rows, plan, and run the feeding and scoring jobs.

``TFCluster.train`` and ``TFCluster.inference`` delegate here; jobs that talk to the nodes run through the
cluster's ``_run_feed_job``, which turns a node failure into its root cause.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .. import _spark
from ..errors import ConfigError
from . import client as feed
from .client import FeedTarget
from .plan import make_plan

logger = logging.getLogger(__name__)

# TensorFlowOnSpark fed 10 epochs when num_epochs was 0.
DEFAULT_EPOCHS = 10


def is_dataframe(data: Any) -> bool:
    return hasattr(data, "mapInArrow") and hasattr(data, "schema")


def partition_counts(cluster, data, is_df: bool) -> list[int]:
    """Rows per partition, in partition order (the input of the equal-rows plan)."""
    if is_df:
        rows = cluster._run_feed_job(
            lambda: data.mapInArrow(feed.count_arrow, "partition int, rows long").collect(), "tfos: count rows")
        counts = {r.partition: r.rows for r in rows}
        return [counts.get(i, 0) for i in range(max(counts, default=-1) + 1)]
    pairs = cluster._run_feed_job(lambda: data.mapPartitionsWithIndex(feed.count_rows).collect(),
                                  "tfos: count rows")
    return [n for _, n in sorted(pairs)]


def train(cluster, data, num_epochs: int, feed_timeout: float) -> None:
    """See ``TFCluster.train``."""
    from pyspark import StorageLevel

    if num_epochs < 0:
        raise ConfigError(f"num_epochs must be >= 0, got {num_epochs}")
    epochs = num_epochs or DEFAULT_EPOCHS
    addresses = tuple(cluster._feed_addresses())
    is_df = is_dataframe(data)
    cached = data.is_cached
    if not cached:
        data = data.persist(StorageLevel.MEMORY_AND_DISK)  # counted once, read every epoch
    try:
        counts = partition_counts(cluster, data, is_df)
        plan = make_plan(counts, len(addresses))
        if plan.quota == 0:
            raise ConfigError(f"train() got {sum(counts)} rows for {len(addresses)} training nodes: each node "
                              "needs at least one row per epoch")
        logger.info("feeding %d epoch(s) of %d rows: %d rows per node per epoch, %d rows per epoch not fed "
                    "(equal rows per node)", epochs, sum(counts), plan.quota, plan.dropped)
        settings, secret = cluster._config.settings, cluster._config.spec.secret
        for epoch in range(epochs):
            target = FeedTarget(addresses, secret, plan.segments, plan.quota, epoch, settings.feed_chunk_rows,
                                feed_timeout)
            if is_df:
                fn = _spark.bind(feed.train_arrow, target)
                rows = cluster._run_feed_job(lambda: data.mapInArrow(fn, "stopped long, sent long").collect(),
                                             f"tfos: feed epoch {epoch + 1}/{epochs}")
                stopped = all(r.stopped == r.sent for r in rows if r.sent)
            else:
                fn = _spark.bind(feed.train_rows, target)
                rows = cluster._run_feed_job(lambda: data.mapPartitions(fn).collect(),
                                             f"tfos: feed epoch {epoch + 1}/{epochs}")
                stopped = all(o == "stopped" for r in rows for o in json.loads(r)["outcomes"])
            if stopped:
                logger.info("the TF nodes terminated the feed during epoch %d", epoch + 1)
                break
    finally:
        if not cached:
            data.unpersist()


def inference(cluster, data, feed_timeout: float, schema: Any):
    """See ``TFCluster.inference``."""
    addresses = tuple(cluster._feed_addresses())
    secret = cluster._config.spec.secret
    if not is_dataframe(data):
        chunk = cluster._config.settings.feed_chunk_rows
        return data.mapPartitions(_spark.bind(feed.infer_rows, addresses, secret, feed_timeout, chunk))
    if schema is None:
        raise ConfigError("inference(DataFrame) needs schema=, the schema of the results (e.g. 'prediction long')")
    from pyspark.sql.types import StructType, _parse_datatype_string

    struct = schema if isinstance(schema, StructType) else _parse_datatype_string(schema)
    return data.mapInArrow(_spark.bind(feed.infer_arrow, addresses, secret, feed_timeout, struct.json()), struct)
