"""The two kinds of Spark session behind the launch pipeline's :class:`~tfos._driver.launch.Backend`."""

from __future__ import annotations

import logging

from . import spark as _spark
from .._connect import session as connect
from ..errors import ConfigError
from ..fs import S3A_SETTINGS
from .launch import TENSORFLOW_MODE

logger = logging.getLogger(__name__)


class ClassicBackend:
    """The launch pipeline's :class:`~tfos._driver.launch.Backend` for a SparkContext (classic session)."""

    session_word = "SparkContext"
    forward_logs = True  # the nodes reach the driver's control server, which prints their output

    def __init__(self, sc) -> None:
        self.sc = sc

    def conf(self) -> dict[str, str]:
        return _spark.all_conf(self.sc)

    def default_fs(self) -> str:
        return _spark.default_fs(self.sc)

    def s3a_settings(self) -> dict[str, str]:
        return _spark.hadoop_conf(self.sc, S3A_SETTINGS)

    def check_request(self, request, config) -> None:
        if request.driver_ps_nodes and not request.num_ps:
            raise ConfigError("driver_ps_nodes=True needs num_ps > 0")
        if request.driver_ps_nodes and request.input_mode != TENSORFLOW_MODE:
            raise ConfigError("driver_ps_nodes=True is only supported with InputMode.TENSORFLOW")
        if config.max_restarts and request.input_mode != TENSORFLOW_MODE:
            raise ConfigError(
                f"max_restarts={config.max_restarts} needs InputMode.TENSORFLOW: with InputMode.SPARK the rows "
                "TFCluster.train already fed cannot be replayed into a restarted cluster. Set max_restarts=0 "
                "(TFOS_MAX_RESTARTS=0), or let main_fun read its data (InputMode.TENSORFLOW with tfos.data)."
            )

    def check_placement(self, nodes: int, wait: float, parallel: bool = False) -> int:
        return _spark.check_placement(self.sc, nodes, wait, parallel=parallel)


class ConnectBackend:
    """The launch pipeline's :class:`~tfos._driver.launch.Backend` for a Spark Connect session."""

    session_word = "SparkSession"
    forward_logs = False  # the client may be unreachable from the executors: output stays in their logs

    def __init__(self, spark) -> None:
        self.spark = spark

    def conf(self) -> dict[str, str]:
        return connect.all_conf(self.spark)

    def default_fs(self) -> str:
        return connect.default_fs(self.spark)

    def s3a_settings(self) -> dict[str, str]:
        return connect.hadoop_settings(self.spark, "fs.s3a.")

    def check_request(self, request, config) -> None:
        if request.driver_ps_nodes:
            raise ConfigError("driver_ps_nodes=True is not supported with a Spark Connect session: the client is not "
                              "part of the Spark cluster (its address may not be reachable from the executors). "
                              "Run the ps nodes on executors (driver_ps_nodes=False).")
        if config.max_restarts:
            raise ConfigError(f"max_restarts={config.max_restarts} is not supported with a Spark Connect session: "
                              "a restart needs a control server that outlives the failed nodes, and under Connect "
                              "node 0 hosts it. Use max_restarts=0 (TFOS_MAX_RESTARTS=0), or a classic SparkSession.")
        if config.forward_logs == "all":
            logger.warning("forward_logs=all (TFOS_FORWARD_LOGS) has no effect with a Spark Connect session: the "
                           "client may be unreachable from the executors, so the nodes' output stays in the "
                           "executors' stderr logs, every line of it; a failure still brings back its last "
                           "log_tail_lines lines.")

    def check_placement(self, nodes: int, wait: float, parallel: bool = False) -> None:
        connect.check_placement(self.spark, nodes, wait, parallel=parallel)
