"""tfos._driver.payload: functions pickled by value keep their source file name (cloudpickle >= 3.1.3 drops it)."""

import sys

import cloudpickle

from tfos._driver.payload import dumps


def main_fun(args, ctx):
    def nested():
        raise ValueError("boom")

    return nested


def test_by_value_functions_keep_their_file_name():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        fn = cloudpickle.loads(dumps(main_fun))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert fn.__code__.co_filename == __file__
    assert fn(None, None).__code__.co_filename == __file__
    assert fn is not main_fun  # it really travelled by value


def test_other_objects_pickle_as_cloudpickle_does():
    value = {"lr": 0.1, "layers": [64, 10], "fn": len}
    assert cloudpickle.loads(dumps(value)) == value
