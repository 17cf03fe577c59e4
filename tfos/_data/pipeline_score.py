"""How ``TFModel.transform`` scores: the SavedModel's signature read on the driver, Arrow batches on executors.

On the driver, :func:`read_signature` parses ``saved_model.pb`` (no variables are loaded) to learn the
signature's input and output names, dtypes and shapes, so that the column mapping is checked and the result
schema is known before any Spark job runs. On the executors, :func:`score_batches` (a ``mapInArrow`` body)
loads the signature once per Python worker (through :mod:`tfos.scoring`'s cache) and calls it on slices of
``batch_size`` rows taken from each Arrow batch: no Python object per row.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Iterator, Mapping, Sequence

from ..errors import ConfigError

# TensorFlow's DataType enum (tensorflow/core/framework/types.proto) -> (numpy dtype, Spark SQL type name).
_DTYPES = {
    1: ("float32", "float"), 2: ("float64", "double"), 3: ("int32", "int"), 4: ("uint8", "int"),
    5: ("int16", "int"), 6: ("int8", "int"), 7: ("object", "string"), 9: ("int64", "bigint"),
    10: ("bool", "boolean"), 17: ("uint16", "int"), 19: ("float16", "float"),
}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: its numpy dtype, Spark type and per-row shape (None = unknown)."""

    name: str
    dtype: str
    spark_type: str
    shape: tuple | None  # per row, without the batch dimension; None: unknown rank


def read_signature(export_dir: str, signature: str, tag_set: str | None) -> tuple[dict, dict]:
    """Returns ``(inputs, outputs)``: ``{name: TensorSpec}`` of one signature of a SavedModel.

    Raises:
        ConfigError: no SavedModel at ``export_dir``, no MetaGraph with ``tag_set``, no such signature, or an
            input/output dtype tfos cannot map to a Spark column.
    """
    import fsspec
    from tensorflow.core.protobuf import saved_model_pb2

    path = export_dir.rstrip("/") + "/saved_model.pb"
    try:
        with fsspec.open(path, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"TFModel: cannot read the SavedModel at export_dir={export_dir!r} ({type(exc).__name__}: "
                          f"{exc}). Set export_dir to the directory the training function exported to.") from exc
    model = saved_model_pb2.SavedModel.FromString(data)
    wanted = set(tag_set.split(",")) if tag_set else None
    graphs = [g for g in model.meta_graphs if wanted is None or set(g.meta_info_def.tags) == wanted]
    if not graphs:
        have = [",".join(g.meta_info_def.tags) for g in model.meta_graphs]
        raise ConfigError(f"TFModel: the SavedModel at {export_dir} has no MetaGraph with tag_set={tag_set!r}; "
                          f"it has {have}. Set tag_set to one of them (or None).")
    signatures = graphs[0].signature_def
    if signature not in signatures:
        raise ConfigError(f"TFModel: the SavedModel at {export_dir} has no signature {signature!r}; it has "
                          f"{sorted(k for k in signatures if not k.startswith('__'))}. Set signature_def_key.")
    sig = signatures[signature]
    return _specs(sig.inputs, export_dir), _specs(sig.outputs, export_dir)


def _specs(infos: Mapping, export_dir: str) -> dict[str, TensorSpec]:
    specs = {}
    for name, info in infos.items():
        if info.dtype not in _DTYPES:
            raise ConfigError(f"TFModel: tensor {name!r} of the SavedModel at {export_dir} has TensorFlow dtype "
                              f"enum {info.dtype}, which tfos cannot map to a Spark column")
        dims = [d.size for d in info.tensor_shape.dim]
        shape = None if info.tensor_shape.unknown_rank else tuple(None if d < 0 else d for d in dims[1:])
        specs[name] = TensorSpec(name, *_DTYPES[info.dtype], shape)
    return specs


