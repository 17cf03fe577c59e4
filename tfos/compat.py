"""TensorFlowOnSpark's ``compat`` helpers, for today's TensorFlow 2.

- :func:`export_saved_model`: every worker under MultiWorkerMirroredStrategy must take part in saving; only
  the chief's copy is kept.
- :func:`disable_auto_shard`: turn off tf.data auto-sharding (the data was sharded already).
- :func:`is_gpu_available`: whether TensorFlow sees a GPU.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from . import fs

__all__ = ["disable_auto_shard", "export_saved_model", "is_gpu_available"]


def export_saved_model(model: Any, export_dir: str, is_chief: bool = False) -> str | None:
    """Saves a Keras model as a SavedModel; non-chief workers write to a temporary directory and delete it.

    Args:
        model: a tf-keras model (``model.save`` to a path without suffix writes a SavedModel), a Keras 3
            model (``model.export``) or a ``tf.Module``.
        export_dir: where the chief writes the SavedModel: a local path, or any scheme of :mod:`tfos.fs`
            (``s3://``, ``hdfs://``, ...), where it is written locally and uploaded when complete.
        is_chief: whether this worker's copy is kept.

    Returns:
        ``export_dir`` on the chief, None elsewhere.
    """
    if not is_chief:
        target = tempfile.mkdtemp(prefix="tfos-export-")
        try:
            _save(model, target)
        finally:
            shutil.rmtree(target, ignore_errors=True)
        return None
    if fs.writable_by_tensorflow(export_dir):
        _save(model, fs.normalize(export_dir))
    else:  # s3://, hdfs://, ...: write locally, then upload so that readers never see half a model
        with fs.uploaded_dir(export_dir) as local:
            _save(model, local)
    return export_dir


def _save(model: Any, target: str) -> None:
    import tensorflow as tf

    module = type(model).__module__
    if module.startswith(("tf_keras", "keras.src.engine", "tensorflow.python.keras")):
        model.save(target)
    elif hasattr(model, "export"):
        model.export(target)
    else:
        tf.saved_model.save(model, target)


def disable_auto_shard(options: Any) -> None:
    """Sets a ``tf.data.Options`` to no auto-sharding."""
    import tensorflow as tf

    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF


def is_gpu_available() -> bool:
    """True when TensorFlow sees at least one GPU."""
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))
