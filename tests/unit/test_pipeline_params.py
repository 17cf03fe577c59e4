"""tfos.pipeline's TensorFlowOnSpark-style params and argument merging (pure Python: no Spark job, no TF)."""

import argparse

import pytest

from tfos import InputMode
from tfos.errors import ConfigError
from tfos.pipeline import Namespace, TFEstimator, TFModel, TFTypeConverters, decode_objects, encode_objects


def train_fn(args, ctx):
    return args


def test_namespace_from_dict_argparse_namespace_and_argv():
    ns = Namespace({"lr": 0.1, "steps": 5})
    assert (ns.lr, ns.steps, ns.argv) == (0.1, 5, None)
    assert Namespace(argparse.Namespace(lr=0.1, steps=5)) == ns == Namespace(ns)
    assert "lr" in ns and sorted(ns) == ["lr", "steps"]
    assert repr(ns) == "Namespace(lr=0.1, steps=5)"
    argv = Namespace(["--lr", "0.1"])
    assert argv.argv == ["--lr", "0.1"] and list(argv) == ["--lr", "0.1"] and argv == ["--lr", "0.1"]
    with pytest.raises(ConfigError, match="tf_args must be a dict, an argparse.Namespace or an argv list, got int"):
        Namespace(3)


def test_estimator_defaults_are_tensorflowonsparks():
    est = TFEstimator(train_fn, {"lr": 0.1})
    merged = est.merge_args_params()
    assert (merged.cluster_size, merged.num_ps, merged.driver_ps_nodes, merged.input_mode, merged.master_node) == (
        1, 0, False, InputMode.SPARK, "chief")
    assert (merged.batch_size, merged.epochs, merged.readers, merged.steps, merged.protocol) == (100, 1, 1, 1000, "grpc")
    assert merged.input_mapping == {} and merged.tensorboard is False and merged.grace_secs == 0
    assert merged.model_dir is None and merged.export_dir is None and merged.tfrecord_dir is None


def test_setters_getters_and_params_win_over_args():
    est = (TFEstimator(train_fn, {"lr": 0.1, "epochs": 7, "batch_size": 3})
           .setInputMapping({"x": "features", "y": "label"}).setClusterSize(3).setNumPS(1).setDriverPSNodes(True)
           .setInputMode(InputMode.TENSORFLOW).setMasterNode("master").setProtocol("grpc").setTensorboard(True)
           .setModelDir("/m").setExportDir("/e").setTFRecordDir("/t").setBatchSize(32).setEpochs(2)
           .setReaders(4).setSteps(50).setGraceSecs(5))
    assert (est.getClusterSize(), est.getNumPS(), est.getDriverPSNodes(), est.getInputMode()) == (3, 1, True, 0)
    assert (est.getMasterNode(), est.getTensorboard(), est.getModelDir(), est.getExportDir()) == (
        "master", True, "/m", "/e")
    assert (est.getTFRecordDir(), est.getBatchSize(), est.getEpochs(), est.getReaders(), est.getSteps()) == (
        "/t", 32, 2, 4, 50)
    assert est.getGraceSecs() == 5 and est.getInputMapping() == {"x": "features", "y": "label"}
    merged = est.merge_args_params()
    assert (merged.lr, merged.epochs, merged.batch_size) == (0.1, 2, 32)  # the param wins over the arg
    assert (est.args.epochs, est.args.batch_size) == (7, 3)  # and args stay as given
    assert merged is not est.args


def test_argv_args_merge_into_attributes_but_the_list_is_what_train_fn_gets():
    from tfos.pipeline import _tf_args

    est = TFEstimator(train_fn, ["--epochs", "3"]).setEpochs(2)
    merged = est.merge_args_params()
    assert merged.epochs == 2 and merged.argv == ["--epochs", "3"]
    assert _tf_args(est.args, merged) == ["--epochs", "3"]
    dict_est = TFEstimator(train_fn, {"a": 1})
    assert _tf_args(dict_est.args, dict_est.merge_args_params()).a == 1


def test_model_params_and_copy_from_estimator():
    model = (TFModel({"a": 1}).setInputMapping({"x": "in"}).setOutputMapping({"out": "pred"}).setBatchSize(64)
             .setModelDir("/m").setExportDir("/e").setSignatureDefKey("serving_default").setTagSet("serve"))
    assert (model.getInputMapping(), model.getOutputMapping(), model.getBatchSize()) == ({"x": "in"}, {"out": "pred"}, 64)
    assert (model.getModelDir(), model.getExportDir(), model.getSignatureDefKey(), model.getTagSet()) == (
        "/m", "/e", "serving_default", "serve")
    defaults = TFModel({}).merge_args_params()
    assert (defaults.batch_size, defaults.signature_def_key, defaults.tag_set, defaults.output_mapping) == (
        100, None, None, {})
    est = TFEstimator(train_fn, {"a": 1}).setExportDir("/x").setInputMapping({"c": "t"}).setOutputMapping({"o": "p"})
    fitted = est._copyValues(TFModel(est.args))
    assert (fitted.getExportDir(), fitted.getInputMapping(), fitted.getOutputMapping()) == ("/x", {"c": "t"}, {"o": "p"})
    assert fitted.args == est.args and fitted.args is not est.args


def test_type_errors_name_the_value():
    with pytest.raises(TypeError, match=r"expected a dict such as \{'column': 'tensor'\}, got list"):
        TFTypeConverters.toDict(["x"])
    with pytest.raises(TypeError, match="input_mapping"):
        TFEstimator(train_fn, {}).setInputMapping("x")
    with pytest.raises(TypeError, match="cluster_size"):
        TFEstimator(train_fn, {}).setClusterSize("two")


def test_saved_objects_round_trip_and_unpicklable_ones_are_refused():
    import threading

    encoded = encode_objects({"args": Namespace({"lr": 0.5}), "train_fn": train_fn})
    decoded = decode_objects(encoded)
    assert decoded["args"] == Namespace({"lr": 0.5}) and decoded["train_fn"]({"z": 1}, None) == {"z": 1}
    with pytest.raises(ConfigError, match="cannot be pickled"):
        encode_objects({"args": Namespace({"lock": threading.Lock()})})
