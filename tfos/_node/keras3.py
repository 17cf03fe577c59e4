"""Keras 3 under MultiWorkerMirroredStrategy: tfos's repair, installed in the TF process when it runs Keras 3.

Upstream Keras 3 does not run ``model.fit`` under a multi-worker ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585, open since 2024-12). Every node fails at its first step with ``ValueError: Attempt to
convert a value (PerReplica:{...}) with an unsupported type``. Reading Keras 3.15's TensorFlow trainer
(``keras/src/backend/tensorflow/trainer.py``) finds the causes. Each is repaired here only when the strategy
is multi-worker; otherwise the original runs.

1. ``TensorFlowTrainer._maybe_symbolic_build`` builds the model from one real batch. It pulls the batch from the
   distributed iterator and averages it across workers with ``strategy.reduce("MEAN", (x, y), axis=None)``.
   MWMS's cross-worker reduce takes one tensor, not an ``(x, y)`` tuple: that is where the ``PerReplica``
   escapes. It also costs a collective and throws the batch away, so a Spark-fed node could lose rows. The
   repair builds from the dataset's ``element_spec`` (shapes and dtypes) instead, which reads no data.
2. ``reduce_per_replica`` reduces the step's logs with ``strategy.reduce("MEAN", v, axis=0)`` on multi-worker
   strategies. The logs are scalars, so this fails with "Invalid reduction dimension 0". The repair averages
   across replicas (``axis=None``), as Keras does for single-host strategies.
3. ``ModelCheckpoint`` and ``BackupAndRestore`` make every worker write the same files. Two processes writing
   one HDF5 file fail with ``BlockingIOError: unable to lock file``, and the last one's ``rmtree`` races the
   others. The repair lets only the chief (``strategy.extended.should_checkpoint``) write and delete. Every
   worker still reads the chief's backup when training starts, so ``BackupAndRestore`` resumes every worker
   from the same epoch (``max_restarts``).

Checked against Keras 3.15.1 with TensorFlow 2.21 (tests/integration/test_keras3.py). For another Keras minor
release, :func:`install` replaces nothing. A multi-worker ``fit`` then fails at once with
:class:`Keras3UnsupportedError`, which says what to do, instead of guessing at code tfos has not read.
"""

from __future__ import annotations

import logging

from ..errors import Keras3UnsupportedError

logger = logging.getLogger(__name__)

CHECKED_MINOR = (3, 15)  # the Keras 3 minor release whose code the repair was read against and tested with
CHECKED_WITH = "3.15.1"
UPSTREAM = "keras-team/keras#20585"


def _multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()


def _checked(version: str) -> bool:
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) == CHECKED_MINOR


def install() -> bool:
    """Installs the repair (or, for an unchecked Keras release, the clear error); True if repaired."""
    import keras
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_tfos_keras3", False):
        return True
    trainer._tfos_keras3 = True
    if not _checked(keras.__version__):
        _install_refusal(trainer, keras.__version__)
        logger.warning("Keras %s: tfos's MultiWorkerMirroredStrategy repair is for Keras %d.%d; a multi-worker "
                       "model.fit will fail with a message saying what to do", keras.__version__, *CHECKED_MINOR)
        return False
    _repair_symbolic_build(trainer)
    _repair_reduce_per_replica(trainer)
    _repair_callbacks()
    logger.info("Keras %s: tfos's MultiWorkerMirroredStrategy repair installed (%s)", keras.__version__, UPSTREAM)
    return True


def _repair_symbolic_build(trainer) -> None:
    original = trainer.TensorFlowTrainer._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or not _multi_worker(self.distribute_strategy):
            return original(self, iterator, data_batch)
        if data_batch is None and iterator is not None:
            data_batch = iterator.data_adapter.get_tf_dataset().element_spec  # shapes and dtypes, no data read
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build


def _repair_reduce_per_replica(trainer) -> None:
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and _multi_worker(strategy):
            from keras.src import tree

            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica  # looked up at call time by the step functions


def _chief_only(cls, name: str) -> None:
    original = getattr(cls, name)

    def method(self, *args, **kwargs):
        strategy = self.model.distribute_strategy
        if _multi_worker(strategy) and not strategy.extended.should_checkpoint:
            return None  # another worker (the chief) writes these files
        return original(self, *args, **kwargs)

    method.__name__, method.__doc__ = original.__name__, original.__doc__
    setattr(cls, name, method)


def _repair_callbacks() -> None:
    from keras.src.callbacks.backup_and_restore import BackupAndRestore
    from keras.src.callbacks.model_checkpoint import ModelCheckpoint

    _chief_only(ModelCheckpoint, "_save_model")
    _chief_only(BackupAndRestore, "_save_model")
    _chief_only(BackupAndRestore, "on_train_end")  # deletes the backup when training ends


def _install_refusal(trainer, version: str) -> None:
    original = trainer.TensorFlowTrainer._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is not None and _multi_worker(self.distribute_strategy):
            raise Keras3UnsupportedError(
                f"Keras 3 ({version}) does not run model.fit under a multi-worker MultiWorkerMirroredStrategy "
                f"({UPSTREAM}), and tfos's repair is for Keras {CHECKED_MINOR[0]}.{CHECKED_MINOR[1]} only (checked "
                f"with {CHECKED_WITH}); it did not touch Keras {version}. Either install that release in the "
                f"executors' Python (pip install 'keras=={CHECKED_MINOR[0]}.{CHECKED_MINOR[1]}.*'), or run this "
                "code on tf-keras 2: use tf.keras instead of `import keras` and set legacy_keras=1 "
                "(TFOS_LEGACY_KERAS=1; needs pip install tf-keras).")
        return original(self, iterator, data_batch)

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
