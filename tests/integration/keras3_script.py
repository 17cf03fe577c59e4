"""An unchanged Keras 3 script (``import keras``) with MultiWorkerMirroredStrategy, run by ``python -m tfos run``."""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 32)).astype("float32")
y = (x.sum(axis=1) > 0).astype("int64")
dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(32)
with strategy.scope():
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
model.fit(dataset, epochs=2, steps_per_epoch=16, verbose=2)
task = json.loads(os.environ["TF_CONFIG"])["task"]
with open(os.path.join(sys.argv[1], f"script_{task['type']}{task['index']}.json"), "w") as f:
    json.dump({"weights": float(sum(np.sum(w) for w in model.get_weights())), "keras": keras.__version__}, f)
