"""Spark ML Pipeline API: :class:`TFEstimator` trains on a TF cluster, :class:`TFModel` scores a SavedModel.

TensorFlowOnSpark's names and behaviour are kept: the same params and setters, and the same argument merging
(``tf_args`` as a dict, an ``argparse.Namespace`` or an argv list, with the Spark ML params merged in by
:meth:`TFParams.merge_args_params`). ::

    estimator = (TFEstimator(train_fn, {"lr": 0.01})
                 .setInputMapping({"features": "features", "label": "label"})
                 .setClusterSize(2).setEpochs(2).setExportDir("/shared/export"))
    model = estimator.fit(train_df)                      # a TF cluster trains; train_fn exports a SavedModel
    scored = (model.setInputMapping({"features": "features"})
                   .setOutputMapping({"dense": "prediction"})
                   .transform(test_df))                   # the SavedModel scores Arrow batches on the executors

``fit(df)`` starts ``TFCluster.run(sc, train_fn, args, cluster_size, ...)`` and then, with
``InputMode.SPARK`` (the default), feeds the input-mapped columns of ``df`` (sorted by column name, as
TensorFlowOnSpark did) with ``cluster.train(df, epochs)``; ``train_fn(args, ctx)`` reads them with
``ctx.get_data_feed()``. With ``InputMode.TENSORFLOW`` the DataFrame is written as TFRecords to
``tfrecord_dir`` with :func:`tfos.dfutil.saveAsTFRecords` (or, for a DataFrame loaded with
``dfutil.loadTFRecords``, its source directory is used) and ``train_fn`` reads ``args.tfrecord_dir`` itself.

``TFModel.transform(df)`` needs no TF cluster: each executor's Python worker loads the SavedModel at
``export_dir`` once and calls its signature on slices of ``batch_size`` rows of each Arrow batch
(``mapInArrow``). The result is ``df`` with one column per mapped output. (TensorFlowOnSpark returned only
the output columns; keeping the input columns is what Spark ML transformers do, so that later stages and
evaluators still see the label.)

Both classes save and load (``MLWritable``/``MLReadable``), also inside a ``Pipeline``/``PipelineModel``:
params (``export_dir``, the model's path, among them) go to Spark ML's JSON metadata, ``tf_args`` and
``train_fn`` are stored cloudpickled beside them. The SavedModel itself is not copied.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import logging
from typing import TYPE_CHECKING, Any, Callable, cast

from pyspark.ml import Estimator, Model
from pyspark.ml.param.shared import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter

from .cluster import InputMode
from .errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["Namespace", "TFEstimator", "TFModel", "TFParams", "TFTypeConverters"]


class TFTypeConverters:
    """Type converters for params Spark ML lacks."""

    @staticmethod
    def toDict(value: Any) -> dict:
        """Accepts a dict (``input_mapping``, ``output_mapping``); raises TypeError otherwise."""
        if isinstance(value, dict):
            return value
        raise TypeError(f"expected a dict such as {{'column': 'tensor'}}, got {type(value).__name__}: {value!r}")


def _param(name: str, doc: str, converter: Callable) -> Param:
    return Param(Params._dummy(), name, doc, typeConverter=converter)


class HasBatchSize(Params):
    batch_size = _param("batch_size", "Number of records per batch", TypeConverters.toInt)

    def setBatchSize(self, value: int):
        return self._set(batch_size=value)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batch_size)


class HasClusterSize(Params):
    cluster_size = _param("cluster_size", "Number of nodes in the cluster", TypeConverters.toInt)

    def setClusterSize(self, value: int):
        return self._set(cluster_size=value)

    def getClusterSize(self) -> int:
        return self.getOrDefault(self.cluster_size)


class HasEpochs(Params):
    epochs = _param("epochs", "Number of epochs to train", TypeConverters.toInt)

    def setEpochs(self, value: int):
        return self._set(epochs=value)

    def getEpochs(self) -> int:
        return self.getOrDefault(self.epochs)


class HasGraceSecs(Params):
    grace_secs = _param("grace_secs", "Seconds to wait after training before stopping ps/evaluator nodes",
                        TypeConverters.toInt)

    def setGraceSecs(self, value: int):
        return self._set(grace_secs=value)

    def getGraceSecs(self) -> int:
        return self.getOrDefault(self.grace_secs)


class HasInputMapping(Params):
    input_mapping = _param("input_mapping", "Mapping of input DataFrame column to input tensor",
                           TFTypeConverters.toDict)

    def setInputMapping(self, value: dict):
        return self._set(input_mapping=value)

    def getInputMapping(self) -> dict:
        return self.getOrDefault(self.input_mapping)


class HasInputMode(Params):
    input_mode = _param("input_mode", "Input data feeding mode (0=TENSORFLOW, 1=SPARK)", TypeConverters.toInt)

    def setInputMode(self, value: int):
        return self._set(input_mode=value)

    def getInputMode(self) -> int:
        return self.getOrDefault(self.input_mode)


class HasMasterNode(Params):
    master_node = _param("master_node", "Job name of the master/chief node ('chief', 'master' or None)",
                         TypeConverters.toString)

    def setMasterNode(self, value: str | None):
        return self._set(master_node=value)

    def getMasterNode(self) -> str | None:
        return self.getOrDefault(self.master_node)


class HasModelDir(Params):
    model_dir = _param("model_dir", "Path to save/load model checkpoints", TypeConverters.toString)

    def setModelDir(self, value: str):
        return self._set(model_dir=value)

    def getModelDir(self) -> str | None:
        return self.getOrDefault(self.model_dir)


class HasNumPS(Params):
    num_ps = _param("num_ps", "Number of PS nodes in cluster", TypeConverters.toInt)
    driver_ps_nodes = _param("driver_ps_nodes", "Run PS nodes on driver locally (for testing)",
                             TypeConverters.toBoolean)

    def setNumPS(self, value: int):
        return self._set(num_ps=value)

    def getNumPS(self) -> int:
        return self.getOrDefault(self.num_ps)

    def setDriverPSNodes(self, value: bool):
        return self._set(driver_ps_nodes=value)

    def getDriverPSNodes(self) -> bool:
        return self.getOrDefault(self.driver_ps_nodes)


class HasOutputMapping(Params):
    output_mapping = _param("output_mapping", "Mapping of output tensor to output DataFrame column",
                            TFTypeConverters.toDict)

    def setOutputMapping(self, value: dict):
        return self._set(output_mapping=value)

    def getOutputMapping(self) -> dict:
        return self.getOrDefault(self.output_mapping)


class HasProtocol(Params):
    protocol = _param("protocol", "Network protocol for TensorFlow (grpc)", TypeConverters.toString)

    def setProtocol(self, value: str):
        return self._set(protocol=value)

    def getProtocol(self) -> str:
        return self.getOrDefault(self.protocol)


class HasReaders(Params):
    readers = _param("readers", "Number of reader/enqueue threads", TypeConverters.toInt)

    def setReaders(self, value: int):
        return self._set(readers=value)

    def getReaders(self) -> int:
        return self.getOrDefault(self.readers)


class HasSteps(Params):
    steps = _param("steps", "Maximum number of steps to train", TypeConverters.toInt)

    def setSteps(self, value: int):
        return self._set(steps=value)

    def getSteps(self) -> int:
        return self.getOrDefault(self.steps)


class HasTensorboard(Params):
    tensorboard = _param("tensorboard", "Launch tensorboard process", TypeConverters.toBoolean)

    def setTensorboard(self, value: bool):
        return self._set(tensorboard=value)

    def getTensorboard(self) -> bool:
        return self.getOrDefault(self.tensorboard)


class HasTFRecordDir(Params):
    tfrecord_dir = _param("tfrecord_dir", "Path to export a DataFrame as TFRecords (for InputMode.TENSORFLOW)",
                          TypeConverters.toString)

    def setTFRecordDir(self, value: str):
        return self._set(tfrecord_dir=value)

    def getTFRecordDir(self) -> str | None:
        return self.getOrDefault(self.tfrecord_dir)


class HasExportDir(Params):
    export_dir = _param("export_dir", "Directory to export saved_model", TypeConverters.toString)

    def setExportDir(self, value: str):
        return self._set(export_dir=value)

    def getExportDir(self) -> str | None:
        return self.getOrDefault(self.export_dir)


class HasSignatureDefKey(Params):
    signature_def_key = _param("signature_def_key", "Identifier for a specific saved_model signature",
                               TypeConverters.toString)

    def setSignatureDefKey(self, value: str):
        return self._set(signature_def_key=value)

    def getSignatureDefKey(self) -> str | None:
        return self.getOrDefault(self.signature_def_key)


class HasTagSet(Params):
    tag_set = _param("tag_set", "Comma-delimited list of tags identifying a saved_model metagraph",
                     TypeConverters.toString)

    def setTagSet(self, value: str):
        return self._set(tag_set=value)

    def getTagSet(self) -> str | None:
        return self.getOrDefault(self.tag_set)


class Namespace:
    """``tf_args`` as an attribute bag: from a dict, an ``argparse.Namespace``, a :class:`Namespace` or an argv list.

    An argv list is kept as ``argv`` (and passed to the TF function as the list itself, which tfos also sets
    as ``sys.argv``); the others become attributes.

    Raises:
        ConfigError: ``d`` is none of these.
    """

    argv: list | None = None

    if TYPE_CHECKING:  # an attribute bag: any name of tf_args
        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...

    def __init__(self, d: Any) -> None:
        if isinstance(d, list):
            self.argv = list(d)
        elif isinstance(d, dict):
            self.__dict__.update(d)
        elif isinstance(d, (argparse.Namespace, Namespace)):
            self.__dict__.update(vars(d))
        else:
            raise ConfigError(f"tf_args must be a dict, an argparse.Namespace or an argv list, got "
                              f"{type(d).__name__}")

    def __iter__(self):
        return iter(self.argv if self.argv else list(self.__dict__))

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__

    def __repr__(self) -> str:
        if self.argv:
            return repr(self.argv)
        items = ", ".join(f"{k}={self.__dict__[k]!r}" for k in sorted(self.__dict__))
        return f"Namespace({items})"

    def __eq__(self, other: Any) -> bool:
        if self.argv:
            return self.argv == (other.argv if isinstance(other, Namespace) else other)
        return isinstance(other, (Namespace, argparse.Namespace)) and self.__dict__ == vars(other)


class TFParams(Params):
    """Mix-in: keeps ``tf_args`` as :class:`Namespace` ``args`` and merges the Spark ML params into a copy."""

    args: Namespace | None = None

    def merge_args_params(self) -> Namespace:
        """A copy of ``args`` with every param of this stage set on it (params win over args of the same name).

        ``self.args`` is left unchanged. Unset params take their default (None included), as in
        TensorFlowOnSpark.
        """
        local_args = copy.copy(self.args) if self.args is not None else Namespace({})
        merged = vars(local_args)
        for param in self.params:
            merged[param.name] = self.getOrDefault(param)
        return local_args


def _tf_args(args: Namespace | None, merged: Namespace) -> Any:
    """What the TF function receives: the argv list when args came as one, else the merged namespace."""
    return args.argv if args is not None and args.argv else merged


class _CallExport:
    """Runs TensorFlowOnSpark's ``export_fn(args)`` as a one-instance TFParallel job."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __call__(self, args: Any, ctx: Any) -> None:
        self.fn(args)


