"""The validation split: the on-disk spool, the feed server's split, the driver's checks (no Spark, no TF)."""

import pickle
import socket

import pyarrow as pa
import pytest

from tfos._feed import driver
from tfos._feed import protocol as p
from tfos._feed.driver import FeedContext
from tfos._feed.server import FeedServer
from tfos._feed.spool import Spool
from tfos.errors import ConfigError, FeedError


def rows_frame(*rows):
    return p.ROWS, pickle.dumps(list(rows)), len(rows)


def arrow_frame(**columns):
    batch = pa.record_batch({name: pa.array(values) for name, values in columns.items()})
    return p.ARROW, p.arrow_payload(batch.slice(0, 1), batch.slice(1)), batch.num_rows


def replay(spool):
    return [chunk.data.to_pylist() if chunk.is_arrow else chunk.data for chunk in spool.chunks()]


def test_a_spool_replays_committed_frames_from_the_first_every_time(tmp_path):
    spool = Spool(str(tmp_path / "split"), quota=5)
    a, b = object(), object()
    spool.append(a, *rows_frame((1, "x"), (2, "y")))
    spool.append(b, *arrow_frame(v=[10, 11]))
    spool.append(a, p.SPILL_ROWS, pickle.dumps([(3, "z")]), 1)
    assert replay(spool) == [] and spool.received == 5 and not spool.complete  # nothing counts before END
    assert spool.commit(b, partition=1) == 2
    assert spool.commit(a, partition=0) == 3 and spool.complete
    first = replay(spool)
    assert first == [[{"v": 10}, {"v": 11}], [(1, "x"), (2, "y")], [(3, "z")]]  # commit order, then frame order
    assert replay(spool) == first  # the same rows in the same order at every pass
    spool.remove()
    assert not (tmp_path / "split").exists()


def test_a_broken_connection_and_a_retried_partition_count_once(tmp_path):
    spool = Spool(str(tmp_path / "split"), quota=2)
    broken, retry, duplicate = object(), object(), object()
    spool.append(broken, *rows_frame(1))
    spool.discard(broken)  # the task failed before its END: Spark runs it again
    spool.append(retry, *rows_frame(1, 2))
    assert spool.commit(retry, partition=4) == 2
    spool2 = Spool(str(tmp_path / "split2"), quota=4)
    spool2.append(retry, *rows_frame(1, 2))
    spool2.commit(retry, partition=4)
    spool2.append(duplicate, *rows_frame(1, 2))
    assert spool2.commit(duplicate, partition=4) == 0  # a second copy of partition 4 (speculation, a retry)
    assert (spool2.rows, spool2.received, replay(spool2)) == (2, 2, [[1, 2]])
    assert replay(spool) == [[1, 2]] and spool.complete


def test_a_cut_file_is_a_clear_error(tmp_path):
    spool = Spool(str(tmp_path / "split"), quota=1)
    token = object()
    spool.append(token, *rows_frame(1))
    spool.commit(token, 0)
    with open(tmp_path / "split", "r+b") as f:
        f.truncate(12)
    with pytest.raises(OSError, match="is cut short"):
        replay(spool)


def server(tmp_path):
    return FeedServer(socket.socket(), "unused", spool_parent=str(tmp_path))


def test_the_server_knows_whether_a_call_has_validation_data(tmp_path):
    srv = server(tmp_path)
    with pytest.raises(FeedError, match=r"did not arrive within 0s \(no train\(\) call has fed this node yet\)"):
        srv.validation(0.1)
    srv._calls["call-1"] = False  # what a training hello of a train() call without validation_data says
    with pytest.raises(ConfigError, match=r"this train\(\) call has no validation data.*validation_data=val_data"):
        srv.validation(0.1)
    spool = srv._spool("call-2", quota=3)
    srv._calls["call-2"] = True
    token = object()
    spool.append(token, *rows_frame(1, 2))
    spool.commit(token, 0)
    with pytest.raises(FeedError, match="2 of its 3 validation rows arrived"):
        srv.validation(0.1)
    spool.append(token, *rows_frame(3))
    spool.commit(token, 1)
    assert srv.validation(0.1) is spool
    assert srv.status(("call-2", 0), "validation")["received"] == 3
    srv._spool("call-3", quota=1)  # a later call's split replaces the earlier one on disk
    assert not (tmp_path / spool.path).exists()
    srv.terminate()
    with pytest.raises(FeedError, match="terminated"):
        srv.validation(0.1)
    srv.close()
    assert not list(tmp_path.iterdir())  # the split's directory goes with the server


class FakeRDD:
    """Partitions in memory, enough of the RDD API for the driver's counting job."""

    is_cached = True

    def __init__(self, *partitions):
        self.partitions = partitions

    def mapPartitionsWithIndex(self, fn):
        out = [r for i, part in enumerate(self.partitions) for r in fn(i, iter(part))]
        return type("Collected", (), {"collect": lambda self: out})()


class FakeCluster:
    def __init__(self, nodes):
        self.jobs = []
        self.context = FeedContext(tuple(f"127.0.0.1:{9 + i}" for i in range(nodes)), "secret")

    def _feed_context(self):
        return self.context

    def _run_feed_job(self, action, description):
        self.jobs.append(description)
        if "feed" in description:
            raise AssertionError(f"{description} ran: nothing may be fed")
        return action()


def test_a_validation_set_smaller_than_the_nodes_fails_before_anything_is_fed():
    cluster = FakeCluster(nodes=3)
    with pytest.raises(ConfigError, match=r"got 2 validation rows for 3 training nodes: each node needs at least "
                                          r"one validation row"):
        driver.train(cluster, FakeRDD(range(10), range(5)), 2, 10.0, validation_data=FakeRDD([1], [], [2]))
    assert cluster.jobs == ["tfos: count rows", "tfos: count rows"]  # counted both, fed nothing
    with pytest.raises(ConfigError, match="validation_data must be an RDD or a DataFrame, got list"):
        driver.train(cluster, FakeRDD(range(10)), 1, 10.0, validation_data=[1, 2, 3])
