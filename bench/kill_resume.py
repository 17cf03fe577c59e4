"""Kill and resume: how long a TF cluster with ``max_restarts`` takes to train again after a worker is SIGKILLed,
and how much training is lost.

Each run starts a 2-node MultiWorkerMirroredStrategy Keras job (``BackupAndRestore(ctx.backup_dir)``, epochs of
``--steps`` steps) on a ``local-cluster[2,1,1024]`` master with ``max_restarts=1``, SIGKILLs worker 1's TF process
in the epoch after epoch ``--kill-after`` (index) and measures what follows. Two variants (``--variant``):

- ``early``: ``--kill-delay`` seconds (0.5) after worker 1 finished epoch ``--kill-after``, i.e. just after a
  checkpoint (BackupAndRestore saves at each epoch end): the best case for the training lost;
- ``late``: as soon as worker 1 finished step ``ceil(--late-fraction * --steps)`` (90%) of the next epoch, i.e.
  just before the next checkpoint: the worst case, nearly the whole epoch in flight is redone.

Measures:

- resume time: from the SIGKILL to the first finished batch of the restarted attempt; split into detect+teardown+
  relaunch (SIGKILL -> the new TF process of worker 1 exists) and TF start (-> first batch);
- cold start (the baseline, measured in the same run): from ``TFCluster.run`` to the first batch of attempt 0;
- epochs lost: the training redone, in epochs: the part of the epoch in flight at the kill (measured by time
  since the last epoch end) plus any completed epoch not restored (0 when BackupAndRestore works).

Run: ``.venv/bin/python bench/kill_resume.py [--variant early|late] [--runs 3]``; writes the variant's section of
``bench/results/kill_resume.md`` and keeps the other variant's section as it was.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train(args, ctx):
    """The node's main function (pickled by value from __main__): MWMS Keras with BackupAndRestore."""
    import json as _json
    import os as _os
    import time as _time

    import numpy as np
    import tensorflow as tf

    out = args["out"]
    with open(_os.path.join(out, f"pid{ctx.worker_num}_{ctx.attempt}"), "w") as f:
        f.write(str(_os.getpid()))

    def log(name, **fields):
        with open(_os.path.join(out, name), "a") as f:
            f.write(_json.dumps({"node": ctx.worker_num, "attempt": ctx.attempt, "time": _time.time(), **fields})
                    + "\n")

    class Marks(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.begun = epoch, False

        def on_train_batch_end(self, batch, logs=None):
            if not self.begun:
                self.begun = True
                log("begin.jsonl", epoch=self.epoch)
            if batch + 1 == args.get("mark_step"):  # the late variant kills worker 1 when it sees this
                log("marks.jsonl", epoch=self.epoch, step=batch + 1)
            _time.sleep(args["batch_sleep"])

        def on_epoch_end(self, epoch, logs=None):
            log("epochs.jsonl", epoch=epoch)

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = np.random.default_rng(ctx.worker_num)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int64")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16 * ctx.num_workers)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds, epochs=args["epochs"], steps_per_epoch=args["steps"], verbose=0,
              callbacks=[tf.keras.callbacks.BackupAndRestore(ctx.backup_dir), Marks()])


def _jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"waited {timeout:.0f}s for {what}")


def one_run(sc, args) -> dict:
    from tfos import TFCluster

    out = tempfile.mkdtemp(prefix="tfos-kill-resume-")
    params = {"out": out, "epochs": args.epochs, "steps": args.steps, "batch_sleep": args.batch_sleep,
              "mark_step": late_step(args) if args.variant == "late" else None}
    started = time.time()
    cluster = TFCluster.run(sc, train, params, 2, max_restarts=1, stop_grace_secs=2, log_dir=os.path.join(out, "logs"),
                            progress="off")
    epochs = os.path.join(out, "epochs.jsonl")
    try:
        if args.variant == "late":  # kill just before the next checkpoint
            marks = os.path.join(out, "marks.jsonl")
            _wait(lambda: any(m["node"] == 1 and m["epoch"] == args.kill_after + 1 for m in _jsonl(marks)), 300,
                  f"worker 1 to reach step {late_step(args)} of epoch {args.kill_after + 1}")
        else:
            _wait(lambda: any(e["node"] == 1 and e["epoch"] >= args.kill_after for e in _jsonl(epochs)), 300,
                  f"worker 1 to finish epoch {args.kill_after}")
            time.sleep(args.kill_delay)  # kill early in the next epoch
        with open(os.path.join(out, "pid1_0")) as f:
            pid = int(f.read())
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: os.path.exists(os.path.join(out, "pid1_1")), 300, "the restarted worker 1")
        relaunched = os.path.getmtime(os.path.join(out, "pid1_1"))
    finally:
        cluster.shutdown(timeout=600)
    begins = _jsonl(os.path.join(out, "begin.jsonl"))
    ends = _jsonl(epochs)
    first0 = min(b["time"] for b in begins if b["attempt"] == 0)
    first1 = min((b for b in begins if b["attempt"] == 1), key=lambda b: b["time"])
    done = [e for e in ends if e["attempt"] == 0 and e["time"] <= killed]
    last_done = max(e["epoch"] for e in done)
    last_end = max(e["time"] for e in done)
    chief_ends = sorted(e["time"] for e in done if e["node"] == 0)
    epoch_secs = statistics.median(b - a for a, b in zip(chief_ends, chief_ends[1:])) if len(chief_ends) > 1 else 0
    partial = min((killed - last_end) / epoch_secs, 1.0) if epoch_secs else 0.0
    redone = last_done + 1 - first1["epoch"]
    assert cluster.attempt == 1, cluster.restarts
    result = {"cold_start": first0 - started, "resume": first1["time"] - killed, "relaunch": relaunched - killed,
              "tf_start": first1["time"] - relaunched, "epochs_lost": redone + partial, "completed_redone": redone,
              "resumed_at_epoch": first1["epoch"], "epoch_secs": epoch_secs}
    if args.variant == "late":  # where the kill landed: epoch index in flight, and the part of it done
        result.update(killed_in_epoch=last_done + 1, in_flight=partial)
    return result


