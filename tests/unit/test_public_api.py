"""The public surface, pinned: every public module's ``__all__``, written out here name by name.

A name added to or dropped from a public module shows up as a failure here, so that a change of what users import
is made on purpose (and, for TensorFlowOnSpark's module names, never drops a name TensorFlowOnSpark had).
A new public module (a non-underscore module of tfos/) needs an entry below.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import tfos

PUBLIC_API = {
    "tfos": [
        "ClusterFailedError", "ConfigError", "InputMode", "PlacementError", "TFCluster", "TFNodeContext",
        "TFOSError", "errors",
    ],
    "tfos.TFCluster": ["InputMode", "TFCluster", "run"],
    "tfos.TFNode": ["DataFeed", "FeedDataError", "hdfs_path", "release_port", "report_progress"],
    "tfos.TFParallel": ["run"],
    "tfos.cli": ["ScriptExit", "main", "parse_args"],
    "tfos.cluster": ["InputMode", "TFCluster", "run"],
    "tfos.compat": ["disable_auto_shard", "export_saved_model", "is_gpu_available"],
    "tfos.config": ["FsSettings", "Settings", "from_env"],
    "tfos.data": ["SyncedDir", "describe_failure", "shard_of", "tfrecord_dataset"],
    "tfos.dfutil": [
        "fromTFExample", "infer_schema", "isLoadedDF", "loadTFRecords", "register", "saveAsTFRecords", "toTFExample",
    ],
    "tfos.errors": [
        "AuthenticationError", "ClusterFailedError", "ConfigError", "ControlPlaneError", "DataError",
        "FeedDataError", "FeedError", "FeedStallError", "Keras3UnsupportedError", "NodeFailure", "PlacementError",
        "ReservationTimeoutError", "ShutdownTimeoutError", "StorageError", "TFOSError",
    ],
    "tfos.fs": [
        "StorageError", "download", "download_tree", "expand", "filesystem", "is_local", "normalize", "s3a_env",
        "spark_env", "upload", "uploaded_dir", "writable_by_tensorflow",
    ],
    "tfos.node": ["TFNodeContext", "absolute_path"],
    "tfos.pipeline": ["Namespace", "TFEstimator", "TFModel", "TFParams", "TFTypeConverters"],
    "tfos.scoring": ["predict_saved_model"],
    "tfos.standalone": ["StandaloneCluster", "main"],
}


def _public_modules() -> list[str]:
    """``tfos`` and its non-underscore modules (``__main__`` runs the CLI when imported: not an API)."""
    names = [info.name for info in pkgutil.iter_modules(tfos.__path__) if not info.name.startswith("_")]
    return ["tfos", *(f"tfos.{name}" for name in names)]


def test_every_public_module_is_pinned():
    assert sorted(_public_modules()) == sorted(PUBLIC_API)


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_all_is_pinned_sorted_and_defined(module_name):
    module = importlib.import_module(module_name)
    expected = PUBLIC_API[module_name]
    assert expected == sorted(expected), "keep the pinned list sorted"
    assert module.__all__ == expected
    assert [name for name in module.__all__ if not hasattr(module, name)] == []

