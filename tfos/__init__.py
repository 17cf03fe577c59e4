"""tfos: run TensorFlow ``tf.distribute`` training on Apache Spark clusters.

A maintained successor of TensorFlowOnSpark: ``from tfos import TFCluster`` replaces
``from tensorflowonspark import TFCluster``.

The names below are imported when first used, so that a node's TF process, which imports only ``tfos._node``
and ``tfos.node``, does not pay for the driver's modules (gRPC server, Spark glue) at every start.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {  # name: (module, attribute or None for the module itself)
    "ClusterFailedError": ("tfos.errors", "ClusterFailedError"),
    "ConfigError": ("tfos.errors", "ConfigError"),
    "InputMode": ("tfos.cluster", "InputMode"),
    "PlacementError": ("tfos.errors", "PlacementError"),
    "TFCluster": ("tfos.TFCluster", None),
    "TFNodeContext": ("tfos.node", "TFNodeContext"),
    "TFOSError": ("tfos.errors", "TFOSError"),
    "errors": ("tfos.errors", None),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tfos' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    value = value if attribute is None else getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
