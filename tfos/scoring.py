"""Score a DataFrame with a SavedModel on the executors, with no TF cluster and no Python loop per row.

``predict_saved_model(df, export_dir, input_col)`` returns the other columns plus a prediction column. Each executor's Python worker
loads the SavedModel once (then keeps it for later batches and later jobs: PySpark reuses its workers), and
every Arrow batch is one call of the model's signature.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Iterator

__all__ = ["predict_saved_model"]

# (export_dir, signature) -> the loaded signature function, per Python worker process.
_MODELS: dict[tuple[str, str], Any] = {}
_LOADS: dict[tuple[str, str], int] = {}
_LOCK = threading.Lock()


def _signature(export_dir: str, signature: str):
    key = (export_dir, signature)
    with _LOCK:
        if key not in _MODELS:
            import tensorflow as tf

            loaded = tf.saved_model.load(export_dir)
            if signature not in loaded.signatures:
                raise ValueError(f"SavedModel {export_dir} has no signature {signature!r}; it has "
                                 f"{sorted(loaded.signatures)}")
            _MODELS[key] = (loaded, loaded.signatures[signature])
            _LOADS[key] = _LOADS.get(key, 0) + 1
        return _MODELS[key][1]


def load_count(export_dir: str, signature: str = "serving_default") -> int:
    """How often this Python worker loaded the SavedModel (for tests and diagnostics)."""
    return _LOADS.get((export_dir, signature), 0)


def _score(export_dir: str, signature: str, input_col: str, output_col: str, output_name: str | None,
           scalar: bool, keep: list, batches: Iterator) -> Iterator:
    import numpy as np
    import pyarrow as pa
    import tensorflow as tf

    from ._feed.datafeed import _arrow_array

    fn = _signature(export_dir, signature)
    (input_name, input_spec), = fn.structured_input_signature[1].items()
    shape = tuple(input_spec.shape[1:])  # per row, e.g. (784,) or (28, 28, 1)
    width = int(np.prod(shape)) if shape and None not in shape else None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        column = batch.column(batch.schema.get_field_index(input_col))
        x = _arrow_array(column, input_col, (width,) if width else None)
        if width:
            x = x.reshape((len(x), *shape))  # a flat array column for an image-shaped input
        outputs = fn(**{input_name: tf.constant(x, dtype=input_spec.dtype)})
        name = output_name or sorted(outputs)[0]
        y = outputs[name].numpy()
        if scalar:
            out = pa.array(y.reshape(len(y)).astype(np.float32))
        else:
            flat = y.reshape(len(y), -1).astype(np.float32)
            out = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1]).cast(
                pa.list_(pa.float32()))
        kept = [batch.column(batch.schema.get_field_index(name)) for name in keep]
        yield pa.RecordBatch.from_arrays([*kept, out], names=[*keep, output_col])


def predict_saved_model(df, export_dir: str, input_col: str, output_col: str = "prediction",
                        signature: str = "serving_default", output_name: str | None = None,
                        scalar_output: bool = False, keep: list[str] | None = None):
    """Scores ``input_col`` with a SavedModel; returns the ``keep`` columns plus ``output_col``.

    By default every column but ``input_col`` is kept: a wide feature column would otherwise travel back
    to the JVM for nothing (TensorFlowOnSpark's ``TFModel.transform`` also returned only mapped columns).

    Args:
        df: a DataFrame; ``input_col`` is an array (or numeric) column matching the signature's one input.
        export_dir: the SavedModel directory, readable from every executor.
        input_col: the column fed to the model.
        output_col: the new column: ``array<float>`` for vector outputs, ``float`` for scalar ones.
        signature: the signature to call.
        output_name: which output of the signature, when it has several (default: the first by name).
        scalar_output: the output is one number per row (a ``float`` column) rather than a vector.
        keep: the columns of ``df`` to return beside ``output_col`` (default: all but ``input_col``).

    Raises:
        ValueError: (on the executors) the signature is missing or a row has the wrong shape.
    """
    from pyspark.sql.types import ArrayType, FloatType, StructField, StructType

    out_type = FloatType() if scalar_output else ArrayType(FloatType())
    keep = [f.name for f in df.schema.fields if f.name != input_col] if keep is None else list(keep)
    fields = {f.name: f for f in df.schema.fields}
    missing = [name for name in keep + [input_col] if name not in fields]
    if missing:
        raise ValueError(f"columns {missing} are not in the DataFrame (columns {list(fields)})")
    schema = StructType([fields[name] for name in keep] + [StructField(output_col, out_type)])
    fn = functools.partial(_score, export_dir, signature, input_col, output_col, output_name, scalar_output, keep)
    return df.mapInArrow(fn, schema)
