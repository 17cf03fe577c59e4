"""Which Keras a node gets (tfos._node.keras_choice): pure logic on code objects and source text; no TensorFlow imported."""

import types

import pytest

from tfos._node.keras_choice import KERAS3, TF_KERAS, SCRIPT_KIND, choose, normalize, script_source
from tfos.errors import ConfigError

# Stand-ins for classes imported on a driver: only their module names matter here.
Keras3Sequential = type("Sequential", (), {"__module__": "keras.src.models.sequential"})
TfKerasAdam = type("Adam", (), {"__module__": "tf_keras.src.optimizers.adam"})
keras_module = types.ModuleType("keras")


def uses_tf_keras_only(args, ctx):
    import tensorflow as tf

    return tf.keras.Sequential([tf.keras.layers.Dense(1)])


def imports_keras(args, ctx):
    import keras

    return keras.Sequential()


def imports_from_keras(args, ctx):
    from keras import layers

    return layers


def uses_a_driver_class(args, ctx):
    return Keras3Sequential()


def uses_the_keras_module_global(args, ctx):
    return keras_module


def helper():
    import keras

    return keras


def calls_a_helper(args, ctx):
    return helper()


def mixes_both(args, ctx):
    return Keras3Sequential(), TfKerasAdam()


def test_tf_keras_code_gets_tf_keras_and_keras_code_keras3():
    assert choose("auto", uses_tf_keras_only) == TF_KERAS
    for fn in (imports_keras, imports_from_keras, uses_a_driver_class, uses_the_keras_module_global, calls_a_helper):
        assert choose("auto", fn) == KERAS3, fn.__name__


def test_a_closure_over_keras3_objects_counts():
    model = Keras3Sequential()

    def main(args, ctx):
        return model

    assert choose("auto", main) == KERAS3


def test_explicit_settings_win():
    assert choose("1", imports_keras) == TF_KERAS and choose("0", uses_tf_keras_only) == KERAS3
    assert choose(True, imports_keras) == TF_KERAS and choose(False, None) == KERAS3


def test_two_kerases_in_one_main_fun_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"both Keras 3 \(keras\.src\.models\.sequential\.Sequential\) and "
                                          r"tf-keras 2 \(tf_keras\.src\.optimizers\.adam\.Adam\)"):
        choose("auto", mixes_both)


def test_scripts_are_judged_by_their_source():
    assert choose("auto", source="import keras\nimport tensorflow as tf\n") == KERAS3
    assert choose("auto", source="from keras import layers\n") == KERAS3
    assert choose("auto", source="import tensorflow as tf\nm = tf.keras.Sequential()\n") == TF_KERAS
    assert choose("auto", source="import keras_tuner\n") == TF_KERAS  # another package
    assert script_source({"kind": SCRIPT_KIND, "source": "import keras\n", "module": None}) == "import keras\n"
    assert script_source({"source": "import keras\n"}) is None  # not the CLI's payload


@pytest.mark.parametrize("raw, value", [("auto", "auto"), ("", "auto"), ("1", "1"), ("true", "1"), (True, "1"),
                                        ("0", "0"), ("off", "0"), (False, "0")])
def test_setting_values(raw, value):
    assert normalize(raw) == value


def test_a_bad_setting_names_the_choices():
    with pytest.raises(ConfigError, match=r"legacy_keras must be 'auto', 1 \(tf-keras 2\) or 0 \(Keras 3\)"):
        normalize("maybe")
