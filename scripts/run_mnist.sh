#!/usr/bin/env bash
# End-to-end MNIST demo: prepares the data, starts a throwaway 2-worker Spark standalone cluster on loopback,
# runs examples/mnist/mnist_tf.py on it with spark-submit and stops the cluster again.
#
#   scripts/run_mnist.sh [extra mnist_tf.py arguments...]
#
# Data goes to data/mnist (skipped when the TFRecords already exist); the model and its export go to
# work/mnist/{model,export}, which are emptied first. Both directories are gitignored.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${TFOS_VENV:-.venv}"
[[ "$VENV" = /* ]] || VENV="$ROOT/$VENV"
DATA="$ROOT/data/mnist"
WORK="$ROOT/work/mnist"

bash "$ROOT/scripts/setup.sh"

if compgen -G "$DATA/tfr/train/*.tfrecord" > /dev/null && compgen -G "$DATA/tfr/test/*.tfrecord" > /dev/null; then
    echo "[mnist] using existing data in $DATA"
else
    echo "[mnist] preparing data in $DATA"
    "$VENV/bin/python" examples/mnist/mnist_data_setup.py --output "$DATA"
fi

echo "[mnist] clearing $WORK/model and $WORK/export"
rm -rf "$WORK/model" "$WORK/export"
mkdir -p "$WORK"

# Driver and executors must run the venv's interpreter; everything stays on loopback.
export PYSPARK_PYTHON="$VENV/bin/python"
export PYSPARK_DRIVER_PYTHON="$VENV/bin/python"
export SPARK_LOCAL_IP=127.0.0.1

# Paths are absolute: executors run in their own work directories.
"$VENV/bin/python" -m tfos.standalone run --workers 2 --cores 1 --memory 2g -- \
    "$VENV/bin/spark-submit" --master '{MASTER}' \
        --conf spark.cores.max=2 \
        --conf spark.task.cpus=1 \
        --conf spark.executor.memory=1500m \
        --conf spark.driver.host=127.0.0.1 \
        --conf spark.driver.bindAddress=127.0.0.1 \
        --conf spark.log.level=WARN \
        examples/mnist/mnist_tf.py \
        --cluster_size 2 \
        --images_labels "$DATA/tfr" \
        --model_dir "$WORK/model" \
        --export_dir "$WORK/export" \
        "$@"
echo "[mnist] done: model in $WORK/model, export in $WORK/export"
