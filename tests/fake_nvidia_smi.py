"""A fake ``nvidia-smi`` for GPU tests: an executable script answering the two queries tfos makes.

It also answers ``--query-gpu=index`` for docker/discover-gpus.sh. ``install(directory, gpus, apps)`` writes ``directory/nvidia-smi``; its answers come from ``nvidia-smi.json``
beside it, so a test can change them while nodes run. ``gpus`` are ``(index, uuid, memory_used_mib)``
tuples; ``apps`` are ``(gpu_uuid, pid)`` compute processes.
"""

import json
import os
import sys

SCRIPT = """#!{python}
import json, os, sys
state = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "nvidia-smi.json")))
args = " ".join(sys.argv[1:])
if "--query-gpu=index,uuid,memory.used,memory.total" in args and "noheader,nounits" in args:
    for index, uuid, used in state["gpus"]:
        print(f"{{index}}, {{uuid}}, {{used}}, 16160")
elif "--query-gpu=index --format=csv,noheader" in args:  # docker/discover-gpus.sh
    for index, uuid, used in state["gpus"]:
        print(index)
elif "--query-compute-apps=gpu_uuid,pid" in args and "noheader,nounits" in args:
    for uuid, pid in state["apps"]:
        print(f"{{uuid}}, {{pid}}")
else:
    print("fake nvidia-smi: unexpected arguments " + args, file=sys.stderr)
    sys.exit(2)
if not state["gpus"] and "--query-gpu" in args:
    print("No devices were found")
    sys.exit(6)
"""


def install(directory, gpus, apps=()):
    """Writes an executable fake ``nvidia-smi`` into ``directory``; returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(str(directory), "nvidia-smi")
    with open(path, "w") as f:
        f.write(SCRIPT.format(python=sys.executable))
    os.chmod(path, 0o755)
    with open(os.path.join(str(directory), "nvidia-smi.json"), "w") as f:
        json.dump({"gpus": [list(g) for g in gpus], "apps": [list(a) for a in apps]}, f)
    return path


def spark_gpu_conf(tmp_path, executor_devices="4,6"):
    """Spark settings that make Spark schedule one GPU (address 1) per executor and task, with a fake discovery
    script, the executor's own ``CUDA_VISIBLE_DEVICES`` (so Spark's address 1 is ``executor_devices``' second GPU),
    and a fake nvidia-smi on the executors' PATH showing GPU 0 (had tfos fallen back to it, nodes would see 0)."""
    script = os.path.join(str(tmp_path), "discover_gpus.sh")
    with open(script, "w") as f:
        f.write('#!/bin/sh\necho \'{"name": "gpu", "addresses": ["1"]}\'\n')
    os.chmod(script, 0o755)
    smi = install(os.path.join(str(tmp_path), "bin"), [("0", "GPU-0000", 0)])
    return {
        "spark.worker.resource.gpu.amount": "1", "spark.worker.resource.gpu.discoveryScript": script,
        "spark.executor.resource.gpu.amount": "1", "spark.executor.resource.gpu.discoveryScript": script,
        "spark.task.resource.gpu.amount": "1",
        "spark.executorEnv.CUDA_VISIBLE_DEVICES": executor_devices,
        "spark.executorEnv.PATH": f"{os.path.dirname(smi)}:{os.environ['PATH']}",
    }
