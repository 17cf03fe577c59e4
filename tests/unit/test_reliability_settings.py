"""Settings of restarts, hang detection and the progress display: defaults, environment, clear errors."""

import pytest

from tfos.config import from_env
from tfos.errors import ConfigError


def test_defaults_and_environment():
    settings = from_env({})
    assert (settings.max_restarts, settings.hang_timeout, settings.progress, settings.progress_interval) == \
        (0, 0.0, "auto", 10.0)
    settings = from_env({"TFOS_MAX_RESTARTS": "2", "TFOS_HANG_TIMEOUT": "300", "TFOS_PROGRESS": "off"})
    assert (settings.max_restarts, settings.hang_timeout, settings.progress) == (2, 300.0, "off")
    assert from_env({"TFOS_MAX_RESTARTS": "2"}, max_restarts=0).max_restarts == 0  # argument wins


@pytest.mark.parametrize("env,overrides,message", [
    ({"TFOS_MAX_RESTARTS": "two"}, {}, r"TFOS_MAX_RESTARTS='two' is not a valid int"),
    ({}, {"max_restarts": -1}, r"max_restarts must be >= 0, got -1 \(TFOS_MAX_RESTARTS\)"),
    ({}, {"hang_timeout": -5}, r"hang_timeout must be >= 0 \(0 turns it off\), got -5"),
    ({}, {"hang_timeout": 2}, r"hang_timeout \(2s\) must be at least 3 heartbeats \(3.0s\) or 0 \(off\); "
                              r"raise TFOS_HANG_TIMEOUT"),
    ({"TFOS_PROGRESS": "loud"}, {}, r"progress must be 'auto', 'on', 'off' or 'log' \(INFO log records\), got 'loud' \(TFOS_PROGRESS\)"),
    ({}, {"progress_interval": 0}, r"progress_interval must be > 0"),
])
def test_bad_values_say_what_and_which_setting(env, overrides, message):
    with pytest.raises(ConfigError, match=message):
        from_env(env, **overrides)
