#!/bin/sh
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript, spark.worker.resource.gpu.discoveryScript):
# prints this host's GPUs, as nvidia-smi numbers them, in the JSON form Spark reads.
set -eu
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | awk 'NF { printf "%s\"%s\"", sep, $1; sep = ", " }')
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
