"""TensorFlowOnSpark's module name for the driver API: ``from tfos import TFCluster; TFCluster.run(...)``.

Everything here is defined in :mod:`tfos.cluster`.
"""

from .cluster import InputMode, TFCluster, run

__all__ = ["InputMode", "TFCluster", "run"]
