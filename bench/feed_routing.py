"""The feed's new routing against the old one, in one session: does dealing every partition to every node cost
rows/s?

The old routing (each node a contiguous range of the epoch, a partition's rows sent one node after the other)
deadlocks when partitions outnumber the task slots and outgrow a node's queue; on the shapes below (4 or 2
partitions, as many task slots as partitions per round) it does not, so both can be timed. The baseline is the
tfos of ``--baseline`` (default: the commit before the new routing) checked out with ``git worktree`` and put
first on ``PYTHONPATH`` for the driver and, through ``spark.executorEnv.PYTHONPATH``, for the executors and their
TF processes. The new routing runs from a worktree of ``--new`` (default: HEAD) in the same way. Each round runs
every variant, the order rotating from round to round:

- ``bench/feed_throughput.py --tfos-only``: a cached DataFrame of 60,000 rows x 784 float32 in 4 partitions fed
  twice into 2 nodes reading ``feed.dataset()`` on ``local-cluster[2,1,2048]``: the nodes' receive rate and the
  whole ``train()`` call's rate.
- the Spark scenario of ``bench/side_by_side.py`` (``driver.py --tool tfos --scenario spark``): the same rows into
  a Keras CNN under MultiWorkerMirroredStrategy on a 2-worker standalone cluster, 2 epochs: samples/s into
  ``model.fit``.

Run: ``.venv/bin/python bench/feed_routing.py [--rounds 3] [--baseline REV]``; writes
``bench/results/feed_routing.md`` and its raw runs ``bench/results/feed_routing_raw.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import side_by_side  # noqa: E402 - bench/side_by_side.py: its data and driver

WORK = side_by_side.WORK
RESULTS = os.path.join(HERE, "results")


def baseline_tree(rev: str) -> str:
    """A worktree of ``rev`` (made once); returns its path."""
    path = os.path.join(WORK, f"tree-{rev.replace('/', '_').replace('~', '-')}")
    if not os.path.exists(os.path.join(path, "tfos")):
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", path, rev], check=True, timeout=120)
    return path


# Variants besides "new" and "old": the new routing with other settings (label: environment).
VARIANTS = {
    # the node buffer the old routing had for DataFrames: 16 messages of up to 10,000 rows (Arrow batches)
    "new_q160": {"TFOS_FEED_QUEUE_CHUNKS": "160"},
}


def run(cmd: list[str], pythonpath: str, timeout: float, log: str, extra: dict | None = None) -> None:
    env = dict(os.environ, PYTHONPATH=pythonpath, TFOS_BENCH_EXECUTOR_PYTHONPATH=pythonpath,
               TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", **(extra or {}))
    env.pop("PYSPARK_PYTHON", None)
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)


def throughput_run(variant: str, tree: str, out: str) -> dict:
    result = os.path.join(WORK, "routing_throughput.json")
    if os.path.exists(result):
        os.remove(result)
    run([sys.executable, os.path.join(HERE, "feed_throughput.py"), "--tfos-only", result], tree, 900,
        os.path.join(out, f"{time.strftime('%H%M%S')}-throughput-{variant}.log"), VARIANTS.get(variant))
    with open(result) as f:
        return json.load(f)


def spark_run(variant: str, tree: str, master: str, data: str, out: str) -> dict:
    result = os.path.join(WORK, "routing_spark.json")
    if os.path.exists(result):
        os.remove(result)
    run([sys.executable, side_by_side.DRIVER, "--tool", "tfos", "--scenario", "spark", "--master", master,
         "--data", data, "--epochs", "2", "--result", result], tree, 1500,
        os.path.join(out, f"{time.strftime('%H%M%S')}-spark-{variant}.log"), VARIANTS.get(variant))
    with open(result) as f:
        return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="f80db4e~1", help="the git revision whose routing is the baseline")
    parser.add_argument("--new", default="HEAD", help="the git revision measured as new (checked out like the "
                        "baseline, so that edits to the working tree during the run do not change it)")
    parser.add_argument("--variants", default="new,old", help=f"comma-separated: new, old, {', '.join(VARIANTS)}")
    parser.add_argument("--kinds", default="throughput,spark", help="comma-separated: throughput, spark")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the raw runs")
    args = parser.parse_args()
    raw_path = os.path.join(RESULTS, "feed_routing_raw.jsonl")
    if args.report_only:
        with open(raw_path) as f:
            write_report([json.loads(line) for line in f if line.strip()], args)
        return
    os.makedirs(WORK, exist_ok=True)
    logs = os.path.join(WORK, "logs")
    os.makedirs(logs, exist_ok=True)
    variants = args.variants.split(",")
    new_rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.new], capture_output=True, text=True,
                             check=True).stdout.strip()
    trees = {v: baseline_tree(new_rev) for v in variants if v != "old"}
    if "old" in variants:
        trees["old"] = baseline_tree(args.baseline)
    _tfr, data = side_by_side.make_data()
    from tfos.standalone import StandaloneCluster

    with open(raw_path) if os.path.exists(raw_path) else open(os.devnull) as f:
        runs: list[dict] = [json.loads(line) for line in f if line.strip()]  # earlier runs stay in the report
    with StandaloneCluster(workers=2, cores_per_worker=1, memory_per_worker="2g",
                           work_dir=os.path.join(WORK, "routing-standalone")) as cluster:
        for r in range(args.rounds):
            shift = r % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                for kind in args.kinds.split(","):
                    try:
                        res = (throughput_run(variant, trees[variant], logs) if kind == "throughput" else
                               spark_run(variant, trees[variant], cluster.master_url, data, logs))
                    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
                        res = {"error": f"{type(exc).__name__}: {exc}"}
                    res.update(variant=variant, kind=kind, round=r, date=time.strftime("%Y-%m-%d %H:%M:%S"),
                               load1=os.getloadavg()[0])
                    print(json.dumps(res), flush=True)
                    runs.append(res)
                    with open(raw_path, "a") as f:
                        f.write(json.dumps(res) + "\n")
    write_report(runs, args)


READING = [
    "- **Training is not slower.** The figure that matters for training, samples/s into `model.fit` under "
    "MultiWorkerMirroredStrategy (the side-by-side Spark scenario), and the time from `run()` to the end of every "
    "node's `fit`, are the same for both routings within this machine's noise.",
    "- **The feed alone is slower**, measured with a reader that does nothing but take rows "
    "(`feed_throughput.py`): the whole `train()` call moves fewer rows/s. That misses the issue's 95% goal for "
    "this figure. Two things differ, and neither is a deadlock-freedom cost: the new feed is really bounded (a "
    "node holds `feed_queue_chunks` x `feed_chunk_rows` = 16,384 rows; the old one held 16 Arrow batches of up "
    "to 10,000 rows, so a node could buffer 160,000 rows and `train()` returned once everything was buffered), "
    "and each task now feeds both nodes at once. Raising the buffer to the old size (`new_q160`, in the runs of "
    "commit 75b19ec) did not recover the gap; nor did 10,000-row messages. Where the remaining time goes was "
    "not found this session (see the issue's closing note).",
    "- **The first row overstates the old routing.** It sums each node's rate over that node's own receiving "
    "window. The old routing fed node 0 first and node 1 after it, so each node received in its own half of the "
    "job and the sum counts the same wall time twice. The new routing feeds both nodes at once, so its sum is "
    "the real aggregate rate.",
]

FIGURES = [("throughput", "tfos_nodes", "rows/s received by the 2 nodes (feed.dataset)"),
           ("throughput", "tfos_end_to_end", "rows/s of the whole train() call"),
           ("spark", "samples_per_s", "samples/s into model.fit (side_by_side spark)"),
           ("spark", "all_done_s", "seconds from run() to every node's fit done (side_by_side spark)")]


def _values(runs, variant, kind, key):
    return [r[key] for r in runs if r["variant"] == variant and r["kind"] == kind and r.get(key)]


def write_report(runs: list[dict], args) -> None:
    lines = [
        "# The feed's routing: new (every partition to every node) against old (contiguous ranges)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; date "
        f"{time.strftime('%Y-%m-%d')}; rounds of every variant in turn, baseline `{args.baseline}`. Produced by "
        "`bench/feed_routing.py` (what each figure is: its docstring).",
        "",
        "| figure | old (median) | new (median) | new / old | new runs | old runs |",
        "|---|---|---|---|---|---|",
    ]
    for variant in ["new", *VARIANTS]:
        for kind, key, label in FIGURES:
            new, old = _values(runs, variant, kind, key), _values(runs, "old", kind, key)
            if not new or not old:
                continue
            mn, mo = statistics.median(new), statistics.median(old)
            lines.append(f"| {label}{'' if variant == 'new' else f' ({variant})'} | {mo:,.0f} | {mn:,.0f} | "
                         f"{mn / mo:.1%} | {', '.join(f'{v:,.0f}' for v in new)} | "
                         f"{', '.join(f'{v:,.0f}' for v in old)} |")
    errors = [r for r in runs if r.get("error")]
    if errors:
        lines += ["", "Runs that failed:", ""] + [f"- round {r['round']} {r['variant']} {r['kind']}: "
                                                  f"{r['error'][:300]}" for r in errors]
    lines += ["", "## Reading", "", *READING, "", "Raw runs: `bench/results/feed_routing_raw.jsonl`."]
    with open(os.path.join(RESULTS, "feed_routing.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
