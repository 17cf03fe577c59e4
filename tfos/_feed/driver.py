"""The driver side of InputMode.SPARK: plan, and run the feeding and scoring jobs.

Each input of a ``train()`` call takes one of two paths (``feed_path``): the nodes read it as Parquet
(``tfos._feed.parquet``: a plain Parquet scan's own files, or a cache Spark writes once; no counting pass, one
task for all epochs), or it goes through Spark tasks every epoch (``tfos._feed.client``: counted once, persisted,
routed by ``tfos._feed.plan``); RDDs always take the second. ``_open_input`` says which ``auto`` picks. A call
with ``validation_data`` opens both inputs before feeding anything, feeds the validation rows once (one job,
split ``"validation"``: the nodes write them to disk), then the epochs.

``TFCluster.train`` and ``TFCluster.inference`` (classic and Spark Connect) delegate here. What the feed needs
of a cluster is the small :class:`FeedBackend` protocol, nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
from typing import Any, Callable, Protocol

from .._driver import spark as _spark
from .. import fs
from ..config import Settings
from ..errors import ConfigError, FeedError, FeedStallError
from . import client as feed, parquet
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
    default_fs: str = ""  # the cluster's fs.defaultFS (where the Parquet fast path may put its cache)
    # whether this process is Spark's driver, which sees the local files Spark lists or writes (classic sessions;
    # a Spark Connect client may be on another host)
    files_on_driver: bool = False


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


class _SparkInput:
    """One input fed through Spark tasks: persisted (memory and disk) unless the user cached it, counted once,
    routed by the equal-rows plan (``tfos._feed.plan``)."""

    path = "spark"

    def __init__(self, cluster: FeedBackend, data, nodes: int, what: str, need: str) -> None:
        self.cached = data.is_cached
        if not self.cached:
            from pyspark import StorageLevel

            data = data.persist(StorageLevel.MEMORY_AND_DISK)  # counted once, read every epoch
        self.data, self.is_df = data, is_dataframe(data)
        try:
            self.plan = _counted_plan(cluster, self, nodes, what, need)
        except BaseException:
            self.release()
            raise
        self.quota, self.dropped, self.parts = self.plan.quota, self.plan.dropped, len(self.plan.routes)

    def jobs(self, epochs: int) -> list[tuple[int, int]]:
        """``(first epoch, epochs)`` of each feeding job: one job per epoch (Spark re-reads the data each time)."""
        return [(epoch, 1) for epoch in range(epochs)]

    def target(self, base: FeedTarget, epoch: int, count: int = 1) -> FeedTarget:
        assert count == 1, "the Spark path feeds one epoch per job"
        return dataclasses.replace(base, plan=self.plan, epoch=epoch)

    def run(self, cluster: FeedBackend, target: FeedTarget, description: str) -> list[dict]:
        data = self.data
        if self.is_df:
            fn = _spark.bind(feed.train_arrow, target)
            rows = cluster._run_feed_job(lambda: data.mapInArrow(fn, "outcome string").collect(), description)
            return [json.loads(r.outcome) for r in rows]
        fn = _spark.bind(feed.train_rows, target)
        return [json.loads(r) for r in cluster._run_feed_job(lambda: data.mapPartitions(fn).collect(), description)]

    def release(self) -> None:
        if not self.cached:
            self.data.unpersist()


class _ParquetInput:
    """One DataFrame input on the fast path (``tfos._feed.parquet``): written once to a cache directory (or, for a
    plain Parquet scan, read from its own files), its row counts read from the Parquet footers, each epoch's
    shares read by the nodes themselves."""

    path = "parquet"

    def __init__(self, cluster: FeedBackend, df, url: str, nodes: int, what: str, need: str,
                 direct: _Direct | None = None, local_footers: bool = False) -> None:
        self.df, self.url, self.nodes, self.session = df, url, nodes, df.sparkSession
        self.columns: tuple[str, ...] | None = None
        self.written = False
        try:
            if direct is None:
                self.written = True  # from now on release() removes the directory, whatever happens
                errors = cluster._run_feed_job(lambda: _write_or_error(df, url), f"tfos: write the feed cache {url}")
                if errors:
                    raise CacheUnusable(errors[0])
                files, expected = self.session.read.parquet(url).inputFiles(), None
            else:
                files, self.columns, expected = direct.files, direct.columns, direct.schema
            rows = _footer_rows(cluster, self.session, sorted(files), expected, local_footers)
        except BaseException:
            self.release()
            raise
        problems = sorted(r["problem"] for r in rows if r["problem"])
        if problems:
            raise NotDirect(problems[0])
        self.groups = [parquet.RowGroup(r["path"], r["row_group"], r["rows"]) for r in
                       sorted(rows, key=lambda r: (r["path"], r["row_group"])) if r["rows"]]
        total = sum(g.rows for g in self.groups)
        self.quota, self.dropped, self.parts = total // nodes, total % nodes, len(self.groups)
        if self.quota == 0:
            self.release()
            raise _no_share(total, what, nodes, need)

    def jobs(self, epochs: int) -> list[tuple[int, int]]:
        """One feeding job for every epoch: each node reads its shares one epoch after the other, so no epoch
        waits for the driver to schedule its job."""
        return [(0, epochs)]

    def target(self, base: FeedTarget, epoch: int, count: int = 1) -> FeedTarget:
        dealt = parquet.epoch_shares(self.groups, self.nodes, epoch, count, base.seed, base.keep)
        return dataclasses.replace(base, epoch=epoch, count=count, quota=self.quota, columns=self.columns,
                                   shares=tuple(tuple(map(tuple, node)) for node in dealt))

    def run(self, cluster: FeedBackend, target: FeedTarget, description: str) -> list[dict]:
        fn = _spark.bind(feed.train_parquet, target)
        one = self.session.range(0, 1, 1, 1)
        rows = cluster._run_feed_job(lambda: one.mapInArrow(fn, "outcome string").collect(), description)
        return [json.loads(r.outcome) for r in rows]

    def release(self) -> None:
        """Removes the cache directory (a one-task job, where the files are: the driver may not reach them)."""
        if not self.written:
            return
        self.written = False
        url = self.url
        try:
            self.session.createDataFrame([(url,)], "url string").repartition(1).mapInArrow(
                parquet.remove, "done boolean").collect()
        except Exception as exc:  # noqa: BLE001 - the feed's own outcome matters more
            logger.warning("could not remove the feed cache %s (%s); it is safe to delete", url, exc)


# The driver reads the footers itself (no Spark job) when the files are on its local disk and there are at most
# this many; otherwise a job reads them where the files are, in parallel.
DRIVER_FOOTERS_MAX_FILES = 256


def _footer_rows(cluster: FeedBackend, session, files: list[str], expected: bytes | None, local: bool
                 ) -> list[dict]:
    """Each file's row groups (``parquet.footers``' rows as dicts): read here when ``local`` (a classic driver,
    which listed or wrote the files) and the files are on the local disk, else by a small Spark job."""
    if local and len(files) <= DRIVER_FOOTERS_MAX_FILES and all(fs.scheme(f) == "file" for f in files):
        import pyarrow as pa

        try:
            return next(parquet.footers(expected, [pa.record_batch({"path": pa.array(files, pa.string())})]
                                        )).to_pylist()
        except Exception as exc:  # noqa: BLE001 - the job below reads them where Spark's executors are
            logger.debug("could not read the Parquet footers on the driver (%s); a Spark job reads them", exc)
    paths = session.createDataFrame([(f,) for f in files], "path string")
    rows = cluster._run_feed_job(
        lambda: paths.repartition(max(1, min(len(files), 8))).mapInArrow(
            _spark.bind(parquet.footers, expected), parquet.FOOTER_SCHEMA).collect(),
        "tfos: read the Parquet footers' row counts")
    return [r.asDict() for r in rows]


class CacheUnusable(ConfigError):
    """The fast path's cache directory cannot be written."""


