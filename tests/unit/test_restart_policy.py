"""When tfos restarts a failed TF cluster: a lost or killed node yes, the user's own exception no."""

import pytest

from tfos._driver.restart import classify, decide, default_backup_dir
from tfos.errors import NodeFailure

KILLED = NodeFailure(1, "worker:1", "h", "1", time=10.0, signal=9, message="the TF process was killed by signal 9")
LOST = NodeFailure(1, "worker:1", "h", "1", time=10.0, message="no heartbeat for 31s (node_lost_timeout=30s)")
HUNG = NodeFailure(1, "worker:1", "h", "1", time=10.0, message="no progress for 12s (hang_timeout=10s)")
USER = NodeFailure(0, "chief:0", "h", "0", time=11.0, exit_code=1, message="ValueError: bad shape",
                   traceback="Traceback (most recent call last):\n  ...\nValueError: bad shape\n")
PEER = NodeFailure(0, "chief:0", "h", "0", time=11.0, exit_code=1, message="UnavailableError: peer down",
                   traceback="Traceback ...\ntensorflow.python.framework.errors_impl.UnavailableError: "
                             "Collective ops is aborted by: failed to connect to all addresses\n")
ABORTED = NodeFailure(0, "chief:0", "h", "0", time=12.0, signal=15, message="stopped because the cluster failed",
                      secondary=True)
DRIVER = NodeFailure(-1, "driver", time=9.0, message="the driver stopped the cluster")
SPARK = NodeFailure(-1, "spark job", time=9.0, message="the Spark stage running the TF nodes failed: lost executor")


@pytest.mark.parametrize("failure,restartable,words", [
    (KILLED, True, "killed by signal 9 (SIGKILL)"),
    (LOST, True, "was lost (no heartbeat"),
    (HUNG, True, "was lost (no progress"),
    (PEER, True, "lost a peer (UnavailableError)"),
    (SPARK, True, "spark job was lost"),
    (NodeFailure(1, "worker:1", exit_code=70, message="supervisor went away"), True, "lost its supervisor"),
    (USER, False, "ValueError raised in main_fun; a restart would most likely fail the same way"),
    (NodeFailure(1, "worker:1", exit_code=3, message="exited with code 3"), False, "exit code 3"),
    (DRIVER, False, "the driver stopped the cluster"),
])
def test_classify(failure, restartable, words):
    ok, why = classify(failure)
    assert ok is restartable and words in why


def test_a_killed_worker_is_restarted_and_its_peers_abort_does_not_matter():
    decision = decide([KILLED, ABORTED], attempt=0, max_restarts=2)
    assert decision.restart and "restart 1 of 2" in decision.reason


def test_the_root_cause_decides_when_a_peer_also_raised():
    assert decide([KILLED, USER], attempt=0, max_restarts=1).restart  # the kill came first
    late_kill = NodeFailure(1, "worker:1", time=20.0, signal=9)
    decision = decide([USER, late_kill], attempt=0, max_restarts=1)
    assert not decision.restart and "ValueError raised in main_fun" in decision.reason


def test_no_restart_when_used_up_turned_off_spark_fed_or_stopped_by_the_driver():
    assert "used up" in decide([KILLED], attempt=2, max_restarts=2).reason
    assert not decide([KILLED], attempt=0, max_restarts=0).restart
    assert "InputMode.SPARK" in decide([KILLED], 0, 3, spark_feed=True).reason
    decision = decide([KILLED, DRIVER], attempt=0, max_restarts=3)
    assert not decision.restart and "driver stopped" in decision.reason
    assert not decide([], attempt=0, max_restarts=3).restart


def test_backup_dir_is_stable_and_under_log_dir_or_working_dir():
    assert default_backup_dir("s3://b/logs/", "/w", "abc") == "s3://b/logs/backup"
    assert default_backup_dir(None, "/w", "abc") == "/w/tfos_backup/abc"
