"""tfos: run TensorFlow ``tf.distribute`` training on Apache Spark clusters.

A maintained successor of TensorFlowOnSpark: ``from tfos import TFCluster`` replaces
``from tensorflowonspark import TFCluster``.
"""

from . import TFCluster, errors
from .cluster import InputMode
from .errors import ClusterFailedError, ConfigError, PlacementError, TFOSError
from .node import TFNodeContext

__version__ = "0.1.0"

__all__ = sorted(
    [
        "ClusterFailedError",
        "ConfigError",
        "InputMode",
        "PlacementError",
        "TFCluster",
        "TFNodeContext",
        "TFOSError",
        "errors",
    ]
)
