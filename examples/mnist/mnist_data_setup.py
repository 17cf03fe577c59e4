"""Writes MNIST-style digits as sharded TFRecord and CSV files for the tfos MNIST examples.

Where the images come from, in order of preference:

1. ``--mnist-npz PATH``: a local ``mnist.npz`` in the Keras layout (x_train, y_train, x_test, y_test).
2. ``tf.keras.datasets.mnist.load_data()``: the real MNIST (cached in ~/.keras/datasets, else downloaded).
3. scikit-learn's bundled ``load_digits()``: 1,797 real handwritten 8x8 digits, upscaled to 28x28 so they
   look like MNIST (a 20x20 digit centred in a 28x28 frame, pixel values 0..255). Needs no network.

Output layout (N = --num-shards)::

    OUTPUT/tfr/{train,test}/part-0000N.tfrecord   tf.train.Example: image (784 x int64), label (int64)
    OUTPUT/csv/{train,test}/part-0000N.csv        label,p0,...,p783 (no header)
    OUTPUT/SOURCE.txt                             which source was used, and the row counts

Usage::

    python examples/mnist/mnist_data_setup.py --output data/mnist
"""

import argparse
import os
import socket
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras = tf-keras, like the training scripts

import numpy as np

DOWNLOAD_TIMEOUT_SECS = 10


def load_npz(path):
    """Reads a Keras-format mnist.npz from a local path."""
    with np.load(path) as data:
        return data["x_train"], data["y_train"], data["x_test"], data["y_test"]


def load_keras_mnist():
    """The real MNIST via Keras; fails fast (instead of hanging) when there is no network."""
    import tensorflow as tf

    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECS)
    try:
        (x_train, y_train), (x_test, y_test) = tf.keras.datasets.mnist.load_data()
    finally:
        socket.setdefaulttimeout(old_timeout)
    return x_train, y_train, x_test, y_test


def load_sklearn_digits(test_fraction=0.2, seed=42):
    """scikit-learn's 8x8 digits, scaled up to MNIST's 28x28 uint8 format and split into train/test."""
    from scipy import ndimage
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    small = digits.images.astype(np.float32) / 16.0  # (n, 8, 8), values 0..1
    # Bilinear 8x8 -> 20x20, then a 4-pixel border: MNIST digits sit in a 20x20 box inside 28x28.
    big = ndimage.zoom(small, (1, 2.5, 2.5), order=1, grid_mode=True, mode="nearest")
    big = np.pad(big, ((0, 0), (4, 4), (4, 4)))
    images = np.clip(np.rint(big * 255.0), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels)
    return x_train, y_train, x_test, y_test


def load_data(npz_path=None):
    """Returns (source, description, x_train, y_train, x_test, y_test) from the first source that works."""
    if npz_path:
        return ("mnist-npz", f"MNIST from {os.path.abspath(npz_path)}") + load_npz(npz_path)
    try:
        return ("keras-mnist", "MNIST from tf.keras.datasets.mnist.load_data()") + load_keras_mnist()
    except Exception as e:  # no network, proxy errors, timeouts, a corrupt cache...
        print(f"Could not load MNIST through Keras ({type(e).__name__}: {e}); "
              "falling back to scikit-learn's digits.", file=sys.stderr)
    return ("sklearn-digits",
            "scikit-learn load_digits(), 8x8 upscaled to 28x28, 80/20 split (seed 42)") + load_sklearn_digits()


def check_arrays(x, y, split):
    """Validates shapes and returns (uint8 images flattened to 784, int64 labels)."""
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
        raise ValueError(f"{split}: expected images of shape (n, 28, 28) and n labels, got {x.shape} and {y.shape}")
    return np.clip(x, 0, 255).astype(np.uint8).reshape(len(x), 784), y.astype(np.int64)


def write_tfrecords(directory, images, labels, num_shards):
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    shards = np.array_split(np.arange(len(labels)), num_shards)
    for shard, rows in enumerate(shards):
        path = os.path.join(directory, f"part-{shard:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for image, label in zip(images[rows].tolist(), labels[rows].tolist()):  # plain ints: faster
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image": tf.train.Feature(int64_list=tf.train.Int64List(value=image)),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                }))
                writer.write(example.SerializeToString())


def write_csv(directory, images, labels, num_shards):
    os.makedirs(directory, exist_ok=True)
    pixel_text = np.array([str(v) for v in range(256)], dtype=object)  # lookup table: ~10x faster than savetxt
    for shard, rows in enumerate(np.array_split(np.arange(len(labels)), num_shards)):
        with open(os.path.join(directory, f"part-{shard:05d}.csv"), "w") as f:
            for label, pixels in zip(labels[rows].tolist(), pixel_text[images[rows]].tolist()):
                f.write(f"{label},{','.join(pixels)}\n")


def clear_parts(directory):
    """Removes part files from an earlier run, so a smaller --num-shards leaves no stale shards behind."""
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith("part-"):
                os.remove(os.path.join(directory, name))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="data/mnist",
                        help="output directory: local, or s3://... / hdfs://... (written locally, then uploaded)")
    parser.add_argument("--mnist-npz", default=None, help="local mnist.npz (Keras layout) to use instead of downloading")
    parser.add_argument("--num-shards", type=int, default=4, help="files per split (train and test)")
    parser.add_argument("--formats", default="tfrecord,csv", help="comma-separated: tfrecord, csv")
    args = parser.parse_args(argv)

    formats = {f.strip() for f in args.formats.split(",") if f.strip()}
    if not formats or formats - {"tfrecord", "csv"}:
        parser.error(f"--formats takes tfrecord and/or csv, got {args.formats!r}")
    if args.num_shards < 1:
        parser.error("--num-shards must be at least 1")

    if "://" in args.output and not args.output.startswith("file://"):  # s3://, hdfs://: write here, then upload
        from tfos import fs

        remote = args.output
        with fs.uploaded_dir(remote) as local:
            write_all(args, formats, local)
        print(f"Uploaded to {remote}")
        return
    write_all(args, formats, args.output)


def write_all(args, formats, output):
    start = time.time()
    source, description, x_train, y_train, x_test, y_test = load_data(args.mnist_npz)
    splits = {"train": check_arrays(x_train, y_train, "train"), "test": check_arrays(x_test, y_test, "test")}
    print(f"Source: {source} ({description})")
    print(f"Rows: train={len(splits['train'][1])} test={len(splits['test'][1])}")

    for split, (images, labels) in splits.items():
        num_shards = min(args.num_shards, len(labels))
        if "tfrecord" in formats:
            directory = os.path.join(output, "tfr", split)
            clear_parts(directory)
            write_tfrecords(directory, images, labels, num_shards)
            print(f"Wrote {len(labels)} {split} examples to {directory}/ ({num_shards} TFRecord files)")
        if "csv" in formats:
            directory = os.path.join(output, "csv", split)
            clear_parts(directory)
            write_csv(directory, images, labels, num_shards)
            print(f"Wrote {len(labels)} {split} rows to {directory}/ ({num_shards} CSV files)")

    with open(os.path.join(output, "SOURCE.txt"), "w") as f:
        f.write(f"source={source}\ndescription={description}\n"
                f"train_rows={len(splits['train'][1])}\ntest_rows={len(splits['test'][1])}\n")
    print(f"Done in {time.time() - start:.1f}s; see {os.path.join(output, 'SOURCE.txt')}")


if __name__ == "__main__":
    main()
