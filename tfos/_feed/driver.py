"""The driver side of InputMode.SPARK: count rows, plan, and run the feeding and scoring jobs.

A ``train()`` call with ``validation_data`` counts and plans both inputs before feeding anything, feeds the
validation rows once (one job, split ``"validation"``: the nodes write them to disk), then the epochs.

``TFCluster.train`` and ``TFCluster.inference`` (classic and Spark Connect) delegate here. What the feed needs
of a cluster is the small :class:`FeedBackend` protocol, nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
from typing import Any, Callable, Protocol

from .. import _spark
from ..config import Settings
from ..errors import ConfigError, FeedStallError
from . import client as feed
from .client import FeedTarget
from .plan import make_plan

logger = logging.getLogger(__name__)

# TensorFlowOnSpark fed 10 epochs when num_epochs was 0.
DEFAULT_EPOCHS = 10


@dataclasses.dataclass(frozen=True)
class FeedContext:
    """The running cluster's feed endpoints."""

    addresses: tuple[str, ...]  # of the training nodes (chief/master/worker), in node order
    secret: str = dataclasses.field(repr=False)
    settings: Settings = dataclasses.field(default_factory=Settings)


class FeedBackend(Protocol):
    """What ``train``/``inference`` need of a running cluster (``TFCluster``, ``ConnectCluster``)."""

    def _feed_context(self) -> FeedContext: ...

    def _run_feed_job(self, action: Callable[[], list], description: str) -> list:
        """Runs a Spark job that talks to the nodes; a node failure raises its root cause instead."""

    def _node_progress(self) -> list[dict]:
        """The nodes' latest heartbeat progress (``TFCluster.progress()``); ``[]`` if it cannot be had."""

    def _stop_after_feed_failure(self, reason: str) -> None:
        """Stops every node: the feed cannot go on."""


def is_dataframe(data: Any) -> bool:
    return hasattr(data, "mapInArrow") and hasattr(data, "schema")


def partition_counts(cluster: FeedBackend, data, is_df: bool) -> list[int]:
    """Rows per partition, in partition order (the input of the equal-rows plan)."""
    if is_df:
        rows = cluster._run_feed_job(
            lambda: data.mapInArrow(feed.count_arrow, "partition int, rows long").collect(), "tfos: count rows")
        counts = {r.partition: r.rows for r in rows}
        return [counts.get(i, 0) for i in range(max(counts, default=-1) + 1)]
    pairs = cluster._run_feed_job(lambda: data.mapPartitionsWithIndex(feed.count_rows).collect(),
                                  "tfos: count rows")
    return [n for _, n in sorted(pairs)]


class _Persisted:
    """``data`` persisted (memory and disk) for its count and feeds, unless the user cached it already."""

    def __init__(self, data) -> None:
        self.cached = data.is_cached
        if not self.cached:
            from pyspark import StorageLevel

            data = data.persist(StorageLevel.MEMORY_AND_DISK)  # counted once, read every epoch
        self.data, self.is_df = data, is_dataframe(data)

    def release(self) -> None:
        if not self.cached:
            self.data.unpersist()


def train(cluster: FeedBackend, data, num_epochs: int, feed_timeout: float, validation_data=None) -> None:
    """See ``TFCluster.train``."""
    if num_epochs < 0:
        raise ConfigError(f"num_epochs must be >= 0, got {num_epochs}")
    epochs = num_epochs or DEFAULT_EPOCHS
    context = cluster._feed_context()
    nodes = len(context.addresses)
    inputs: list[_Persisted] = []
    try:
        inputs.append(_Persisted(data))
        plan = _counted_plan(cluster, inputs[0], nodes, "rows", "one row per epoch")
        validation = None
        if validation_data is not None:  # counted and checked before anything is fed
            if not hasattr(validation_data, "is_cached"):
                raise ConfigError("validation_data must be an RDD or a DataFrame, got "
                                  f"{type(validation_data).__name__}")
            inputs.append(_Persisted(validation_data))
            validation = _counted_plan(cluster, inputs[1], nodes, "validation rows",
                                       "one validation row (give more validation_data, or none)")
        logger.info("feeding %d epoch(s) of %d rows in %d partitions: %d rows per node per epoch, %d rows per "
                    "epoch not fed (equal rows per node)", epochs, plan.quota * nodes + plan.dropped, len(plan.routes),
                    plan.quota, plan.dropped)
        settings = context.settings
        feed_id = secrets.token_hex(8)
        if validation is not None:
            _feed_validation(cluster, inputs[1], FeedTarget(
                context.addresses, context.secret, validation, feed_id, 0, 1, settings.feed_chunk_rows,
                feed_timeout, settings.feed_stall_timeout, split="validation", validation=True))
        for epoch in range(epochs):
            target = FeedTarget(context.addresses, context.secret, plan, feed_id, epoch, epochs,
                                settings.feed_chunk_rows, feed_timeout, settings.feed_stall_timeout,
                                validation=validation is not None)
            if _feed_once(cluster, inputs[0], target, f"tfos: feed epoch {epoch + 1}/{epochs}"):
                logger.info("the TF nodes terminated the feed during epoch %d", epoch + 1)
                break
    finally:
        for persisted in inputs:
            persisted.release()