class NotDirect(Exception):
    """A plain Parquet scan whose files the nodes cannot read as the DataFrame (it is written to the cache)."""


@dataclasses.dataclass(frozen=True)
class _Direct:
    """A DataFrame the nodes read from its own Parquet files: the files, its columns, their Arrow schema."""

    files: tuple[str, ...]
    columns: tuple[str, ...]
    schema: bytes


def _direct_read(df) -> _Direct | None:
    """How to read ``df`` from its own files, when it is a plain Parquet scan (``parquet.is_plain_scan``)."""
    if not parquet.is_plain_scan(parquet.optimized_plan(df)):
        return None
    try:
        columns = tuple(df.columns)
        files = tuple(df.inputFiles())
        if not files or len(set(columns)) != len(columns):
            return None
        return _Direct(files, columns, parquet.schema_bytes(df, columns))
    except Exception as exc:  # noqa: BLE001 - a type Arrow cannot hold, a session that does not say: write it
        logger.debug("not reading the DataFrame from its files: %s", exc)
        return None


def _write_or_error(df, url: str) -> list[str]:
    try:
        parquet.write(df, url)
    except ConfigError as exc:
        return [str(exc)]
    return []


# feed_path=auto writes a DataFrame that is not a plain Parquet scan to the cache only for calls of this many
# epochs or more. Measured (bench/results/feed_throughput.md): the one write makes a whole 3-epoch train() 0.7x
# the Spark path; at 10 epochs the two take the same time and the cache path half the executors' CPU.
AUTO_CACHE_MIN_EPOCHS = 10