class TFEstimator(Estimator, TFParams, HasInputMapping, HasOutputMapping, HasClusterSize, HasNumPS, HasInputMode, HasMasterNode,
                  HasProtocol, HasTensorboard, HasModelDir, HasExportDir, HasTFRecordDir, HasBatchSize, HasEpochs,
                  HasReaders, HasSteps, HasGraceSecs, MLWritable, MLReadable):
    """A Spark ML Estimator whose ``fit(df)`` trains ``train_fn`` on a tfos TF cluster and returns a :class:`TFModel`.

    Defaults (TensorFlowOnSpark's): ``cluster_size=1``, ``num_ps=0``, ``driver_ps_nodes=False``,
    ``input_mode=InputMode.SPARK``, ``master_node="chief"``, ``tensorboard=False``, ``batch_size=100``,
    ``epochs=1``, ``readers=1``, ``steps=1000``, ``input_mapping={}`` (feed every column), and
    ``grace_secs=0`` (TensorFlowOnSpark waited 30 s; ``shutdown`` here already waits for every worker).
    ``output_mapping`` (not in TensorFlowOnSpark's estimator) is only copied to the fitted :class:`TFModel`, so
    that a ``Pipeline`` can name the prediction columns before it is fitted.
    ``batch_size``, ``steps``, ``readers``, ``model_dir`` and ``export_dir`` are only handed to ``train_fn``
    (as ``args.<name>``), which decides what they mean.

    Args:
        train_fn: the TF main function, ``train_fn(args, ctx)``; it should export a SavedModel to
            ``args.export_dir`` for :class:`TFModel`.
        tf_args: a dict, ``argparse.Namespace`` or argv list (see :class:`Namespace`).
        export_fn: optional ``export_fn(args)`` run once on one executor after training (TensorFlowOnSpark's
            hook for exporting a different graph for serving).
    """

    def __init__(self, train_fn: Callable, tf_args: Any = None, export_fn: Callable | None = None) -> None:
        super().__init__()
        self.train_fn = train_fn
        self.export_fn = export_fn
        self.args = Namespace({} if tf_args is None else tf_args)
        self._setDefault(input_mapping={}, output_mapping={}, cluster_size=1, num_ps=0, driver_ps_nodes=False,
                         input_mode=InputMode.SPARK, master_node="chief", protocol="grpc", tensorboard=False,
                         model_dir=None, export_dir=None, tfrecord_dir=None, batch_size=100, epochs=1, readers=1,
                         steps=1000, grace_secs=0)

    def _fit(self, dataset) -> "TFModel":
        """Trains on ``dataset`` and returns a :class:`TFModel` with this estimator's args and shared params.

        Raises:
            ConfigError: ``input_mode`` is unknown, or InputMode.TENSORFLOW without ``tfrecord_dir``.
            ClusterFailedError: a TF node failed (the root cause's traceback first).
        """
        from . import TFCluster

        local_args = self.merge_args_params()
        logger.info("TFEstimator.fit: args %s, params %s", self.args, local_args)
        mode = local_args.input_mode
        if mode not in (InputMode.SPARK, InputMode.TENSORFLOW):
            raise ConfigError(f"TFEstimator input_mode must be InputMode.SPARK (1) or InputMode.TENSORFLOW (0), "
                              f"got {mode!r}")
        if local_args.protocol != "grpc":
            raise ConfigError(f"TFEstimator protocol={local_args.protocol!r}: TensorFlow 2 supports only 'grpc'")
        columns = sorted(self.getInputMapping()) or list(dataset.columns)
        if mode == InputMode.TENSORFLOW:
            local_args.tfrecord_dir = _export_tfrecords(dataset, columns, local_args.tfrecord_dir)
        sc = dataset.sparkSession  # classic or Spark Connect: TFCluster.run and TFParallel.run take either
        tf_args = _tf_args(self.args, local_args)
        cluster = TFCluster.run(sc, self.train_fn, tf_args, local_args.cluster_size, local_args.num_ps,
                                local_args.tensorboard, mode, driver_ps_nodes=local_args.driver_ps_nodes,
                                master_node=local_args.master_node)
        if mode == InputMode.SPARK:
            try:
                cluster.train(dataset.select(columns), local_args.epochs)
            except BaseException:
                with contextlib.suppress(Exception):  # the feeding error is the one to report
                    cluster.shutdown(timeout=60)
                raise
        cluster.shutdown(grace_secs=local_args.grace_secs)
        if self.export_fn is not None:
            from . import TFParallel

            logger.info("TFEstimator.fit: running export_fn on one executor")
            TFParallel.run(sc, _CallExport(self.export_fn), tf_args, 1)
        return self._copyValues(TFModel(self.args))

    def write(self) -> MLWriter:
        """A writer that saves the params, ``tf_args``, ``train_fn`` and ``export_fn`` (cloudpickled)."""
        return _Writer(self, {"train_fn": self.train_fn, "export_fn": self.export_fn})

    @classmethod
    def read(cls) -> MLReader:
        return _Reader(cls)


