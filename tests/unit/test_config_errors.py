"""Settings, the error tree, and the public surface."""

import pickle

import pytest

import tfos
from tfos import errors
from tfos.config import Settings, from_env
from tfos.errors import ClusterFailedError, ConfigError, NodeFailure, format_failures


def test_env_then_overrides():
    s = from_env({"TFOS_HEARTBEAT_INTERVAL": "0.5", "TFOS_LEGACY_KERAS": "0", "TFOS_NODE_LOST_TIMEOUT": "9"},
                 stop_grace_secs=2, reservation_timeout=None)
    assert (s.heartbeat_interval, s.legacy_keras, s.node_lost_timeout, s.stop_grace_secs) == (0.5, "0", 9.0, 2)
    assert s.reservation_timeout == Settings().reservation_timeout


@pytest.mark.parametrize(
    "env, kwargs, match",
    [({"TFOS_HEARTBEAT_INTERVAL": "soon"}, {}, "TFOS_HEARTBEAT_INTERVAL='soon' is not a valid float"),
     ({}, {"reservation_timeout": 0}, "reservation_timeout must be > 0"),
     ({}, {"node_lost_timeout": 2}, "at least 3 heartbeats"),
     ({}, {"no_such": 1}, "unknown settings")],
)
def test_bad_settings(env, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        from_env(env, **kwargs)


def test_root_cause_first_and_folded():
    failures = [
        NodeFailure(2, "worker:1", "h2", "3", time=20.0, message="stopped because the cluster failed", secondary=True),
        NodeFailure(1, "worker:0", "h1", "2", time=10.0, signal=9, message="killed by signal 9 (SIGKILL)"),
        NodeFailure(3, "worker:2", "h3", "4", time=21.0, message="stopped because the cluster failed", secondary=True),
    ]
    text = format_failures(failures)
    assert text.startswith("Root cause (first observed failure): node 1, worker:0, host h1, executor 2")
    assert "signal 9 (SIGKILL)" in text
    assert "[nodes 2, 3]: stopped because the cluster failed" in text


def test_long_traceback_is_cut():
    text = format_failures([NodeFailure(0, traceback=("y" * 99 + "\n") * 1000, message="m")])
    assert "cut; the full text is in the executor's log" in text and len(text) < 5000


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_survives_pickle(name):
    cls = getattr(errors, name)
    if cls is NodeFailure:
        obj = NodeFailure(1, message="m")
    elif cls is ClusterFailedError:
        obj = ClusterFailedError([NodeFailure(1, message="boom")], "context")
    else:
        obj = cls("message")
    copy = pickle.loads(pickle.dumps(obj))
    assert type(copy) is cls and str(copy) == str(obj)


def test_public_surface_is_pinned():
    assert tfos.__all__ == sorted(tfos.__all__)
    assert tfos.__all__ == [
        "ClusterFailedError", "ConfigError", "InputMode", "PlacementError", "TFCluster", "TFNodeContext",
        "TFOSError", "errors",
    ]
    assert tfos.TFCluster.InputMode.TENSORFLOW == 0 and tfos.TFCluster.InputMode.SPARK == 1


def test_a_setting_connect_cannot_honour_is_said_not_ignored(caplog):
    """Under Spark Connect the nodes' output cannot reach the client: forward_logs=all is refused with a warning
    (the default, forwarding without chatter, is documented as executor logs only)."""
    import types

    from tfos._driver.backends import ConnectBackend

    request = types.SimpleNamespace(driver_ps_nodes=False)
    ConnectBackend(None).check_request(request, from_env({}, forward_logs="all"))
    assert "forward_logs=all (TFOS_FORWARD_LOGS) has no effect with a Spark Connect session" in caplog.text
    caplog.clear()
    ConnectBackend(None).check_request(request, from_env({}))
    assert caplog.text == ""
