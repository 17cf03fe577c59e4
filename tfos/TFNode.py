"""TensorFlowOnSpark's ``TFNode`` module: the Spark feed API used inside ``main_fun``.

``DataFeed(ctx.mgr, train_mode=True)`` (or ``ctx.get_data_feed()``) reads the rows ``TFCluster.train`` and
``TFCluster.inference`` feed to this node: ``next_batch(n)``, ``should_stop()``, ``terminate()``,
``batch_results(results)``, and ``dataset()`` for a ``tf.data.Dataset``.
"""

from __future__ import annotations

from ._feed.datafeed import DataFeed, FeedDataError
from .node import absolute_path

__all__ = ["DataFeed", "FeedDataError", "hdfs_path", "release_port", "report_progress"]


def hdfs_path(ctx, path: str) -> str:
    """Resolves ``path`` against ``ctx.defaultFS`` (TensorFlowOnSpark's name for ``ctx.absolute_path``)."""
    return absolute_path(path, ctx.defaultFS, ctx.working_dir)


def release_port(ctx) -> None:
    """Releases the port reserved for this node's TF server (``release_port=False`` clusters)."""
    ctx.release_port()


def report_progress(ctx, step: int | None = None, epoch: int | None = None, **fields) -> None:
    """Tells the driver this node is making progress; see :meth:`tfos.node.TFNodeContext.report_progress`."""
    ctx.report_progress(step=step, epoch=epoch, **fields)