def resolve_mappings(inputs: dict, outputs: dict, input_mapping: Mapping[str, str],
                     output_mapping: Mapping[str, str], columns: Sequence[str]) -> tuple[dict, dict]:
    """Checks ``{column: input tensor}`` and ``{output tensor: column}`` against the signature and the DataFrame.

    An empty input mapping maps each signature input to the column of the same name; an empty output mapping
    adds one column per signature output, named as the output. Input mapping entries whose tensor the signature
    does not take are left out (in a Pipeline the model inherits the estimator's mapping, whose label column is
    for training only); every signature input must still get a column.

    Returns:
        ``(input_mapping, output_mapping)``, completed.

    Raises:
        ConfigError: an unmapped signature input, a mapped column the DataFrame lacks, an unknown output, or an
            output column that already exists in the DataFrame.
    """
    given = dict(input_mapping) or {name: name for name in inputs}
    input_mapping = {col: t for col, t in given.items() if t in inputs}
    unused = sorted(col for col in given if col not in input_mapping)
    unmapped = [t for t in inputs if t not in input_mapping.values()]
    if unmapped:
        raise ConfigError(f"TFModel: the signature's inputs {unmapped} get no column; add them to input_mapping "
                          f"({{column: input name}}; the signature takes {sorted(inputs)}, the mapping is "
                          f"{given}{f', and names no input for columns {unused}' if unused else ''}).")
    missing_cols = [c for c in input_mapping if c not in columns]
    if missing_cols:
        raise ConfigError(f"TFModel input_mapping names columns {missing_cols} that the DataFrame does not have "
                          f"(columns {list(columns)}).")
    output_mapping = dict(output_mapping) or {name: name for name in outputs}
    unknown = [t for t in output_mapping if t not in outputs]
    if unknown:
        raise ConfigError(f"TFModel output_mapping names outputs {unknown} that the signature does not have; its "
                          f"outputs are {sorted(outputs)}. Set output_mapping to {{output name: column}}.")
    clash = [c for c in output_mapping.values() if c in columns]
    if clash:
        raise ConfigError(f"TFModel output columns {clash} already exist in the DataFrame; choose other names in "
                          "output_mapping.")
    return input_mapping, output_mapping


def output_schema(df_schema, outputs: dict, output_mapping: Mapping[str, str]):
    """The result schema: every column of the input, then one column per mapped output (in mapping order)."""
    from pyspark.sql import types as T

    spark_types = {"float": T.FloatType, "double": T.DoubleType, "int": T.IntegerType, "bigint": T.LongType,
                   "boolean": T.BooleanType, "string": T.StringType}
    fields = list(df_schema.fields)
    for tensor, column in output_mapping.items():
        spec = outputs[tensor]
        base = spark_types[spec.spark_type]()
        scalar = spec.shape == ()
        fields.append(T.StructField(column, base if scalar else T.ArrayType(base)))
    return T.StructType(fields)


# ----- executor side ---------------------------------------------------------------------------------------
# Per Python worker process: SavedModels loaded with tags other than "serve" (those go through tfos.scoring's
# cache), how often each was loaded, and how many partitions each scored (the last two for tests and diagnostics).
_OWN_MODELS: dict[tuple, Any] = {}
_OWN_LOADS: dict[tuple, int] = {}
_SCORED: dict[tuple, int] = {}
_OWN_LOCK = threading.Lock()


def _tags(tag_set: str | None) -> list[str] | None:
    return sorted(tag_set.split(",")) if tag_set else None


def _uses_scoring_cache(tags: list[str] | None) -> bool:
    return tags in (None, ["serve"])


def load_signature(export_dir: str, signature: str, tag_set: str | None):
    """The signature function, loaded once per Python worker (shared with :func:`tfos.scoring.predict_saved_model`)."""
    from .. import scoring

    tags = _tags(tag_set)
    if _uses_scoring_cache(tags):
        return scoring._signature(export_dir, signature)
    assert tags is not None  # no tags use the scoring cache
    key = (export_dir, tuple(tags), signature)
    with _OWN_LOCK:
        if key not in _OWN_MODELS:
            import tensorflow as tf

            loaded = tf.saved_model.load(export_dir, tags=tags)
            _OWN_MODELS[key] = (loaded, loaded.signatures[signature])
            _OWN_LOADS[key] = _OWN_LOADS.get(key, 0) + 1
        return _OWN_MODELS[key][1]


def load_count(export_dir: str, signature: str = "serving_default", tag_set: str | None = None) -> int:
    """How often this Python worker loaded the SavedModel that ``TFModel.transform`` scores with.

    Call it on an executor (e.g. in a ``mapInArrow`` probe) with the TFModel's ``export_dir``,
    ``signature_def_key`` and ``tag_set``; with ``tag_set`` None or ``"serve"`` the count is
    :func:`tfos.scoring.load_count`'s, whose cache both share.
    """
    from .. import scoring

    tags = _tags(tag_set)
    if _uses_scoring_cache(tags):
        return scoring.load_count(export_dir, signature)
    assert tags is not None  # no tags use the scoring cache
    return _OWN_LOADS.get((export_dir, tuple(tags), signature), 0)


