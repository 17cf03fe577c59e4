"""tfos.cli without Spark: the command line, the exit status, and running a script or module as __main__."""

import json
import os
import sys
import textwrap

import pytest

from tfos import cli
from tfos.errors import ClusterFailedError, ConfigError, NodeFailure, ReservationTimeoutError


def test_options_before_and_after_the_script_and_script_args_after_double_dash():
    args = cli.parse_args(["run", "--num-ps", "1", "train.py", "-n", "4", "--master-node", "chief", "--tensorboard",
                           "--conf", "spark.a=1", "--conf", "spark.b=x=y", "--", "--epochs", "3", "--", "x"])
    assert (args.command, args.script, args.module, args.num_executors, args.num_ps) == ("run", "train.py", None, 4, 1)
    assert args.master_node == "chief" and args.tensorboard and args.conf == [("spark.a", "1"), ("spark.b", "x=y")]
    assert args.script_args == ["--epochs", "3", "--", "x"]


@pytest.mark.parametrize("argv, settings", [
    ([], {}),  # no flag: TFOS_PROGRESS (or auto) decides
    (["--progress", "off"], {"progress": "off"}),
    (["--progress", "log"], {"progress": "log"}),
    (["--progress", "on"], {"progress": "on"}),
])
def test_progress_flag_becomes_the_progress_setting(argv, settings):
    args = cli.parse_args(["run", "t.py", "-n", "2", *argv])
    assert cli.cluster_settings(args) == settings
    from tfos.config import from_env

    from_env({}, **settings)  # a valid value of the setting


def test_module_form():
    args = cli.parse_args(["run", "-m", "pkg.train", "--num-executors", "2"])
    assert (args.script, args.module, args.script_args, args.master_node) == (None, "pkg.train", [], "none")


@pytest.mark.parametrize("argv, message", [
    (["run", "train.py", "-n", "2", "--epochs", "3"], r"unrecognized arguments: --epochs 3\. Arguments for the script go after '--'"),
    (["run", "-n", "2"], r"give exactly one of SCRIPT or -m MODULE"),
    (["run", "t.py", "-m", "mod", "-n", "2"], r"give exactly one of SCRIPT or -m MODULE"),
    (["run", "t.py"], r"the following arguments are required: --num-executors"),
    (["run", "t.py", "-n", "0"], r"must be >= 1, got 0"),
    (["run", "t.py", "-n", "two"], r"expected an integer, got 'two'"),
    (["run", "t.py", "-n", "2", "--num-ps", "2", "--master-node", "chief"], r"--num-executors 2 is too few for --num-ps 2 \+ a chief"),
    (["run", "t.py", "-n", "2", "--conf", "spark.x"], r"--conf takes KEY=VALUE, got 'spark.x'"),
    (["run", "t.py", "-n", "2", "--timeout", "0"], r"--timeout and --reservation-timeout must be > 0"),
    (["run", "t.py", "-n", "2", "--master-node", "boss"], r"invalid choice: 'boss'"),
    (["run", "t.py", "-n", "2", "--progress", "loud"], r"--progress: invalid choice: 'loud'"),
])
def test_bad_command_lines_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
    assert info.value.code == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_launcher_prints_a_runnable_file(capsys):
    assert cli.main(["launcher"]) == 0
    path = capsys.readouterr().out.strip()
    assert os.path.isfile(path) and path.endswith(os.path.join("tfos", "cli.py"))


def test_missing_or_broken_script_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the script '.*nope.py' \(No such file or directory\)"):
        cli._payload(cli.parse_args(["run", str(tmp_path / "nope.py"), "-n", "1"]))
    (tmp_path / "bad.py").write_text("def f(:\n")
    with pytest.raises(ConfigError, match=r"the script .*bad.py does not compile"):
        cli._payload(cli.parse_args(["run", str(tmp_path / "bad.py"), "-n", "1"]))
    with pytest.raises(ConfigError, match=r"module 'no_such_mod_tfos' cannot be imported on the driver; .*--py-files"):
        cli._check_module("no_such_mod_tfos")


def _failure(**kw):
    return ClusterFailedError([NodeFailure(1, "worker:1", time=2.0, **kw),
                               NodeFailure(0, "worker:0", time=1.0, exit_code=7, secondary=True)])


def test_exit_status_follows_the_root_cause():
    assert cli.exit_status(_failure(exit_code=3)) == 3
    assert cli.exit_status(_failure(signal=9)) == 137
    assert cli.exit_status(_failure(message="lost")) == 1
    assert cli.exit_status(_failure(exit_code=300)) == 1
    assert cli.exit_status(ConfigError("bad")) == 2
    assert cli.exit_status(ReservationTimeoutError("slow")) == 1


