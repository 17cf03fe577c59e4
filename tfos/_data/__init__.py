"""The data layer, below the public ``tfos.data``, ``tfos.dfutil`` and ``tfos.pipeline``: TFRecord framing
(``tfrecord``), the tf.train.Example wire codec (``example``), Arrow columns <-> Examples (``columns``), the Spark
TFRecord data source (``source``) and the Spark ML pipeline's scoring (``pipeline_score``). No TensorFlow import."""