class TFModel(Model, TFParams, HasInputMapping, HasOutputMapping, HasBatchSize, HasModelDir, HasExportDir,
              HasSignatureDefKey, HasTagSet, MLWritable, MLReadable):
    """A Spark ML Model that scores a DataFrame with the SavedModel at ``export_dir``.

    ``input_mapping`` is ``{column: signature input}``, ``output_mapping`` is ``{signature output: new
    column}``; left empty they map signature names to columns of the same name. Array columns are reshaped to
    the input's shape (a flat 784-vector feeds a ``(28, 28, 1)`` input). Output columns are Spark arrays, or
    scalars for outputs with one value per row, typed from the signature (float32 -> float, int64 -> bigint,
    ...). Defaults: ``batch_size=100`` rows per call of the model, ``signature_def_key="serving_default"``,
    ``tag_set=None`` (the SavedModel's only MetaGraph, or ``"serve"``).

    Args:
        tf_args: a dict, ``argparse.Namespace`` or argv list (kept for ``merge_args_params``).
    """

    def __init__(self, tf_args: Any = None) -> None:
        super().__init__()
        self.args = Namespace({} if tf_args is None else tf_args)
        self._setDefault(input_mapping={}, output_mapping={}, batch_size=100, model_dir=None, export_dir=None,
                         signature_def_key=None, tag_set=None)

    def _transform(self, dataset):
        """Returns ``dataset`` plus one column per mapped output (lazy, like any Spark transformation).

        Raises:
            ConfigError: no ``export_dir``, an unreadable SavedModel, a mapping that does not fit the signature
                or the DataFrame, or ``batch_size < 1``.
        """
        from ._data import pipeline_score as score
        from ._driver.spark import bind

        args = self.merge_args_params()
        if not args.export_dir:
            raise ConfigError("TFModel needs export_dir, the SavedModel to score with (TF 2 cannot score a "
                              "model_dir checkpoint without the model's code). Call setExportDir(path).")
        if args.batch_size < 1:
            raise ConfigError(f"TFModel batch_size must be >= 1, got {args.batch_size}")
        signature = args.signature_def_key or "serving_default"
        inputs, outputs = score.read_signature(args.export_dir, signature, args.tag_set)
        in_map, out_map = score.resolve_mappings(inputs, outputs, args.input_mapping, args.output_mapping,
                                                 dataset.columns)
        plan = score.ScorePlan(
            export_dir=args.export_dir, signature=signature, tag_set=args.tag_set, batch_size=args.batch_size,
            inputs={col: inputs[tensor] for col, tensor in in_map.items()},
            outputs={col: outputs[tensor] for tensor, col in out_map.items()},
            keep=tuple(dataset.columns),
        )
        logger.info("TFModel.transform: %s -> %s with %s[%s]", in_map, out_map, args.export_dir, signature)
        schema = score.output_schema(dataset.schema, outputs, out_map)
        return dataset.mapInArrow(bind(score.score_batches, plan), schema)

    def write(self) -> MLWriter:
        """A writer that saves the params (``export_dir`` included) and ``tf_args``."""
        return _Writer(self, {})

    @classmethod
    def read(cls) -> MLReader:
        return _Reader(cls)


