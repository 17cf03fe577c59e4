"""Where InputMode.TENSORFLOW's time goes: tfos against hand-launched MultiWorkerMirroredStrategy, epoch by epoch,
with the CPU seconds of every process class during the measured epoch.

Each round runs, in an order that rotates from round to round, the side-by-side benchmark's training job
(``bench/side_by_side/driver.py``: a Keras CNN on 60,000 TFRecord rows, 2 nodes, 3 epochs of ``--steps`` steps)

- ``hand``: two processes started by hand with ``TF_CONFIG`` (the floor for any launcher);
- ``tfos``: ``TFCluster.run`` with its defaults (``node_threads=task``: one thread per node here, the task's core);
- ``tfos_tf``: ``TFCluster.run`` with ``TFOS_NODE_THREADS=tf`` (TensorFlow's default threads, as ``hand`` has).

The measured epoch is the second one (the TF processes still run at its end), timed by node 0's Keras callback. While it runs, the CPU time of every
process of the run is read with psutil at its first and last moment and summed by class: the TF processes, the
executors' Python workers (tfos's in-task node supervisors are among them), the executor JVMs, the standalone
Master and Worker daemons, the driver (Python and its JVM). One standalone cluster (2 workers x 1 core) serves
every run. Figures: per-round ratios against the same round's ``hand`` run, and their median over the rounds.

Run: ``.venv/bin/python bench/tf_overhead.py [--rounds 9] [--steps 200]``; results go to
``bench/results/tf_overhead.md`` and the raw runs to ``bench/results/tf_overhead_raw.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import side_by_side  # noqa: E402  (make_data, DRIVER)

RESULTS = os.path.join(HERE, "results")
CLASSES = ("tf", "python_workers", "executor_jvms", "spark_daemons", "driver")
TOOLS = ("hand", "tfos", "tfos_tf")


def classify(cmd: str) -> str | None:
    """The class of one process of a run, from its command line (None: not one of ours)."""
    if "tfos._node.child" in cmd or "--hand-worker" in cmd:
        return "tf"
    if "CoarseGrainedExecutorBackend" in cmd:
        return "executor_jvms"
    if "deploy.master.Master" in cmd or "deploy.worker.Worker" in cmd:
        return "spark_daemons"
    if "pyspark.daemon" in cmd or "pyspark/worker" in cmd or "tfos._node.detached" in cmd:
        return "python_workers"
    if "side_by_side/driver.py" in cmd or "SparkSubmit" in cmd:
        return "driver"
    return None


def snapshot(roots: list[int]) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process under ``roots`` (and the roots), with its class.

    One pass over the process table, so that a process exiting meanwhile loses only itself, never its subtree.
    """
    table = {}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "cpu_times"]):
        info = proc.info
        if info["cpu_times"] is not None:
            table[info["pid"]] = (info["ppid"], " ".join(info["cmdline"] or ()), info["cpu_times"])
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: dict[int, tuple[str, float]] = {}
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        _, cmd, times = table[pid]
        kind = classify(cmd)
        if kind is not None:
            seen[pid] = (kind, times.user + times.system)
        todo.extend(children.get(pid, ()))
    return seen


class EpochSampler(threading.Thread):
    """Watches node 0's events; snapshots CPU times when the measured epoch begins and when it ends."""

    def __init__(self, events: str, roots: list[int], epoch: int = 1) -> None:
        super().__init__(daemon=True)
        self.events, self.roots, self.epoch = events, roots, epoch
        self.begin: dict | None = None
        self.end: dict | None = None
        self.stop = threading.Event()

    def _seen(self, event: str) -> bool:
        try:
            with open(self.events) as f:
                return any(e.get("node") == 0 and e.get("ev") == event and e.get("epoch") == self.epoch
                           for e in map(json.loads, f))
        except (OSError, ValueError):
            return False

    def run(self) -> None:
        while not self.stop.is_set() and self.begin is None:
            if self._seen("epoch_begin"):
                self.begin = snapshot(self.roots)
            time.sleep(0.05)
        while not self.stop.is_set() and self.end is None:
            if self._seen("epoch_end"):
                self.end = snapshot(self.roots)
            time.sleep(0.05)

    def cpu_by_class(self) -> dict[str, float]:
        """CPU seconds per class spent during the epoch, by processes alive at both snapshots."""
        totals = {kind: 0.0 for kind in CLASSES}
        if not self.begin or not self.end:
            return totals
        for pid, (kind, after) in self.end.items():
            if pid in self.begin:
                totals[kind] += after - self.begin[pid][1]
        return totals


