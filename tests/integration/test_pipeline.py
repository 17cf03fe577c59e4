"""tfos.pipeline on a real Spark cluster: TFEstimator.fit on a 2-node TF cluster, TFModel.transform against the
SavedModel called directly (loaded once per executor Python worker), inside a pyspark.ml Pipeline, saved and
loaded."""

import json

import cloudpickle
import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel

import nodefns_more
from tfos.errors import ConfigError
from tfos.pipeline import TFEstimator, TFModel

cloudpickle.register_pickle_by_value(nodefns_more)

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def _direct(export_dir, x):
    """The SavedModel's serving signature called in this process: what transform() must reproduce."""
    import tensorflow as tf

    fn = tf.saved_model.load(export_dir).signatures["serving_default"]
    return fn(features=tf.constant(x))["logits"].numpy()


def _assert_loaded_once_per_worker(spark, export_dir, scored):
    """Each executor's reused (Arrow) Python worker loaded the SavedModel once for all the partitions it scored."""
    def probe(batches):  # a closure, so that Spark pickles it by value
        import os

        import pyarrow as pa

        from tfos._data import pipeline_score as _pipeline_score

        for _ in batches:
            pass
        yield pa.RecordBatch.from_pydict({"pid": [os.getpid()], "loads": [_pipeline_score.load_count(export_dir)],
                                          "scored": [_pipeline_score.partitions_scored(export_dir)]})

    assert spark.sparkContext.getConf().get("spark.python.worker.reuse", "true") == "true"
    # 8 probe tasks on 2 one-core executors: every executor runs some, in the same kind of worker as the scoring.
    rows = spark.range(0, 8, 1, 8).mapInArrow(probe, "pid long, loads long, scored long").collect()
    workers = {r.pid: (r.loads, r.scored) for r in rows}
    assert all(loads == (1 if done else 0) for loads, done in workers.values()), workers
    assert sum(done for _, done in workers.values()) == scored, workers  # the probe saw every scoring worker
    assert max(done for _, done in workers.values()) > 1, workers  # and some worker scored several partitions


def test_fit_transform_in_a_pipeline_then_save_and_load(spark_local_cluster, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.int64)
    df = spark_local_cluster.createDataFrame([(i, x[i].tolist(), int(y[i])) for i in range(120)],
                                             "id long, features array<float>, label long").repartition(3)
    export_dir = str(tmp_path / "export")
    estimator = (TFEstimator(nodefns_more.pipeline_train, {"lr": 0.05, "out": str(tmp_path), "epochs": 9})
                 .setInputMapping({"features": "features", "label": "label"})
                 .setOutputMapping({"logits": "prediction"})
                 .setClusterSize(2).setEpochs(2).setBatchSize(8).setExportDir(export_dir))
    fitted = Pipeline(stages=[estimator]).fit(df)

    merged = [json.loads((tmp_path / f"merged{i}.json").read_text()) for i in range(2)]
    assert all(m["epochs"] == 2 and m["lr"] == 0.05 and m["cluster_size"] == 2 for m in merged)  # params won
    assert merged[0]["steps"] == merged[1]["steps"] > 0
    model = fitted.stages[0]
    assert isinstance(model, TFModel) and model.getExportDir() == export_dir

    expected = _direct(export_dir, x)
    rows = fitted.transform(df).collect()
    assert {"id", "features", "label", "prediction"} == set(rows[0].asDict())
    got = np.array([r.prediction for r in sorted(rows, key=lambda r: r.id)], dtype=np.float32)
    assert got.shape == (120, 2) and np.allclose(got, expected, atol=1e-5)

    fitted.write().overwrite().save(str(tmp_path / "pipeline_model"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline_model"))
    stage = loaded.stages[0]
    assert isinstance(stage, TFModel) and stage.getExportDir() == export_dir
    assert stage.getOutputMapping() == {"logits": "prediction"} and stage.args.lr == 0.05
    again = loaded.transform(df.drop("label")).collect()  # scoring needs no label column
    got_again = np.array([r.prediction for r in sorted(again, key=lambda r: r.id)], dtype=np.float32)
    assert np.allclose(got_again, expected, atol=1e-5)
    _assert_loaded_once_per_worker(spark_local_cluster, export_dir, scored=2 * df.rdd.getNumPartitions())

    Pipeline(stages=[estimator]).write().overwrite().save(str(tmp_path / "pipeline"))
    est = Pipeline.load(str(tmp_path / "pipeline")).getStages()[0]
    assert isinstance(est, TFEstimator) and est.getClusterSize() == 2 and est.getExportDir() == export_dir
    assert est.train_fn.__name__ == "pipeline_train" and est.args.out == str(tmp_path)

    # Bad mappings fail on the driver, before any Spark job, with what the signature has.
    with pytest.raises(ConfigError, match=r"signature's inputs \['features'\] get no column"):
        TFModel({}).setExportDir(export_dir).setInputMapping({"id": "nope"}).transform(df)
    with pytest.raises(ConfigError, match=r"output_mapping names outputs \['nope'\].*outputs are \['logits'\]"):
        TFModel({}).setExportDir(export_dir).setOutputMapping({"nope": "p"}).transform(df)
    with pytest.raises(ConfigError, match=r"no signature 'other'; it has \['serving_default'\]"):
        TFModel({}).setExportDir(export_dir).setSignatureDefKey("other").transform(df)
    with pytest.raises(ConfigError, match="TFModel needs export_dir"):
        TFModel({}).transform(df)
    with pytest.raises(ConfigError, match="cannot read the SavedModel"):
        TFModel({}).setExportDir(str(tmp_path / "missing")).transform(df)


def test_fit_with_input_mode_tensorflow_exports_tfrecords_for_train_fn(spark_local_cluster, tmp_path):
    from tfos import InputMode, dfutil

    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    df = spark_local_cluster.createDataFrame([(i, x[i].tolist(), int(x[i].sum() > 0)) for i in range(60)],
                                             "id long, features array<float>, label long").repartition(2)
    tfr = str(tmp_path / "tfr")
    estimator = (TFEstimator(nodefns_more.pipeline_train_tfrecords, {"out": str(tmp_path)})
                 .setInputMode(InputMode.TENSORFLOW).setInputMapping({"features": "features", "label": "label"})
                 .setClusterSize(1).setEpochs(1).setExportDir(str(tmp_path / "export")))
    with pytest.raises(ConfigError, match=r"InputMode.TENSORFLOW writes the DataFrame as TFRecords.*setTFRecordDir"):
        estimator.fit(df)
    model = estimator.setTFRecordDir(tfr).fit(df)
    seen = json.loads((tmp_path / "tfrecords0.json").read_text())
    assert seen == {"tfrecord_dir": tfr, "files": 2, "rows": 60}  # only the mapped columns were written
    assert model.getExportDir() == str(tmp_path / "export")

    loaded = dfutil.loadTFRecords(spark_local_cluster, tfr)  # already TFRecords: fit reads them where they are
    estimator.setTFRecordDir(str(tmp_path / "unused")).fit(loaded)
    assert json.loads((tmp_path / "tfrecords0.json").read_text())["tfrecord_dir"] == tfr
    assert not (tmp_path / "unused").exists()