def late_step(args) -> int:
    """The step (1-based) of an epoch after which the late variant kills worker 1."""
    return min(args.steps, max(1, math.ceil(args.late_fraction * args.steps)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-sleep", type=float, default=0.05)
    parser.add_argument("--variant", choices=("early", "late"), default="early",
                        help="early: --kill-delay s after a checkpoint; late: at --late-fraction of the next epoch")
    parser.add_argument("--kill-after", type=int, default=1, help="kill in the epoch after this one (index)")
    parser.add_argument("--kill-delay", type=float, default=0.5, help="early variant: seconds into the next epoch")
    parser.add_argument("--late-fraction", type=float, default=0.9,
                        help="late variant: kill once worker 1 finished this fraction of the epoch's steps")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "kill_resume.md"))
    args = parser.parse_args()

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local-cluster[2,1,1024]").appName("tfos-bench-kill-resume")
             .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false").getOrCreate())
    runs = []
    try:
        for i in range(args.runs):
            runs.append(one_run(spark.sparkContext, args))
            print(f"run {i + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in runs[-1].items()), flush=True)
    finally:
        spark.stop()
    write_report(args, runs)


TITLE = "# Kill and resume (max_restarts)"
INTRO = ("Produced by `bench/kill_resume.py --variant early|late`. Each section comes from one invocation (its date "
         "and raw runs are kept when the other variant is run again). Sections of different dates measured "
         "different tfos code under different machine load: compare their times with care; epochs lost depends "
         "on where the kill lands, not on speed.")


def _section_markers(variant: str) -> tuple[str, str]:
    return f"<!-- variant: {variant} -->", f"<!-- end variant: {variant} -->"


def _kill_point(args) -> str:
    if args.variant == "late":
        return (f"SIGKILLed as soon as it finished step {late_step(args)} of {args.steps} "
                f"({args.late_fraction:.0%}) of epoch index {args.kill_after + 1}, just before that epoch's checkpoint "
                "(worst case for training lost)")
    return (f"SIGKILLed {args.kill_delay}s after it finished epoch index {args.kill_after}, just after a checkpoint "
            "(best case for training lost)")


def section(args, runs: list[dict]) -> list[str]:
    """The variant's section of the report: setup, the table, goals, raw runs."""
    def stats(key):
        values = [r[key] for r in runs]
        return statistics.median(values), min(values), max(values)

    begin, end = _section_markers(args.variant)
    lines = [
        begin,
        f"## {'Late' if args.variant == 'late' else 'Early'} kill (`--variant {args.variant}`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; date {time.strftime('%Y-%m-%d')}. 2 TF nodes (MultiWorkerMirroredStrategy, "
        f"tf-keras, BackupAndRestore(ctx.backup_dir)) on local-cluster[2,1,1024]; {args.epochs} epochs of "
        f"{args.steps} steps; worker 1's TF process {_kill_point(args)}; max_restarts=1, stop_grace_secs=2, "
        f"heartbeat 1 s. {len(runs)} runs.",
        "",
        "| measure | median | min | max |",
        "|---|---|---|---|",
    ]
    rows = [
        ("resume", "SIGKILL -> training running again (first batch of the restarted attempt)", "s"),
        ("relaunch", "  of which: failure seen, attempt torn down, new TF process started", "s"),
        ("tf_start", "  of which: new TF process -> first batch (TF import, MWMS setup, restore)", "s"),
        ("cold_start", "baseline: TFCluster.run -> first batch of attempt 0 (same run)", "s"),
        ("epochs_lost", "epochs lost (in-flight part + completed epochs redone)", "epochs"),
        ("completed_redone", "completed epochs redone (0: resumed from the last checkpoint)", "epochs"),
    ]
    if args.variant == "late":
        rows.append(("in_flight", "part of the epoch in flight done at the kill (by time)", "epochs"))
    for key, label, unit in rows:
        med, lo, hi = stats(key)
        lines.append(f"| {label} | {med:.2f} {unit} | {lo:.2f} | {hi:.2f} |")
    med_resume, med_cold = stats("resume")[0], stats("cold_start")[0]
    lines += [
        "",
        f"Resume vs cold start: {med_resume / med_cold:.2f}x (median). Goals: <= 1 epoch lost "
        f"({'met' if stats('epochs_lost')[2] <= 1 else 'NOT met'} in every run), < 30 s to resume "
        f"({'met' if stats('resume')[2] < 30 else 'NOT met'} in every run).",
        "",
        "Raw runs:",
        "",
    ]
    lines += [f"- run {i + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in r.items()) for i, r in enumerate(runs)]
    return lines + [end]


def merge_report(old: str, variant: str, new_section: list[str]) -> str:
    """The report with ``variant``'s section replaced (or added), the other sections unchanged."""
    begin, end = _section_markers(variant)
    sections = {}
    for other in ("early", "late"):
        b, e = _section_markers(other)
        if b in old and e in old:
            sections[other] = old[old.index(b):old.index(e) + len(e)]
    sections[variant] = "\n".join(new_section)
    body = [sections[v] for v in ("early", "late") if v in sections]
    return "\n\n".join([TITLE, INTRO, *body]) + "\n"


def write_report(args, runs: list[dict]) -> None:
    lines = section(args, runs)
    old = open(args.out).read() if os.path.exists(args.out) else ""
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(merge_report(old, args.variant, lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
