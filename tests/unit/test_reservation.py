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


def hung_cluster(hang_timeout=10.0):
    clock = FakeClock()
    r = Reservation({"ps": [0], "worker": [1, 2]}, node_lost_timeout=100.0, hang_timeout=hang_timeout,
                    clock=clock, wall_clock=clock)
    for n in range(3):
        r.register(info(n))
    return r, clock


def test_a_silent_worker_is_hung_and_named_with_its_last_progress():
    r, clock = hung_cluster()
    clock.now += 5
    r.heartbeat(1, {"step": 3, "steps": 10, "last_line": "3/10 [===>...]"})
    r.heartbeat(2, {"activity": 1})
    clock.now += 6
    r.heartbeat(1, {"step": 3, "steps": 10, "last_line": "3/10 [===>...]"})  # alive, but no progress
    r.heartbeat(2, {"activity": 2})
    assert r.check_hung() == []  # 6 s since worker 1's progress
    clock.now += 5
    r.heartbeat(2, {"activity": 3})
    hung = r.check_hung()
    assert [f.worker_num for f in hung] == [1]
    assert r.phase is Phase.FAILED and r.heartbeat(2) == ABORT
    assert "no progress for 11s (hang_timeout=10s)" in hung[0].message
    assert "step 3/10" in hung[0].message and "'3/10 [===>...]'" in hung[0].message
    assert "TFOS_HANG_TIMEOUT" in hung[0].message


def test_service_nodes_and_exited_nodes_are_never_hung():
    r, clock = hung_cluster()
    r.report_exit(2, None)
    clock.now += 5
    r.heartbeat(1, {"activity": 1})
    clock.now += 8
    assert r.check_hung() == []  # ps 0 silent for 13 s, worker 2 exited, worker 1 progressed 8 s ago


def test_hang_detection_is_off_with_zero_and_during_reservation():
    r, clock = hung_cluster(hang_timeout=0)
    clock.now += 1000
    assert r.check_hung() == [] and r.phase is Phase.RUNNING
    clock = FakeClock()
    r = Reservation({"worker": [0, 1]}, hang_timeout=1.0, clock=clock, wall_clock=clock)
    r.register(info(0))
    clock.now += 50
    assert r.check_hung() == []


def test_tensorboard_port_is_not_progress_and_progress_table_reports_idle_time():
    r, clock = hung_cluster()
    clock.now += 4
    r.heartbeat(1, {"tb_port": 6006, "tb_pid": 5})
    r.heartbeat(2, {"epoch": 2, "epochs": 5})
    table = {row["worker_num"]: row for row in r.progress_table()}
    assert table[1]["idle_secs"] == 4.0 and "tb_port" not in table[1]
    assert table[2] == {"worker_num": 2, "role": "worker:1", "epoch": 2, "epochs": 5, "exited": False,
                        "heartbeat_secs": 0.0, "idle_secs": 0.0}


# ----- the watch (tfos._control.watch.Watch), as node 0 runs it under Spark Connect; same fake clock --------
def host_watch(template, reservation_timeout=30.0):
    from tfos._connect.control import host_watch as make_watch
    from tfos._node.spec import LaunchSpec

    r, clock = make(template)
    launch = LaunchSpec(cluster_id="c1", control_address="", secret="s" * 64, template=template,
                        heartbeat_interval=1.0, reservation_timeout=reservation_timeout, stop_grace_secs=2.0)
    return make_watch(r, launch, "10.0.0.1:5000", clock), r, clock


def test_host_watch_times_out_the_reservation_naming_the_missing_nodes():
    watch, r, clock = host_watch({"chief": [0], "worker": [1]}, reservation_timeout=30.0)
    r.register(info(0))
    clock.now += 29
    watch.check()
    assert r.phase is Phase.RESERVING
    clock.now += 2
    watch.check()
    assert r.phase is Phase.FAILED
    message = r.failures[0].message
    assert "nodes [1]" in message and "10.0.0.1:5000" in message and "reservation_timeout" in message


def test_host_watch_stops_service_nodes_once_training_is_done():
    watch, r, clock = host_watch({"ps": [0], "worker": [1]})
    r.register(info(0))
    r.register(info(1))
    watch.check()
    assert r.heartbeat(0) == RUN
    r.report_exit(1, None)
    watch.check()
    assert r.heartbeat(0) == STOP and not watch.ended()
    r.report_exit(0, None)
    assert watch.ended()


def test_host_watch_a_failed_cluster_ends_after_the_grace_even_if_a_node_never_reports():
    watch, r, clock = host_watch({"worker": [0, 1]})
    r.register(info(0))
    r.register(info(1))
    r.report_exit(0, NodeFailure(0, "worker", time=clock.now, message="boom"))
    watch.check()
    assert r.phase is Phase.FAILED and not watch.ended()
    clock.now += 2.0 + 3 * 1.0 + 5 + 0.1  # stop_grace_secs + 3 heartbeats + 5
    watch.check()
    assert watch.ended()


def test_host_watch_marks_a_silent_node_lost():
    watch, r, clock = host_watch({"worker": [0, 1]})
    r.register(info(0))
    r.register(info(1))
    clock.now += 11  # node_lost_timeout 10
    watch.check()
    assert r.phase is Phase.FAILED and {f.worker_num for f in r.failures} == {0, 1}
