"""What the driver leaves out of a TF process's output by default (tfos._node.chatter)."""

import pytest

from tfos._node.chatter import is_chatter

CHATTER = [
    "I0000 00:00:1796310312.646714   28563 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "I0000 00:00:1796310312.931379   28565 port.cc:153] oneDNN custom operations are on. You may see slightly",
    "I0000 00:00:1796301484.609031    9103 coordination_service.cc:502] Waiting for 0/3 tasks to connect.",
    "I0000 00:00:1796301484.583292    9002 grpc_server_lib.cc:467] Started server with target: grpc://127.0.0.1:1",
    "I0000 00:00:1796302001.885661   18319 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "E0000 00:00:1796310314.237558   28563 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
]
KEPT = [
    "Epoch 1/2",
    "469/469 - 9s - 19ms/step - accuracy: 0.9012 - loss: 0.3340",
    "Test accuracy: 0.9573 (10000 rows evaluated)",
    "Traceback (most recent call last):",
    "ValueError: boom",
    "W0000 00:00:1796301487.127302    9004 dataset.cc:997] Input of GeneratorDatasetOp::Dataset will not be optimized",
    "E0000 00:00:1796304982.057220   18174 base_collective_executor.cc:252] BaseCollectiveExecutor::StartAbort "
    "UNAVAILABLE: Error reported from /job:worker/task:1",
    "WARNING:tensorflow:From main.py:3: a Python warning",
    "I0000 is how my own program starts a line",  # not absl's format
]


@pytest.mark.parametrize("line", CHATTER)
def test_tensorflow_start_up_chatter_is_left_out(line):
    assert is_chatter(line)


@pytest.mark.parametrize("line", KEPT)
def test_what_the_user_needs_is_kept(line):
    assert not is_chatter(line)


def test_gpu_probe_errors_are_kept_on_a_node_with_gpus():
    assert not is_chatter(CHATTER[-1], cpu_only=False)
    assert is_chatter(CHATTER[0], cpu_only=False)  # an INFO line either way
