"""Role layout and TF_CONFIG: pure functions, every layout TensorFlowOnSpark had."""

import json

import pytest

from tfos._node.tf_config import (
    make_cluster_spec, make_template, make_tf_config, num_training_workers, role_of, service_jobs, tf_config_json,
)
from tfos.errors import ConfigError


@pytest.mark.parametrize(
    "args, expected",
    [
        ((2,), {"worker": [0, 1]}),
        ((3, 0, "chief"), {"chief": [0], "worker": [1, 2]}),
        ((1, 0, "chief"), {"chief": [0]}),
        ((4, 1, "chief"), {"ps": [0], "chief": [1], "worker": [2, 3]}),
        ((3, 1), {"ps": [0], "worker": [1, 2]}),
        ((4, 0, "chief", True), {"chief": [0], "worker": [1, 2], "evaluator": [3]}),
        ((5, 2, "master", True), {"ps": [0, 1], "master": [2], "worker": [3], "evaluator": [4]}),
    ],
)
def test_template_layouts(args, expected):
    assert make_template(*args) == expected


@pytest.mark.parametrize(
    "args, match",
    [((0,), "at least 1"), ((2, 2), "no training node"), ((2, 1, None, True), "eval_node"),
     ((2, -1), "num_ps"), ((2, 0, "boss"), "master_node")],
)
def test_template_rejects_bad_counts(args, match):
    with pytest.raises(ConfigError, match=match):
        make_template(*args)


def test_roles_and_spec():
    template = make_template(4, 1, "chief", False)
    assert [role_of(template, n) for n in range(4)] == [("ps", 0), ("chief", 0), ("worker", 0), ("worker", 1)]
    spec = make_cluster_spec(template, {n: f"h{n}:{1000 + n}" for n in range(4)})
    assert spec == {"ps": ["h0:1000"], "chief": ["h1:1001"], "worker": ["h2:1002", "h3:1003"]}
    assert num_training_workers(spec) == 3
    with pytest.raises(ConfigError, match="no address"):
        make_cluster_spec(template, {0: "h:1"})


def test_tf_config_leaves_evaluator_out_of_cluster():
    spec = {"chief": ["a:1"], "worker": ["b:2"], "evaluator": ["c:3"]}
    for job, index in (("chief", 0), ("worker", 0), ("evaluator", 0)):
        config = make_tf_config(spec, job, index)
        assert config["cluster"] == {"chief": ["a:1"], "worker": ["b:2"]}
        assert config["task"] == {"type": job, "index": index}
    assert json.loads(tf_config_json(spec, "worker", 0))["task"]["type"] == "worker"
    with pytest.raises(ConfigError):
        make_tf_config(spec, "worker", 3)


def test_service_jobs():
    assert service_jobs({"worker": [0, 1]}) == {"ps", "evaluator"}
    assert service_jobs({"ps": [0], "worker": [1, 2]}) == {"ps", "evaluator"}
    # ParameterServerStrategy: the chief coordinates, workers and ps only serve it
    assert service_jobs({"ps": [0], "chief": [1], "worker": [2]}) == {"ps", "evaluator", "worker"}