def run_once(tool: str, master: str, tfr: str, steps: int, daemons: list[int]) -> dict:
    out = tempfile.mkdtemp(prefix="tf-overhead-")
    result_path = os.path.join(out, "result.json")
    real = "tfos" if tool.startswith("tfos") else "hand"
    cmd = [sys.executable, side_by_side.DRIVER, "--tool", real, "--scenario", "tensorflow", "--master", master,
           "--tfr", tfr, "--rows", str(side_by_side.ROWS), "--epochs", "3", "--steps", str(steps),
           "--result", result_path, "--out", out]
    env = side_by_side._env(real)
    if tool == "tfos_tf":
        env["TFOS_NODE_THREADS"] = "tf"
    log = open(os.path.join(out, "driver.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    sampler = EpochSampler(os.path.join(out, "events.jsonl"), [proc.pid, *daemons])
    sampler.start()
    try:
        proc.wait(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(60)
    sampler.stop.set()
    sampler.join(5)
    res = json.load(open(result_path)) if os.path.exists(result_path) else {"error": f"no result, see {out}"}
    res.update(tool=tool, cpu=sampler.cpu_by_class(), load1=os.getloadavg()[0], date=time.strftime("%F %T"),
               epoch_s=measured_epoch(os.path.join(out, "events.jsonl"), sampler.epoch))
    return res


def measured_epoch(events: str, epoch: int) -> float | None:
    """Node 0's time for ``epoch``, from its Keras callback's events."""
    try:
        with open(events) as f:
            marks = {e["ev"]: e["t"] for e in map(json.loads, f) if e.get("node") == 0 and e.get("epoch") == epoch}
    except OSError:
        return None
    if "epoch_begin" in marks and "epoch_end" in marks:
        return marks["epoch_end"] - marks["epoch_begin"]
    return None


def report(runs: list[dict], steps: int) -> list[str]:
    rounds: dict[str, dict[str, dict]] = {}
    for r in runs:
        rounds.setdefault(r["round"], {})[r["tool"]] = r
    lines = ["# InputMode.TENSORFLOW overhead: tfos against hand-launched MWMS", "",
             f"`bench/tf_overhead.py`: 2 nodes on a standalone cluster of 2 workers x 1 core, a Keras CNN on 60,000 "
             f"TFRecord rows, batch 128, 3 epochs of {steps} steps; the second epoch measured (node 0's Keras "
             "callback). Each round runs the three variants in a rotating order. CPU: seconds of CPU per second of "
             "the epoch (1.0 = one core busy), by process class, psutil.", "",
             "| round | hand epoch s | tfos epoch s | tfos / hand | tfos_tf epoch s | tfos_tf / hand |",
             "|---|---|---|---|---|---|"]
    ratios: dict[str, list[float]] = {"tfos": [], "tfos_tf": []}
    for key, tools in sorted(rounds.items()):
        hand = tools.get("hand", {}).get("epoch_s")
        cells = [key, f"{hand:.2f}" if hand else "-"]
        for tool in ("tfos", "tfos_tf"):
            epoch = tools.get(tool, {}).get("epoch_s")
            if epoch and hand:
                ratios[tool].append(epoch / hand)
            cells += [f"{epoch:.2f}" if epoch else "-", f"{epoch / hand:.1%}" if epoch and hand else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Median over the rounds (each round's ratio against its own hand run):", ""]
    for tool, values in ratios.items():
        if values:
            lines.append(f"- **{tool} / hand: {statistics.median(values):.1%}** (n={len(values)}, "
                         f"range {min(values):.1%}-{max(values):.1%})")
    lines += ["", "CPU during the measured epoch, median over the rounds (cores busy):", "",
              "| variant | " + " | ".join(CLASSES) + " | python workers per node |",
              "|---|" + "---|" * (len(CLASSES) + 1)]
    for tool in TOOLS:
        shares = [{k: v / r["epoch_s"] for k, v in r["cpu"].items()} for r in runs
                  if r["tool"] == tool and r.get("epoch_s")]
        if not shares:
            continue
        med = {k: statistics.median(s[k] for s in shares) for k in CLASSES}
        lines.append(f"| {tool} | " + " | ".join(f"{med[k]:.3f}" for k in CLASSES)
                     + f" | {med['python_workers'] / 2:.1%} of a core |")
    return lines


ANALYSIS = "<!-- analysis: kept when the figures above are rewritten -->"


def write(lines: list[str]) -> None:
    """Writes the figures to tf_overhead.md, keeping the hand-written analysis after :data:`ANALYSIS`."""
    path = os.path.join(RESULTS, "tf_overhead.md")
    kept = ""
    if os.path.exists(path):
        text = open(path).read()
        if ANALYSIS in text:
            kept = text[text.index(ANALYSIS):]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n\n" + (kept or ANALYSIS + "\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tools", default=",".join(TOOLS))
    args = parser.parse_args()
    from tfos.standalone import StandaloneCluster

    tools = args.tools.split(",")
    tfr, _ = side_by_side.make_data()
    raw_path = os.path.join(RESULTS, "tf_overhead_raw.jsonl")
    session = time.strftime("%Y%m%d-%H%M%S")
    runs = []
    with StandaloneCluster(workers=2, cores_per_worker=1, memory_per_worker="1500m") as cluster:
        for index in range(args.rounds):
            shift = index % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                res = run_once(tool, cluster.master_url, tfr, args.steps, cluster.pids)
                res["round"] = f"{session}/{index}"
                runs.append(res)
                print(json.dumps({k: res.get(k) for k in ("round", "tool", "epoch_s", "cpu", "error")}), flush=True)
                with open(raw_path, "a") as f:
                    f.write(json.dumps(res) + "\n")
            write(report(runs, args.steps))
    print("\n".join(report(runs, args.steps)))


if __name__ == "__main__":
    main()
