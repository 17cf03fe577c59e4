#!/usr/bin/env bash
# Entry point of the tfos image under Spark's Kubernetes backend (the pod template names it as the command).
#
# Spark starts its pods with one argument, "driver" or "executor", and describes the process in environment
# variables (SPARK_DRIVER_URL, SPARK_EXECUTOR_ID, SPARK_EXECUTOR_POD_IP, SPARK_JAVA_OPT_<n>, ...). This script
# turns them into the JVM command line. Anything else runs unchanged, e.g. `bash scripts/run_mnist.sh`.
set -euo pipefail

if [[ -z "${SPARK_HOME:-}" ]]; then
    SPARK_HOME="$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
fi
export SPARK_HOME
[[ -n "${PYSPARK_PYTHON:-}" ]] && export PYSPARK_PYTHON
[[ -n "${PYSPARK_DRIVER_PYTHON:-}" ]] && export PYSPARK_DRIVER_PYTHON

classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}"
[[ -n "${HADOOP_CONF_DIR:-}" ]] && classpath="$classpath:$HADOOP_CONF_DIR"
classpath="$classpath:$SPARK_HOME/jars/*"
[[ -n "${SPARK_EXTRA_CLASSPATH:-}" ]] && classpath="$classpath:$SPARK_EXTRA_CLASSPATH"
[[ -n "${SPARK_DIST_CLASSPATH:-}" ]] && classpath="$classpath:$SPARK_DIST_CLASSPATH"

java="${JAVA_HOME:+$JAVA_HOME/bin/}java"

case "${1:-}" in
    driver)
        shift
        exec "$SPARK_HOME/bin/spark-submit" --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
            --deploy-mode client "$@"
        ;;
    executor)
        shift
        # The executor JVM's options arrive as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ..., in that order.
        opts=()
        for n in $(compgen -e | sed -n 's/^SPARK_JAVA_OPT_\([0-9][0-9]*\)$/\1/p' | sort -n); do
            name="SPARK_JAVA_OPT_$n"
            opts+=("${!name}")
        done
        exec "$java" ${opts[@]+"${opts[@]}"} -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" -cp "$classpath" \
            org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
            --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" \
            --cores "$SPARK_EXECUTOR_CORES" --app-id "$SPARK_APPLICATION_ID" \
            --hostname "$SPARK_EXECUTOR_POD_IP" --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
            --podName "$SPARK_EXECUTOR_POD_NAME"
        ;;
    *)
        exec "$@"
        ;;
esac