def _export_tfrecords(df, columns: list, tfrecord_dir: str | None):
    """InputMode.TENSORFLOW: where train_fn finds the DataFrame as TFRecords (written now unless it came from there).

    A DataFrame from ``dfutil.loadTFRecords`` is not written again: its source directory (or list of them) is used.
    """
    from . import dfutil

    if dfutil.isLoadedDF(df):
        sources = getattr(dfutil, "loadedDF", None) or dfutil._loaded
        paths = sources[df]
        return paths[0] if isinstance(paths, (list, tuple)) and len(paths) == 1 else paths
    df = df.select(columns)
    if not tfrecord_dir:
        raise ConfigError("TFEstimator with InputMode.TENSORFLOW writes the DataFrame as TFRecords for train_fn "
                          "to read: call setTFRecordDir(path) (a directory every executor can reach).")
    logger.info("TFEstimator.fit: writing %s as TFRecords to %s", df.dtypes, tfrecord_dir)
    dfutil.saveAsTFRecords(df, tfrecord_dir)
    return tfrecord_dir


# ----- persistence -----------------------------------------------------------------------------------------
def encode_objects(objects: dict) -> dict:
    """``{name: object}`` -> ``{name: base64 cloudpickle}`` for Spark ML's JSON metadata."""
    import cloudpickle

    try:
        return {name: base64.b64encode(cloudpickle.dumps(obj)).decode("ascii") for name, obj in objects.items()}
    except Exception as exc:
        raise ConfigError(f"cannot save the stage: its tf_args or functions cannot be pickled "
                          f"({type(exc).__name__}: {exc})") from exc


