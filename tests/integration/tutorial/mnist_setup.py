"""Data and model helpers in the shape of TensorFlow's multi-worker Keras tutorial (written for tfos's tests).

The images come from a Keras-format ``mnist.npz`` named by ``$TFOS_TUTORIAL_NPZ`` when set, otherwise from
scikit-learn's bundled 8x8 digits blown up to MNIST's 28x28, so no download is needed.
"""

import os

import numpy as np
import tensorflow as tf


def _training_images():
    """Returns (uint8 images of shape (n, 28, 28), integer labels)."""
    npz = os.environ.get("TFOS_TUTORIAL_NPZ")
    if npz:
        with np.load(npz) as data:
            return data["x_train"], data["y_train"]
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Each 8x8 pixel (0..16) becomes a 3x3 block (24x24), centred in 28x28 with a 2-pixel margin.
    blocks = np.kron(digits.images, np.ones((1, 3, 3)))
    framed = np.pad(blocks, ((0, 0), (2, 2), (2, 2)))
    return (framed * (255.0 / 16.0)).round().astype(np.uint8), digits.target


def mnist_dataset(batch_size):
    """An endless, shuffled, batched dataset of (28x28 float32 image in [0, 1], int64 label)."""
    images, labels = _training_images()
    x = images.astype(np.float32) / np.float32(255)
    y = labels.astype(np.int64)
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(y))
            .repeat()
            .batch(batch_size))


def build_and_compile_cnn_model():
    """A small CNN over 28x28 inputs, compiled for integer labels and logits."""
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(28, 28)),
        tf.keras.layers.Reshape(target_shape=(28, 28, 1)),
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(128, activation="relu"),
        tf.keras.layers.Dense(10),
    ])
    model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate=0.001),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