def _open_input(cluster: FeedBackend, context: FeedContext, data, nodes: int, what: str, need: str,
                epochs: int = 1):
    """The input on the path ``feed_path``, the data and the number of times it is fed choose (see
    ``tfos._feed.parquet``)."""
    settings = context.settings
    choice = settings.feed_path
    if choice == "spark" or not is_dataframe(data):
        if choice == "parquet" and not is_dataframe(data):
            logger.info("feed_path=parquet applies to DataFrames; this %s goes through Spark tasks",
                        type(data).__name__)
        return _SparkInput(cluster, data, nodes, what, need)
    direct = _direct_read(data)
    if direct is None and choice == "auto" and epochs < AUTO_CACHE_MIN_EPOCHS and not settings.feed_cache_dir:
        logger.info("feeding through Spark tasks: the DataFrame is not a plain Parquet scan, and writing it to the "
                    "cache pays off from %d epochs (set feed_path=parquet to write it anyway)", AUTO_CACHE_MIN_EPOCHS)
        return _SparkInput(cluster, data, nodes, what, need)
    if direct is not None:
        try:
            opened = _ParquetInput(cluster, data, "", nodes, what, need, direct=direct,
                                   local_footers=context.files_on_driver)
            logger.info("the TF nodes read the DataFrame from its own %d Parquet file(s): it is a plain Parquet "
                        "scan, so no cache is written", len(direct.files))
            return opened
        except NotDirect as exc:
            logger.info("the DataFrame is a plain Parquet scan, but its files are written to the cache: %s", exc)
    root = parquet.cache_root(settings.feed_cache_dir, context.default_fs, _session_conf(data, "spark.master"),
                              _session_conf(data, "spark.driver.host"),
                              (a.rsplit(":", 1)[0].strip("[]") for a in context.addresses))
    if not root:
        if choice == "parquet":
            raise ConfigError(
                "feed_path=parquet needs a cache directory every TF node can read, and this cluster has several "
                "hosts and a local default file system: set feed_cache_dir (TFOS_FEED_CACHE_DIR) to an hdfs:// or "
                "s3:// directory, or use feed_path=spark (TFOS_FEED_PATH).")
        logger.info("feeding through Spark tasks: no cache directory every node can read (set feed_cache_dir for "
                    "the faster Parquet path)")
        return _SparkInput(cluster, data, nodes, what, need)
    try:
        return _ParquetInput(cluster, data, parquet.new_cache_dir(root), nodes, what, need,
                             local_footers=context.files_on_driver)
    except CacheUnusable as exc:
        if choice == "parquet" or settings.feed_cache_dir:
            raise
        logger.warning("feeding through Spark tasks: %s", exc)
        return _SparkInput(cluster, data, nodes, what, need)


def _session_conf(df, key: str) -> str:
    try:
        return df.sparkSession.conf.get(key, "") or ""
    except Exception:  # noqa: BLE001 - a conf the server does not show
        return ""


