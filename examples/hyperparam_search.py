"""Parallel hyperparameter search: every trial is an independent TF instance on a Spark executor (TFParallel).

The driver builds the trials (a full grid, or ``--num_trials`` random draws), then
``TFParallel.run(sc, trial_fn, trials, len(trials), use_barrier=False)`` runs trial ``i`` as instance ``i``:
without the barrier, trials queue for free task slots, so 12 trials run on 2 executors 2 at a time. Each trial
trains a small Keras network on scikit-learn's bundled handwritten digits (no download) and returns its
validation metrics; the driver prints them as a table, best first.

Run it from the repository's root on a throwaway two-worker standalone cluster::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python SPARK_LOCAL_IP=127.0.0.1
    .venv/bin/python -m tfos.standalone run --workers 2 --cores 1 --memory 2g -- \\
        .venv/bin/spark-submit --master {MASTER} --conf spark.cores.max=2 --conf spark.task.cpus=1 \\
        --conf spark.driver.host=127.0.0.1 \\
        examples/hyperparam_search.py --search random --num_trials 6 --epochs 10

It prints a table of the 6 trials, best validation accuracy first, then ``Best trial: ...``.
"""

import argparse
import itertools
import random

from pyspark.sql import SparkSession

from tfos import TFParallel

GRID = {
    "learning_rate": [0.001, 0.01],
    "hidden_units": [16, 64],
    "dropout": [0.0, 0.3],
}
RANDOM_SPACE = {
    "learning_rate": lambda rng: 10 ** rng.uniform(-3.5, -1.5),
    "hidden_units": lambda rng: rng.choice([8, 16, 32, 64, 128]),
    "dropout": lambda rng: round(rng.uniform(0.0, 0.5), 2),
}


def trial_fn(trials, ctx):
    """One trial, in its own Python process: trains with ``trials[ctx.worker_num]`` and returns its metrics."""
    import time

    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    params = trials[ctx.worker_num]
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    x_train, x_val, y_train, y_val = train_test_split(x, digits.target, test_size=0.25, random_state=0,
                                                      stratify=digits.target)
    tf.keras.utils.set_random_seed(params["seed"])
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(64,)),
        tf.keras.layers.Dense(params["hidden_units"], activation="relu"),
        tf.keras.layers.Dropout(params["dropout"]),
        tf.keras.layers.Dense(10),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(params["learning_rate"]), metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.time()
    history = model.fit(x_train, y_train, epochs=params["epochs"], batch_size=32, verbose=0,
                        validation_data=(x_val, y_val))
    return {**params, "trial": ctx.worker_num, "val_accuracy": float(history.history["val_accuracy"][-1]),
            "val_loss": float(history.history["val_loss"][-1]), "seconds": round(time.time() - start, 1)}


def make_trials(search, num_trials, epochs, seed):
    """The grid (every combination of GRID) or ``num_trials`` random draws from RANDOM_SPACE."""
    if search == "grid":
        combos = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    else:
        rng = random.Random(seed)
        combos = [{name: draw(rng) for name, draw in RANDOM_SPACE.items()} for _ in range(num_trials)]
    return [{**combo, "epochs": epochs, "seed": seed + i} for i, combo in enumerate(combos)]


def format_table(results):
    """The trials' metrics, best validation accuracy first, as a fixed-width text table."""
    columns = ["rank", "trial", "val_accuracy", "val_loss", "learning_rate", "hidden_units", "dropout", "seconds"]
    ranked = sorted(results, key=lambda r: (-r["val_accuracy"], r["val_loss"]))
    lines = ["  ".join(f"{c:>13}" for c in columns)]
    for rank, r in enumerate(ranked, 1):
        cells = [rank, r["trial"], f"{r['val_accuracy']:.4f}", f"{r['val_loss']:.4f}", f"{r['learning_rate']:.5f}",
                 r["hidden_units"], r["dropout"], r["seconds"]]
        lines.append("  ".join(f"{str(c):>13}" for c in cells))
    return "\n".join(lines), ranked


def main(argv=None):
    """Runs the search; returns the trials' metrics, best first."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search", choices=["grid", "random"], default="grid")
    parser.add_argument("--num_trials", type=int, default=8, help="trials of a random search")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    trials = make_trials(args.search, args.num_trials, args.epochs, args.seed)
    sc = SparkSession.builder.appName("hyperparam_search").getOrCreate().sparkContext
    print(f"Running {len(trials)} {args.search}-search trials as TFParallel instances")
    results = TFParallel.run(sc, trial_fn, trials, len(trials), use_barrier=False)
    table, ranked = format_table(results)
    print(table)
    best = ranked[0]
    print(f"Best trial: {best['trial']} (learning_rate={best['learning_rate']:.5f}, hidden_units="
          f"{best['hidden_units']}, dropout={best['dropout']}): val_accuracy {best['val_accuracy']:.4f}")
    return ranked


if __name__ == "__main__":
    main()
    SparkSession.builder.getOrCreate().stop()
