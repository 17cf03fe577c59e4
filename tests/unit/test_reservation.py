"""The reservation state machine, driven with a fake clock."""

import pytest

from tfos._control.reservation import ABORT, RUN, STOP, NodeInfo, Phase, Reservation
from tfos.errors import NodeFailure


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make(template, timeout=10.0):
    clock = FakeClock()
    return Reservation(template, node_lost_timeout=timeout, clock=clock, wall_clock=clock), clock


def info(n, attempt=0):
    return NodeInfo(worker_num=n, host="127.0.0.1", port=2000 + n, executor_id=str(n), pid=10 + n, attempt=attempt)


def test_spec_appears_only_when_all_registered():
    r, _ = make({"chief": [0], "worker": [1]})
    assert r.register(info(1)) == RUN
    assert r.cluster_spec() is None and r.missing() == [0]
    assert r.register(info(0)) == RUN
    assert r.phase is Phase.RUNNING
    assert r.cluster_spec() == {"chief": ["127.0.0.1:2000"], "worker": ["127.0.0.1:2001"]}
    assert [row["job_name"] for row in r.node_table()] == ["chief", "worker"]


def test_unknown_node_is_rejected():
    r, _ = make({"worker": [0]})
    with pytest.raises(ValueError, match="not part of this cluster"):
        r.register(info(5))


def test_success_path_stops_service_nodes_then_done():
    r, _ = make({"ps": [0], "worker": [1, 2]})
    for n in range(3):
        r.register(info(n))
    assert r.heartbeat(0) == RUN
    r.report_exit(1, None)
    assert not r.training_done()
    r.report_exit(2, None)
    assert r.training_done() and r.phase is Phase.RUNNING
    assert r.heartbeat(0) == RUN  # ps keeps serving until the driver stops it
    r.request_stop()
    assert r.heartbeat(0) == STOP and r.heartbeat(1) == STOP  # exited nodes (TensorBoard hosts) stop too
    r.report_exit(0, None)
    assert r.phase is Phase.DONE


def test_failure_aborts_everyone_and_keeps_root_cause_first():
    r, clock = make({"worker": [0, 1, 2]})
    for n in range(3):
        r.register(info(n))
    r.report_exit(1, NodeFailure(1, "worker:1", time=clock.now, message="ValueError: boom"))
    assert r.phase is Phase.FAILED
    assert r.heartbeat(0) == ABORT and r.heartbeat(2) == ABORT
    r.report_exit(0, NodeFailure(0, "worker:0", time=clock.now + 1, message="stopped", secondary=True))
    r.report_exit(2, NodeFailure(2, "worker:2", time=clock.now + 1, message="late but independent"))
    assert [f.worker_num for f in r.failures] == [1, 0, 2]
    assert r.failures[2].secondary  # anything after the first failure is a consequence
    assert "ValueError: boom" in r.abort_reason


def test_silent_node_is_lost_after_timeout():
    r, clock = make({"worker": [0, 1]}, timeout=10)
    r.register(info(0))
    clock.now += 50  # waiting for the other node does not count against node 0
    r.register(info(1))
    assert r.check_lost() == []
    clock.now += 8
    r.heartbeat(0)
    clock.now += 5
    lost = r.check_lost()
    assert [f.worker_num for f in lost] == [1]
    assert "no heartbeat for 13s" in lost[0].message and "TFOS_NODE_LOST_TIMEOUT" in lost[0].message
    assert r.phase is Phase.FAILED


def test_retried_task_after_formation_fails_the_cluster():
    r, _ = make({"worker": [0, 1]})
    r.register(info(0))
    r.register(info(1))
    assert r.register(info(1, attempt=1)) == ABORT
    assert r.phase is Phase.FAILED and "restarted node 1" in r.failures[0].message


def test_register_after_failure_is_told_to_abort():
    r, clock = make({"worker": [0, 1]})
    r.register(info(0))
    r.abort(NodeFailure(-1, "driver", time=clock.now, message="reservation timed out"))
    assert r.register(info(1)) == ABORT