def train(cluster: FeedBackend, data, num_epochs: int, feed_timeout: float, validation_data=None) -> None:
    """See ``TFCluster.train``."""
    if num_epochs < 0:
        raise ConfigError(f"num_epochs must be >= 0, got {num_epochs}")
    if validation_data is not None and not hasattr(validation_data, "is_cached"):
        raise ConfigError(f"validation_data must be an RDD or a DataFrame, got {type(validation_data).__name__}")
    epochs = num_epochs or DEFAULT_EPOCHS
    context = cluster._feed_context()
    nodes = len(context.addresses)
    settings = context.settings
    inputs: list = []
    try:
        inputs.append(_open_input(cluster, context, data, nodes, "rows", "one row per epoch", epochs))
        train_in, validation = inputs[0], None
        if validation_data is not None:  # counted and checked before anything is fed
            inputs.append(_open_input(cluster, context, validation_data, nodes, "validation rows",
                                      "one validation row (give more validation_data, or none)"))
            validation = inputs[1]
        logger.info("feeding %d epoch(s) of %d rows in %d %s (%s path): %d rows per node per epoch, %d rows per "
                    "epoch not fed (equal rows per node)", epochs, train_in.quota * nodes + train_in.dropped,
                    train_in.parts, "row groups" if train_in.path == "parquet" else "partitions", train_in.path,
                    train_in.quota, train_in.dropped)
        feed_id = secrets.token_hex(8)
        seed = None if not settings.feed_shuffle else (
            settings.feed_seed if settings.feed_seed >= 0 else secrets.randbelow(1 << 31))
        base = FeedTarget(context.addresses, context.secret, None, feed_id, 0, epochs, settings.feed_chunk_rows,
                          feed_timeout, settings.feed_stall_timeout, validation=validation is not None, seed=seed,
                          keep=settings.feed_local_cache)
        if validation is not None:
            _feed_validation(cluster, validation, dataclasses.replace(base, epochs=1, split="validation", seed=None))
        for first, count in train_in.jobs(epochs):
            target = train_in.target(base, first, count)
            if _feed_once(cluster, train_in, target, f"tfos: feed {target.what}"):
                logger.info("the TF nodes terminated the feed during %s", target.what)
                break
    finally:
        for opened in inputs:
            opened.release()


def _counted_plan(cluster: FeedBackend, spark_input: _SparkInput, nodes: int, what: str, need: str):
    """The equal-rows plan of one input (every node gets ``rows // nodes``); a ConfigError when that is none."""
    counts = partition_counts(cluster, spark_input.data, spark_input.is_df)
    plan = make_plan(counts, nodes)
    if plan.quota == 0:
        raise _no_share(sum(counts), what, nodes, need)
    return plan


def _no_share(total: int, what: str, nodes: int, need: str) -> ConfigError:
    """The error of an input too small to give every training node a row (either path)."""
    return ConfigError(f"train() got {total} {what} for {nodes} training nodes: each node needs at least {need}")


def _feed_validation(cluster: FeedBackend, val, target: FeedTarget) -> None:
    """Feeds the validation rows once; each node writes its share to its disk (it never waits for a reader)."""
    logger.info("feeding %d validation rows in %d %s: %d per node (%d not fed), once, before the first "
                "epoch; each node keeps its share on its disk for every epoch's validation",
                val.quota * len(target.addresses) + val.dropped, val.parts,
                "row groups" if val.path == "parquet" else "partitions", val.quota, val.dropped)
    if _feed_once(cluster, val, val.target(target, 0, 1), "tfos: feed the validation data"):
        logger.info("the TF nodes terminated the feed during the validation feed")


def _feed_once(cluster: FeedBackend, fed, target: FeedTarget, description: str) -> bool:
    """Runs one feeding job (an epoch, or the validation data); True if every node said it takes no more rows."""
    outcomes = fed.run(cluster, target, description)
    _check_stall(cluster, outcomes)
    links = [link for o in outcomes for link in o["links"]]
    return bool(links) and all(link == "stopped" for link in links)


def _check_stall(cluster: FeedBackend, outcomes: list[dict]) -> None:
    """Raises the stall report of the first task that found the feed stalled, after stopping the nodes; or the
    fast path's read failure (a node cannot read the cache), after stopping them too."""
    failed = next((o["report"] for o in outcomes if o.get("status") == "failed"), None)
    if failed is not None:
        logger.error("%s", failed)
        cluster._stop_after_feed_failure("a TF node could not read the feed's Parquet cache")
        raise FeedError(failed)
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
