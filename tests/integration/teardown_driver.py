"""A driver program for test_teardown: starts a 2-node cluster that never ends, then waits in shutdown().

Usage: ``python teardown_driver.py OUT_DIR``. Writes ``OUT_DIR/cluster.json`` (TensorBoard pid, TF ports,
control address) and prints ``READY`` once every TF process is up; on Ctrl-C prints ``INTERRUPTED`` and exits 130.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cloudpickle  # noqa: E402

import nodefns_reliability as fns  # noqa: E402

cloudpickle.register_pickle_by_value(fns)


def main() -> int:
    from pyspark.sql import SparkSession

    from tfos import TFCluster

    out = sys.argv[1]
    spark = (SparkSession.builder.master("local-cluster[2,1,1024]").appName("tfos-teardown")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false").getOrCreate())
    try:
        cluster = TFCluster.run(spark.sparkContext, fns.write_pid_and_wait, {"out": out, "max_secs": 600}, 2,
                                master_node="chief", tensorboard=True, log_dir=os.path.join(out, "logs"),
                                stop_grace_secs=2, progress="off")
        info = {"tb_pid": next(n["tb_pid"] for n in cluster._state.node_table() if n["tb_pid"]),
                "ports": [n["port"] for n in cluster.cluster_info], "control": cluster.server.address}
        with open(os.path.join(out, "cluster.tmp"), "w") as f:
            json.dump(info, f)
        os.replace(os.path.join(out, "cluster.tmp"), os.path.join(out, "cluster.json"))
        try:
            # READY is printed inside the try: the test's SIGINT can arrive while print is still flushing.
            print("READY", flush=True)
            cluster.shutdown(timeout=600)
        except KeyboardInterrupt:
            print("INTERRUPTED", flush=True)
            return 130
        return 0
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
