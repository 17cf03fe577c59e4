"""Which modules a node's TF process imports while the cluster is reserved (tfos._node.preimport): pure logic."""

import types

import pytest

from tfos._node.preimport import mentions_tensorflow, modules_for, source_mentions_tensorflow
from tfos.config import from_env
from tfos.errors import ConfigError


def imports_tf(args, ctx):
    import tensorflow as tf  # noqa: F401


def imports_keras_inside_a_closure(args, ctx):
    def build():
        from tf_keras import layers  # noqa: F401

    return build


def calls_a_helper(args, ctx):
    return _helper(args)


def _helper(args):
    import tensorflow  # noqa: F401


def no_tf(args, ctx):
    import time

    time.sleep(0)
    return len(args)


class CallableObject:
    def __call__(self, args, ctx):
        import keras  # noqa: F401


def test_functions_that_import_tensorflow_are_recognised():
    assert mentions_tensorflow(imports_tf)
    assert mentions_tensorflow(imports_keras_inside_a_closure)
    assert mentions_tensorflow(calls_a_helper)
    assert mentions_tensorflow(CallableObject())
    assert not mentions_tensorflow(no_tf)


def test_a_global_tensorflow_module_counts():
    fake_tf = types.ModuleType("tensorflow")
    fn = types.FunctionType(compile("def f(args, ctx): return tf.constant(1)", "<x>", "exec").co_consts[0],
                            {"tf": fake_tf})
    assert mentions_tensorflow(fn)


def test_recursion_ends_on_cycles():
    scope = {}
    exec("def a(x): return b(x)\ndef b(x): return a(x)", scope)
    assert not mentions_tensorflow(scope["a"])


@pytest.mark.parametrize("setting, legacy, expected", [
    ("auto", True, ("tensorflow", "tf_keras")),
    ("auto", False, ("tensorflow",)),
    ("off", True, ()),
    ("0", True, ()),
    ("", True, ()),
    ("json, xml.dom.minidom", True, ("json", "xml.dom.minidom")),
])
def test_modules_for(setting, legacy, expected):
    assert modules_for(setting, imports_tf, legacy) == expected


def test_auto_imports_nothing_for_a_function_without_tensorflow():
    assert modules_for("auto", no_tf, True) == ()


def test_script_source():
    assert source_mentions_tensorflow("import os\nimport tensorflow as tf\n")
    assert source_mentions_tensorflow("from keras import layers")
    assert not source_mentions_tensorflow("import numpy as np\nprint('tensorflow')\n")


def test_setting_is_validated():
    assert from_env({}).preimport == "off"
    assert from_env({"TFOS_PREIMPORT": "auto"}).preimport == "auto"
    with pytest.raises(ConfigError, match="preimport must be 'auto', 'off' or a comma-separated list of module names"):
        from_env({"TFOS_PREIMPORT": "tensorflow; rm -rf /"})
