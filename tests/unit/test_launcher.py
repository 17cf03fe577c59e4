"""The TF child launcher's pure parts (tfos._node.launcher): exit descriptions and the files beside the child.

Spawning, the payload and stopping are tested with real processes (tests/integration: test_cluster, test_tfparallel,
test_teardown, test_preimport_nodes).
"""

from __future__ import annotations

import json

from tfos._node.launcher import describe_exit, progress_file, read_error_file, read_progress


def test_exits_are_described_by_signal_code_or_lost_supervisor():
    assert describe_exit(-9) == "the TF process was killed by signal 9 (SIGKILL)"
    assert describe_exit(-200) == "the TF process was killed by signal 200 (unknown signal)"
    assert describe_exit(70) == "the TF process exited because its supervisor went away"
    assert describe_exit(3) == "the TF process exited with code 3 without a Python traceback (a crash in native code?)"
    assert describe_exit(None).startswith("the TF process did not end, even after SIGKILL")


def test_error_and_progress_files(tmp_path):
    error_file = str(tmp_path / "error.json")
    assert read_error_file(error_file) == {} and read_progress(error_file) == {}
    assert progress_file(error_file) == str(tmp_path / "progress.json")
    (tmp_path / "error.json").write_text(json.dumps({"message": "ValueError: boom", "time": 1.0}))
    (tmp_path / "progress.json").write_text(json.dumps({"step": 3}))
    assert read_error_file(error_file) == {"message": "ValueError: boom", "time": 1.0}
    assert read_progress(error_file) == {"step": 3}
    (tmp_path / "error.json").write_text("{cut")
    assert read_error_file(error_file) == {}
