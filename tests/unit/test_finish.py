"""How a cluster is ended (``tfos._control.finish``), the same on both backends: pure logic over a fake state."""

from tfos._control.finish import finish


class FakeCluster:
    """A cluster whose state moves on by a script: each wait sees the next state its ``done`` accepts, if any."""

    def __init__(self, states):
        self.states = list(states)
        self.calls = []

    def wait(self, done, timeout):
        self.calls.append(("wait", timeout))
        for state in self.states:
            if done(state):
                self.states = self.states[self.states.index(state):]
                return state, False
        return self.states[-1], True

    def stop(self):
        self.calls.append(("stop",))
        self.states = [{**s, "all_exited": True, "phase": "done"} for s in self.states]

    def abort(self, reason):
        self.calls.append(("abort", reason))


def state(phase="running", training_done=False, all_exited=False):
    return {"phase": phase, "training_done": training_done, "all_exited": all_exited}


def test_training_done_then_grace_then_stop_then_every_node_gone():
    cluster = FakeCluster([state(), state(training_done=True)])
    last, how = finish(cluster, 60.0, 0, 5.0)
    assert how == "stopped" and last["phase"] == "done"
    assert cluster.calls == [("wait", 60.0), ("stop",), ("wait", 5.0)]


def test_a_failure_is_not_followed_by_a_stop():
    cluster = FakeCluster([state(), state("failed", all_exited=True)])
    last, how = finish(cluster, None, 0, 5.0)
    assert how == "failed" and ("stop",) not in cluster.calls


def test_the_limit_aborts_at_once():
    cluster = FakeCluster([state()])
    _, how = finish(cluster, 3.0, 0, 5.0)
    assert how == "timeout" and cluster.calls == [("wait", 3.0), ("abort", "shutdown timeout of 3s expired")]