def decode_objects(encoded: dict) -> dict:
    """The inverse of :func:`encode_objects`."""
    import cloudpickle

    return {name: cloudpickle.loads(base64.b64decode(text)) for name, text in encoded.items()}


class _Writer(MLWriter):
    """Spark ML metadata (params as JSON) plus the stage's Python objects, cloudpickled into the metadata."""

    def __init__(self, instance: TFParams, objects: dict) -> None:
        super().__init__()
        self.instance = instance
        self.objects = objects

    def saveImpl(self, path: str) -> None:
        extra = {"tfos": encode_objects({"args": self.instance.args, **self.objects})}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession, extraMetadata=extra)


class _Reader(MLReader):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        objects = decode_objects(metadata.get("tfos", {}))
        args = objects.pop("args", None)
        if self.cls is TFEstimator:
            instance = TFEstimator(cast(Callable, objects.get("train_fn")), args, objects.get("export_fn"))
        else:
            instance = self.cls(args)
        instance.args = args if isinstance(args, Namespace) else Namespace(args or {})
        instance._resetUid(metadata["uid"])
        for name, value in metadata.get("defaultParamMap", {}).items():
            instance._setDefault(**{name: value})
        for name, value in metadata["paramMap"].items():
            instance._set(**{name: value})  # _set accepts None, which several params default to
        return instance