@pytest.fixture
def clean_interpreter(monkeypatch):
    """_run_script sets sys.argv and sys.path as `python script.py` would: restore them afterwards."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))


def _script(tmp_path, body):
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(body))
    return {"path": str(path), "source": path.read_text(), "module": None, "argv": ["--epochs", "3"]}


RECORD = """
    import json, sys
    import helper  # a sibling module: the script's directory is sys.path[0]
    json.dump({"argv": sys.argv, "name": __name__, "file": __file__}, open(sys.argv[0] + ".json", "w"))
"""


def test_script_runs_as_main_with_argv_and_its_directory_on_sys_path(tmp_path, clean_interpreter):
    (tmp_path / "helper.py").write_text("")
    payload = _script(tmp_path, RECORD)
    assert cli._run_script(payload, None) == 0
    seen = json.load(open(payload["path"] + ".json"))
    assert seen == {"argv": [payload["path"], "--epochs", "3"], "name": "__main__", "file": payload["path"]}


def test_script_not_on_this_machine_runs_from_a_temporary_copy(tmp_path, clean_interpreter):
    out = tmp_path / "copy.json"
    payload = _script(tmp_path, "raise SystemExit('the driver shipped another version')\n")
    payload["source"] = f"import json\njson.dump(__file__, open({str(out)!r}, 'w'))\n"  # differs from the file
    assert cli._run_script(payload, None) == 0
    copy = json.load(open(out))
    assert copy != payload["path"] and os.path.basename(copy) == "train.py" and "tfos-script-" in copy
    assert not os.path.exists(os.path.dirname(copy))  # the temporary copy is removed afterwards


@pytest.mark.parametrize("call, status", [("sys.exit()", 0), ("sys.exit(0)", 0), ("sys.exit(None)", 0)])
def test_a_successful_exit_is_success(tmp_path, clean_interpreter, call, status):
    assert cli._run_script(_script(tmp_path, f"import sys\n{call}\n"), None) == status


def test_a_failing_exit_keeps_its_status_and_says_so(tmp_path, clean_interpreter, capsys):
    with pytest.raises(cli.ScriptExit, match=r"^train.py exited with status 3 \(sys.exit\(3\)\)$") as info:
        cli._run_script(_script(tmp_path, "import sys\nsys.exit(3)\n"), None)
    assert info.value.code == 3 and isinstance(info.value, SystemExit)
    with pytest.raises(cli.ScriptExit, match=r"exited with status 1 \(sys.exit\('bad data'\)\)") as info:
        cli._run_script(_script(tmp_path, "import sys\nsys.exit('bad data')\n"), None)
    assert info.value.code == 1 and "bad data" in capsys.readouterr().err
    import pickle

    again = pickle.loads(pickle.dumps(info.value))
    assert (again.code, str(again)) == (1, str(info.value))


def test_an_exception_propagates_unchanged(tmp_path, clean_interpreter):
    with pytest.raises(ValueError, match="no data in /nowhere"):
        cli._run_script(_script(tmp_path, "raise ValueError('no data in /nowhere')\n"), None)


def test_module_form_runs_as_main(tmp_path, clean_interpreter, monkeypatch):
    (tmp_path / "tfos_cli_mod.py").write_text(
        "import json, sys\njson.dump({'argv': sys.argv[1:], 'name': __name__}, open(sys.argv[1], 'w'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = str(tmp_path / "out.json")
    assert cli._run_script({"path": "", "source": "", "module": "tfos_cli_mod", "argv": [out, "x"]}, None) == 0
    assert json.load(open(out)) == {"argv": [out, "x"], "name": "__main__"}


@pytest.mark.parametrize("source, environ, expected", [
    ("import tensorflow as tf\n", {"TFOS_PREIMPORT": "auto"}, "tensorflow,tf_keras"),
    ("import tensorflow as tf\n", {"TFOS_PREIMPORT": "auto", "TFOS_LEGACY_KERAS": "0"}, "tensorflow"),
    ("print('no TF here')\n", {"TFOS_PREIMPORT": "auto"}, "off"),
    ("import tensorflow as tf\n", {"TFOS_PREIMPORT": "off"}, None),  # the variable decides
    ("import tensorflow as tf\n", {}, None),  # off by default
])
def test_a_script_that_imports_tensorflow_has_it_preimported(source, environ, expected):
    args = cli.parse_args(["run", "t.py", "-n", "2"])
    payload = {"path": "t.py", "source": source, "module": None, "argv": []}
    assert cli.cluster_settings(args, payload, environ).get("preimport") == expected
