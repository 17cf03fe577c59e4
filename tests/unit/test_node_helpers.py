"""ctx helpers, GPU mapping and the child's environment."""

import os

import pytest

from tfos._node.gpus import visible_devices
from tfos._node.spec import LaunchSpec, NodePlace
from tfos._node.supervisor import child_env
from tfos.node import TFNodeContext, absolute_path


@pytest.mark.parametrize(
    "path, fs, expected",
    [("s3://b/k", "hdfs://nn:8020", "s3://b/k"),
     ("/data/x", "hdfs://nn:8020", "hdfs://nn:8020/data/x"),
     ("data/x", "hdfs://nn:8020", "hdfs://nn:8020/user/alice/data/x"),
     ("data/x", "file://", "file:///work/dir/data/x"),
     ("/abs/x", "file://", "file:///abs/x"),
     ("x", "s3a://bucket", "s3a://bucket/x"),
     # TensorFlowOnSpark's TFNode.hdfs_path for every defaultFS form (issue 20: hdfs:// gave hdfs:/foo/bar)
     ("/foo/bar", "hdfs://", "hdfs:///foo/bar"),
     ("foo/bar", "hdfs://", "hdfs:///user/alice/foo/bar"),
     ("/foo/bar", "viewfs://", "viewfs:///foo/bar"),
     ("foo/bar", "viewfs://", "viewfs:///user/alice/foo/bar"),
     ("/foo/bar", "viewfs://cluster1", "viewfs://cluster1/foo/bar"),
     ("foo/bar", "viewfs://cluster1/", "viewfs://cluster1/user/alice/foo/bar"),
     ("/foo/bar", "hdfs://nn:8020/", "hdfs://nn:8020/foo/bar"),
     ("/foo/bar", "file:///", "file:///foo/bar"),
     ("foo/bar", "file:///", "file:///work/dir/foo/bar"),
     ("hdfs://other:9000/x", "hdfs://", "hdfs://other:9000/x"),
     ("viewfs://c/x", "file://", "viewfs://c/x"),
     ("file:///already", "hdfs://nn:8020", "file:///already")],
)
def test_absolute_path(path, fs, expected):
    assert absolute_path(path, fs, "/work/dir", user="alice") == expected


def test_context_fields_match_tensorflowonspark():
    spec = {"ps": ["a:1"], "chief": ["b:2"], "worker": ["c:3", "d:4"], "evaluator": ["e:5"]}
    ctx = TFNodeContext(worker_num=2, job_name="worker", task_index=0, cluster_spec=spec)
    assert (ctx.executor_id, ctx.worker_num, ctx.num_workers) == (2, 2, 3)
    assert not ctx.is_chief
    assert TFNodeContext(job_name="chief", cluster_spec=spec).is_chief
    assert TFNodeContext(job_name="worker", task_index=0, cluster_spec={"worker": ["a:1"]}).is_chief
    with pytest.raises(RuntimeError, match="InputMode.SPARK"):
        ctx.get_data_feed()


@pytest.mark.parametrize(
    "assigned, inherited, expected",
    [(None, "0,1", None), ([], None, ""), (["1"], None, "1"), (["0", "1"], "4,5,6", "4,5"), (["1"], "7, 9", "9")],
)
def test_visible_devices(assigned, inherited, expected):
    assert visible_devices(assigned, inherited) == expected


def test_visible_devices_rejects_out_of_range():
    with pytest.raises(ValueError, match="only sees CUDA_VISIBLE_DEVICES"):
        visible_devices(["3"], "0,1")


def test_child_env_is_a_new_dict_with_tf_settings():
    base = {"PATH": "/bin", "PYTHONPATH": "/user/lib"}
    spec = LaunchSpec("id", "h:1", "secret", {"worker": [0]}, b"", b"", log_dir="/logs", extra_env={"A": "1"})
    env = child_env(base, spec, NodePlace(0, "h", sys_path=("/x",), gpus=""), '{"t": 1}', "/tmp/e", "worker", 0,
                    "/logs")
    assert env["TF_CONFIG"] == '{"t": 1}' and env["TF_USE_LEGACY_KERAS"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["PYTHONPATH"] == os.pathsep.join(["/x", "/user/lib"])
    assert env["TFOS_LOG_DIR"] == "/logs" and env["A"] == "1" and "secret" not in env.values()
    assert base == {"PATH": "/bin", "PYTHONPATH": "/user/lib"}
    no_legacy = child_env({}, LaunchSpec("id", "h:1", "s", {}, b"", b"", legacy_keras=False),
                          NodePlace(0, "h"), "{}", "/e", "worker", 0)
    assert no_legacy["TF_USE_LEGACY_KERAS"] == "0" and "CUDA_VISIBLE_DEVICES" not in no_legacy  # Keras 3: said so
    assert env["TF_GRPC_DEFAULT_OPTIONS"] == "grpc.initial_reconnect_backoff_ms=100"


def test_tf_grpc_options_keep_the_users():
    from tfos._node.supervisor import tf_grpc_options

    assert tf_grpc_options(None) == tf_grpc_options("") == "grpc.initial_reconnect_backoff_ms=100"
    assert tf_grpc_options("grpc.keepalive_time_ms=30000") == (
        "grpc.keepalive_time_ms=30000,grpc.initial_reconnect_backoff_ms=100")
    assert tf_grpc_options("grpc.initial_reconnect_backoff_ms=500") == "grpc.initial_reconnect_backoff_ms=500"
