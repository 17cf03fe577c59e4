"""Multi-worker training in the shape of TensorFlow's multi-worker Keras tutorial (written for tfos's tests).

Every worker runs ``main()`` with ``TF_CONFIG`` describing the cluster (tfos sets it, together with
``TF_USE_LEGACY_KERAS=1`` so that ``tf.keras`` is tf-keras). To try it alone, in one process::

    TF_USE_LEGACY_KERAS=1 TF_CONFIG='{"cluster": {"worker": ["localhost:12345"]},
        "task": {"type": "worker", "index": 0}}' python main.py
"""

import json
import os

import tensorflow as tf

import mnist_setup

PER_WORKER_BATCH_SIZE = 64


def main():
    tf_config = json.loads(os.environ["TF_CONFIG"])
    num_workers = len(tf_config["cluster"]["worker"])

    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    global_batch_size = PER_WORKER_BATCH_SIZE * num_workers
    multi_worker_dataset = mnist_setup.mnist_dataset(global_batch_size)

    with strategy.scope():
        # Building the model inside the scope creates mirrored variables, kept in sync across the workers.
        multi_worker_model = mnist_setup.build_and_compile_cnn_model()

    multi_worker_model.fit(multi_worker_dataset, epochs=2, steps_per_epoch=5)


if __name__ == "__main__":
    main()