def _counted_plan(cluster: FeedBackend, persisted: _Persisted, nodes: int, what: str, need: str):
    """The equal-rows plan of one input (every node gets ``rows // nodes``); a ConfigError when that is none."""
    counts = partition_counts(cluster, persisted.data, persisted.is_df)
    plan = make_plan(counts, nodes)
    if plan.quota == 0:
        raise ConfigError(f"train() got {sum(counts)} {what} for {nodes} training nodes: each node needs at least "
                          f"{need}")
    return plan


def _feed_validation(cluster: FeedBackend, val: _Persisted, target: FeedTarget) -> None:
    """Feeds the validation rows once; each node writes its share to its disk (it never waits for a reader)."""
    plan = target.plan
    logger.info("feeding %d validation rows in %d partitions: %d per node (%d not fed), once, before the first "
                "epoch; each node keeps its share on its disk for every epoch's validation",
                plan.quota * plan.nodes + plan.dropped, len(plan.routes), plan.quota, plan.dropped)
    if _feed_once(cluster, val, target, "tfos: feed the validation data"):
        logger.info("the TF nodes terminated the feed during the validation feed")


def _feed_once(cluster: FeedBackend, persisted: _Persisted, target: FeedTarget, description: str) -> bool:
    """Runs one feeding job (an epoch, or the validation data); True if every node said it takes no more rows."""
    data = persisted.data
    if persisted.is_df:
        fn = _spark.bind(feed.train_arrow, target)
        rows = cluster._run_feed_job(lambda: data.mapInArrow(fn, "outcome string").collect(), description)
        outcomes = [json.loads(r.outcome) for r in rows]
    else:
        fn = _spark.bind(feed.train_rows, target)
        outcomes = [json.loads(r) for r in cluster._run_feed_job(lambda: data.mapPartitions(fn).collect(),
                                                                  description)]
    _check_stall(cluster, outcomes)
    links = [link for o in outcomes for link in o["links"]]
    return bool(links) and all(link == "stopped" for link in links)


def _check_stall(cluster: FeedBackend, outcomes: list[dict]) -> None:
    """Raises the stall report of the first task that found the feed stalled, after stopping the nodes."""
    report = next((o["report"] for o in outcomes if o.get("status") == "stalled"), None)
    if report is None:
        return
    lines = [report, "What the driver knows of each node (its heartbeats):"]
    for row in cluster._node_progress():
        beat = row.get("heartbeat_secs")
        alive = "exited" if row.get("exited") else (f"alive, last heartbeat {beat:.0f}s ago" if beat is not None
                                                   else "alive")
        last = str(row.get("last_line") or "").strip()
        lines.append(f"  node {row.get('worker_num')} ({row.get('role')}): {alive}; "
                     + (f"last output line: {last[-200:]!r}" if last else "no output yet"))
    message = "\n".join(lines)
    logger.error("%s", message)
    cluster._stop_after_feed_failure("the Spark feed stalled (feed_stall_timeout)")
    raise FeedStallError(message)


def inference(cluster: FeedBackend, data, feed_timeout: float, schema: Any):
    """See ``TFCluster.inference``."""
    context = cluster._feed_context()
    addresses, secret = context.addresses, context.secret
    if not is_dataframe(data):
        chunk = context.settings.feed_chunk_rows
        return data.mapPartitions(_spark.bind(feed.infer_rows, addresses, secret, feed_timeout, chunk))
    if schema is None:
        raise ConfigError("inference(DataFrame) needs schema=, the schema of the results (e.g. 'prediction long')")
    from pyspark.sql.types import StructType, _parse_datatype_string

    struct = schema if isinstance(schema, StructType) else _parse_datatype_string(schema)
    return data.mapInArrow(_spark.bind(feed.infer_arrow, addresses, secret, feed_timeout, struct.json()), struct)