def partitions_scored(export_dir: str, signature: str = "serving_default", tag_set: str | None = None) -> int:
    """How many partitions this Python worker scored with that SavedModel (see :func:`load_count`)."""
    return _SCORED.get((export_dir, signature, tuple(_tags(tag_set) or ())), 0)


@dataclasses.dataclass(frozen=True)
class ScorePlan:
    """Everything an executor needs to score: built on the driver, shipped with the task."""

    export_dir: str
    signature: str
    tag_set: str | None
    batch_size: int
    inputs: dict  # column -> TensorSpec of its input
    outputs: dict  # output column -> TensorSpec of its output
    keep: tuple  # the input DataFrame's columns, returned unchanged


def score_batches(plan: ScorePlan, batches: Iterator) -> Iterator:
    """``mapInArrow`` body: each Arrow batch in, the same rows plus the output columns out."""
    import pyarrow as pa

    fn = load_signature(plan.export_dir, plan.signature, plan.tag_set)
    key = (plan.export_dir, plan.signature, tuple(_tags(plan.tag_set) or ()))
    _SCORED[key] = _SCORED.get(key, 0) + 1
    for batch in batches:
        if batch.num_rows == 0:
            continue
        arrays = {col: _input_array(batch, col, spec) for col, spec in plan.inputs.items()}
        results = _call_in_slices(fn, plan, arrays, batch.num_rows)
        kept = [batch.column(batch.schema.get_field_index(name)) for name in plan.keep]
        outs = [_to_arrow(results[spec.name], spec, col) for col, spec in plan.outputs.items()]
        yield pa.RecordBatch.from_arrays([*kept, *outs], names=[*plan.keep, *plan.outputs])


def _input_array(batch, column: str, spec: TensorSpec):
    import numpy as np

    from .._feed.datafeed import _arrow_array

    shape = spec.shape or ()
    width = int(np.prod(shape)) if shape and None not in shape else None
    x = _arrow_array(batch.column(batch.schema.get_field_index(column)), column, (width,) if width else None)
    if spec.shape is not None and None not in spec.shape and x.shape[1:] != spec.shape:
        try:
            x = x.reshape((len(x), *spec.shape))  # Spark has flat arrays; the model may want (28, 28, 1)
        except ValueError:
            raise ValueError(f"column {column!r}: rows of shape {x.shape[1:]} cannot feed input {spec.name!r} "
                             f"of shape {spec.shape}") from None
    return x if spec.dtype == "object" else x.astype(spec.dtype, copy=False)


def _call_in_slices(fn, plan: ScorePlan, arrays: dict, rows: int) -> dict:
    import numpy as np
    import tensorflow as tf

    parts: dict[str, list] = {}
    wanted = {spec.name for spec in plan.outputs.values()}
    for start in range(0, rows, plan.batch_size):
        feed = {spec.name: tf.constant(arrays[col][start:start + plan.batch_size])
                for col, spec in plan.inputs.items()}
        outputs = fn(**feed)
        for name in wanted:
            parts.setdefault(name, []).append(outputs[name].numpy())
    results = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    for name, y in results.items():
        if len(y) != rows:
            raise ValueError(f"output {name!r} has {len(y)} rows for {rows} input rows; TFModel needs one output "
                             "row per input row")
    return results


def _to_arrow(y, spec: TensorSpec, column: str):
    import pyarrow as pa

    n = len(y)
    if spec.dtype == "object":
        values = [v.decode() if isinstance(v, bytes) else v for v in y.reshape(n, -1).tolist()]
        return pa.array([v[0] for v in values] if spec.shape == () else values)
    arrow_type = pa.from_numpy_dtype(_numpy_for_spark(spec))
    if spec.shape == ():
        return pa.array(y.reshape(n).astype(arrow_type.to_pandas_dtype(), copy=False), type=arrow_type)
    flat = y.reshape(n, -1).astype(arrow_type.to_pandas_dtype(), copy=False)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), type=arrow_type), flat.shape[1]).cast(
        pa.list_(arrow_type))


def _numpy_for_spark(spec: TensorSpec) -> str:
    """The numpy dtype whose Arrow type matches the output column's Spark type."""
    return {"float": "float32", "double": "float64", "int": "int32", "bigint": "int64", "boolean": "bool"}[
        spec.spark_type]
