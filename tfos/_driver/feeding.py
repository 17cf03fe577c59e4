"""``train()``, ``inference()`` and the shutdown arguments, written once for both kinds of cluster.

``TFCluster`` (a SparkContext) and ``ConnectCluster`` (a Spark Connect session) differ in how they run a job
that talks to the nodes, learn a node's failure and stop the nodes: that is their side of
:class:`tfos._feed.driver.FeedBackend`. What the user calls, and the checks before anything is fed, are here.
"""

from __future__ import annotations

from typing import Any, cast

from .._feed import driver as feed_driver
from .._node.spec import SPARK_MODE
from ..errors import ConfigError


class FeedMethods:
    """The InputMode.SPARK half of a cluster's API. A cluster class that mixes it in has ``_config`` (its launch:
    ``spec.secret``, ``settings``), ``defaultFS``, ``cluster_info``, ``input_mode`` and ``_closed``, implements
    the rest of ``FeedBackend`` (``_run_feed_job``, ``_node_progress``, ``_stop_after_feed_failure``) and may
    refine :meth:`_check_feed_data` and :meth:`_result_schema`."""

    _config: Any
    defaultFS: str
    cluster_info: list[dict]
    input_mode: int
    _closed: bool

    def train(self, dataRDD: Any, num_epochs: int = 0, feed_timeout: float = 600, qname: str = "input",
              validation_data: Any = None) -> None:
        """Feeds an RDD or DataFrame to the training nodes, ``num_epochs`` times (InputMode.SPARK only).

        Equal-steps policy: every node gets ``rows // nodes`` rows per epoch (the last ``rows % nodes`` are not
        fed), so ``model.fit`` takes the same number of steps on every worker, however uneven the partitions.
        A DataFrame may be read by the nodes as Parquet (``feed_path``: a plain Parquet scan's own files, or a
        cache Spark writes once; the counts come from the files' footers); otherwise the rows are counted per
        partition first and every partition feeds every chief/worker node: its rows are dealt in rounds of
        ``feed_chunk_rows`` rows per node, over one connection per node, so the feed cannot deadlock whatever
        the number of task slots, partitions and nodes (see docs/feed.md). Each node queues at most
        ``feed_queue_chunks`` messages; a full queue makes the feeding tasks wait. Data that is not cached is
        persisted (memory and disk) for the count and the epochs, then unpersisted.

        With ``validation_data``, every node gets ``validation rows // nodes`` of them too, fed once, before the
        first epoch; each node writes its share to its local disk (never to its queue) and
        ``feed.dataset(split="validation")`` replays it at every epoch, so ``model.fit(train_ds,
        validation_data=val_ds)`` works under MultiWorkerMirroredStrategy. Both inputs are counted before
        anything is fed.

        Args:
            dataRDD: an RDD (rows travel pickled in chunks) or a DataFrame (rows travel as Arrow batches).
                Under Spark Connect: a DataFrame.
            num_epochs: times to feed the data; 0 means 10, as in TensorFlowOnSpark.
            feed_timeout: seconds a feeding task waits to connect to a node or for an answer that needs no rows
                read. A node whose reader takes no rows at all is caught sooner, after ``feed_stall_timeout``.
            qname: accepted for compatibility.
            validation_data: an RDD or DataFrame of validation rows (the same fields as ``dataRDD``), or None.

        Raises:
            ConfigError: fewer rows than training nodes, in ``dataRDD`` or in ``validation_data``; not a
                DataFrame under Spark Connect; the cluster is not in InputMode.SPARK.
            ClusterFailedError: a node failed while being fed (its root cause, not the feeding task's error).
            FeedStallError: a node took no rows for ``feed_stall_timeout`` seconds (``TFOS_FEED_STALL_TIMEOUT``,
                60 by default) while a feeding task waited on it; the message gives every node's counts, its
                last output line and the likely causes. Every node is stopped.
            FeedError: feeding failed for another reason.
        """
        self._require_spark_mode("train")
        self._check_feed_data(dataRDD, "train")
        if validation_data is not None:
            self._check_feed_data(validation_data, "train")
        feed_driver.train(cast(feed_driver.FeedBackend, self), dataRDD, num_epochs, float(feed_timeout),
                          validation_data)

    def inference(self, dataRDD: Any, feed_timeout: float = 600, qname: str = "input", schema: Any = None):
        """Scores an RDD or DataFrame on the training nodes (InputMode.SPARK only); lazy, like any Spark transform.

        Each partition goes whole to one node (``partition % nodes``), whose main_fun reads it with
        ``feed.next_batch`` and answers with ``feed.batch_results``: one result per row, in input order.

        Args:
            dataRDD: an RDD, or a DataFrame (which then needs ``schema``). Under Spark Connect: a DataFrame.
            schema: the result DataFrame's schema (``StructType`` or DDL string); results are tuples, dicts
                or, for one column, plain values.

        Returns:
            An RDD of results, or a DataFrame for a DataFrame input.

        Raises:
            ConfigError: a DataFrame without ``schema``; not a DataFrame under Spark Connect; the cluster is not
                in InputMode.SPARK.
        """
        self._require_spark_mode("inference")
        self._check_feed_data(dataRDD, "inference")
        return feed_driver.inference(cast(feed_driver.FeedBackend, self), dataRDD, float(feed_timeout),
                                     self._result_schema(schema))

    # ----- for the cluster classes -----------------------------------------------------------------------
    def _check_feed_data(self, data: Any, what: str) -> None:
        """Refuses data this kind of cluster cannot feed (Connect: anything but a DataFrame)."""

    def _result_schema(self, schema: Any) -> Any:
        """``inference``'s ``schema`` as this kind of cluster passes it on."""
        return schema

    def _require_spark_mode(self, what: str) -> None:
        if self.input_mode != SPARK_MODE:
            raise ConfigError(f"TFCluster.{what}() needs a cluster started with input_mode=InputMode.SPARK")
        if self._closed:
            raise ConfigError(f"TFCluster.{what}() called after shutdown()")

    def _feed_addresses(self) -> list[str]:
        """Feed addresses of the nodes that take data (chief/master/worker), in node order."""
        return [n["feed_addr"] for n in self.cluster_info if n["feed_addr"]]

    # Whether this process is Spark's driver (a classic session), which sees the local files Spark lists and
    # writes; a Spark Connect client may run on another host.
    _files_on_driver = True

    def _feed_context(self) -> feed_driver.FeedContext:
        return feed_driver.FeedContext(tuple(self._feed_addresses()), self._config.spec.secret,
                                       self._config.settings, self.defaultFS, self._files_on_driver)


def shutdown_limit(ssc: Any, timeout: float | None) -> float | None:
    """``shutdown()``'s arguments, checked: the timeout in seconds, None to wait forever."""
    if ssc is not None:
        raise ConfigError("shutdown(ssc=...) needs Spark Streaming DStreams, which Spark 4 removed.")
    return None if timeout is None or timeout < 0 else float(timeout)
