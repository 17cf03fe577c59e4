"""``python -m tfos run``: run an unmodified TensorFlow script on every node of a TF cluster on Spark.

A script written for ``tf.distribute.MultiWorkerMirroredStrategy`` (it reads ``TF_CONFIG``, as TensorFlow's
multi-worker tutorial does) runs as it is, with no tfos import::

    python -m tfos run train.py --num-executors 4 --master spark://host:7077 -- --epochs 3

Every node runs the script as ``__main__`` (``runpy``) in its TF process, with ``sys.argv`` set to
``[script, *script_args]`` and ``TF_CONFIG`` in the environment. ``-m pkg.mod`` runs a module instead. The
script's source is read on the driver and shipped with the Spark task; where the same file exists on the
executor (a shared file system, or one machine) that file runs, so its own directory is ``sys.path[0]`` and
its sibling modules import; otherwise a copy is written to a temporary directory on the executor and helper
modules must be shipped with ``--py-files``. The TF process's working directory is the executor's (Spark's
work directory on standalone, the container's on YARN/Kubernetes): relative paths in the script resolve
there, so give absolute or ``hdfs://``/``s3://`` paths for data and models.

The command's exit status is the run's: 0 when every node ended well; when a node failed, the exit code of
the root-cause node's script (``sys.exit(3)`` gives 3), 128+N when it was killed by signal N, else 1.

Through ``spark-submit``, run this file (``python -m tfos launcher`` prints its path) as the application::

    spark-submit --master yarn --num-executors 4 "$(python -m tfos launcher)" run train.py --num-executors 4

This module is the only place in tfos that configures logging.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file (spark-submit) or with python -m tfos.cli
    import os as _os
    import sys as _sys

    # Run as a file, Python put this file's directory (the tfos package) first on sys.path, where its modules
    # would shadow top-level ones: drop it. Then run the importable tfos.cli, so that pickled references to
    # its functions name tfos.cli (not __main__).
    _here = _os.path.dirname(_os.path.abspath(__file__))
    _sys.path[:] = [p for p in _sys.path if _os.path.abspath(p or ".") != _here]
    from tfos.cli import main as _main

    _sys.exit(_main())

import argparse
import logging
import os
import runpy
import shutil
import sys
import tempfile
from typing import Any, Mapping, Sequence

from ._node.keras_choice import SCRIPT_KIND

logger = logging.getLogger(__name__)

__all__ = ["ScriptExit", "main", "parse_args"]

USAGE_ERROR = 2
PROGRESS_CHOICES = ("auto", "on", "off", "log")  # the ``progress`` setting's values (tfos.config)


class ScriptExit(SystemExit):
    """A node's script called ``sys.exit`` with a failure status; keeps the status as the TF process's exit code.

    Attributes:
        code: the exit status (an int, 1 for a message passed to ``sys.exit``).
        script: the script or module that exited.
        detail: the value given to ``sys.exit``.
    """

    def __init__(self, code: int, script: str, detail: Any) -> None:
        super().__init__(code)
        self.script = script
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.script} exited with status {self.code} (sys.exit({self.detail!r}))"

    def __reduce__(self):
        return (type(self), (self.code, self.script, self.detail))


# ----- argument parsing (pure) ------------------------------------------------------------------------------
def _conf_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--conf takes KEY=VALUE, got {text!r}")
    return key.strip(), value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tfos",
        description="Run an unmodified TensorFlow script on a TF cluster of Spark executors.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,launcher}")
    run = commands.add_parser(
        "run", help="run a script (or -m module) on every TF node",
        description="Runs SCRIPT (or -m MODULE) as __main__ on every TF node, with TF_CONFIG set. "
                    "Arguments for the script go after '--'.",
        usage="python -m tfos run (SCRIPT | -m MODULE) --num-executors N [options] [-- SCRIPT_ARGS ...]",
    )
    run.add_argument("script", nargs="?", help="path of the Python script to run on every node")
    run.add_argument("-m", "--module", help="run this module (python -m style) instead of a script; it must "
                     "be importable on the executors (installed, or shipped with --py-files)")
    run.add_argument("--num-executors", "-n", type=_positive_int, required=True,
                     help="number of TF nodes (one Spark task slot each, all at once)")
    run.add_argument("--num-ps", type=_non_negative_int, default=0, help="parameter-server nodes (default 0)")
    run.add_argument("--master-node", choices=("chief", "master", "none"), default="none",
                     help="role of the first non-ps node (default none: every training node is a worker)")
    run.add_argument("--eval-node", action="store_true", help="make the last node an evaluator")
    run.add_argument("--tensorboard", action="store_true", help="start TensorBoard on the chief's executor")
    run.add_argument("--log-dir", help="TensorBoard log directory (TFOS_LOG_DIR in the nodes)")
    run.add_argument("--master", help="Spark master URL (default: spark-submit's, spark-defaults', or local[*])")
    run.add_argument("--conf", type=_conf_pair, action="append", default=[], metavar="KEY=VALUE",
                     help="a Spark setting for the session (repeatable)")
    run.add_argument("--py-files", default="", metavar="FILES",
                     help="comma-separated .py/.zip/.egg files to put on the nodes' sys.path (sc.addPyFile)")
    run.add_argument("--app-name", default="", help="Spark application name (default: tfos <script>)")
    run.add_argument("--timeout", type=float, default=259200,
                     help="seconds to wait for the run to end before stopping every node (default 3 days)")
    run.add_argument("--reservation-timeout", type=float, default=600,
                     help="seconds for every node to start and register (default 600)")
    run.add_argument("--spark-log-level", default="WARN", help="Spark's log level on the driver (default WARN)")
    run.add_argument("--progress", choices=PROGRESS_CHOICES, default=None,
                     help="per-node progress lines on stderr: auto (default, TFOS_PROGRESS: only when stderr is a "
                          "terminal), on, off, or log (as INFO log records)")
    verbosity = run.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="tfos debug logging")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only tfos warnings and errors")
    commands.add_parser("launcher", help="print the path of a file spark-submit can run as the application")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parses the command line; what follows the first ``--`` is the script's own arguments.

    Args:
        argv: the arguments after ``python -m tfos``.

    Returns:
        The parsed options; ``script_args`` holds the script's arguments.

    Raises:
        SystemExit: with status 2 and a message on stderr, for a command line that does not parse.
    """
    argv = list(argv)
    ours, script_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = _parser()
    args, unknown = parser.parse_known_args(ours)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}. Arguments for the script go after '--': "
                     f"python -m tfos run train.py --num-executors 2 -- {' '.join(unknown)}")
    args.script_args = script_args
    if args.command == "run":
        if bool(args.script) == bool(args.module):
            parser.error("give exactly one of SCRIPT or -m MODULE, e.g. python -m tfos run train.py "
                         "--num-executors 2")
        if args.num_ps + (args.master_node != "none") + args.eval_node > args.num_executors:
            parser.error(f"--num-executors {args.num_executors} is too few for --num-ps {args.num_ps}"
                         f"{' + a ' + args.master_node if args.master_node != 'none' else ''}"
                         f"{' + an evaluator' if args.eval_node else ''}")
        if args.timeout <= 0 or args.reservation_timeout <= 0:
            parser.error("--timeout and --reservation-timeout must be > 0 seconds")
    return args


def exit_status(error: BaseException) -> int:
    """The command's exit status for a failed run: the root-cause node's exit code, 128+signal, else 1."""
    from .errors import ClusterFailedError, ConfigError

    if isinstance(error, ConfigError):
        return USAGE_ERROR
    root = error.root_cause if isinstance(error, ClusterFailedError) else None
    if root is not None and root.signal:
        return 128 + root.signal
    if root is not None and root.exit_code is not None and 0 < root.exit_code < 256:
        return root.exit_code
    return 1


# ----- on the nodes -----------------------------------------------------------------------------------------
def _script_file(payload: dict) -> tuple[str, str | None]:
    """The file to run on this node, and a temporary directory to remove afterwards (None when none)."""
    path = payload["path"]
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == payload["source"]:
                return path, None  # the same file is here (shared file system, or the driver's machine)
    except (OSError, UnicodeDecodeError):
        pass
    tmp = tempfile.mkdtemp(prefix="tfos-script-")
    copy = os.path.join(tmp, os.path.basename(path))
    with open(copy, "w", encoding="utf-8") as f:
        f.write(payload["source"])
    return copy, tmp


def _run_script(args: dict, ctx: Any) -> int:
    """main_fun of ``python -m tfos run``: runs the script or module as ``__main__`` on this node.

    Args:
        args: ``{"path", "source", "module", "argv"}`` built by the CLI on the driver.
        ctx: the node context (unused: the script reads ``TF_CONFIG`` itself).

    Returns:
        0 when the script ended or called ``sys.exit(0)``/``sys.exit()``.

    Raises:
        ScriptExit: the script called ``sys.exit`` with another status; the TF process exits with it.
    """
    del ctx
    name = args["module"] or os.path.basename(args["path"])
    tmp = None
    try:
        if args["module"]:
            sys.argv = [args["module"], *args["argv"]]  # run_module puts the module's file in argv[0]
            runpy.run_module(args["module"], run_name="__main__", alter_sys=True)
        else:
            path, tmp = _script_file(args)
            sys.argv = [path, *args["argv"]]
            sys.path.insert(0, os.path.dirname(path))  # as `python script.py` does
            runpy.run_path(path, run_name="__main__")
    except ScriptExit:
        raise
    except SystemExit as exc:
        if exc.code is None or exc.code == 0:
            return 0
        if not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)  # what the interpreter does with sys.exit("message")
        code = exc.code if isinstance(exc.code, int) else 1
        raise ScriptExit(code if 0 < code < 256 else 1, name, exc.code) from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


# ----- on the driver ----------------------------------------------------------------------------------------
def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tfos").setLevel(level)


def cluster_settings(args: argparse.Namespace, payload: dict | None = None,
                     environ: Mapping[str, str] | None = None) -> dict:
    """The tfos settings the command line gives ``TFCluster.run``; a flag left out leaves its ``TFOS_*`` variable.

    With ``TFOS_PREIMPORT=auto`` the script's source decides what is pre-imported (a script that imports TensorFlow
    has it imported while the cluster is reserved; see :mod:`tfos._node.preimport`).
    """
    from ._node.keras_choice import TF_KERAS, choose, script_source
    from ._node.preimport import script_modules
    from .config import from_env

    environ = os.environ if environ is None else environ
    settings = {} if args.progress is None else {"progress": args.progress}
    config = from_env(environ)
    if payload is not None and config.preimport == "auto":
        legacy = choose(config.legacy_keras, source=script_source(payload)) == TF_KERAS
        settings["preimport"] = ",".join(script_modules(payload["source"], payload["module"], legacy)) or "off"
    return settings


def _payload(args: argparse.Namespace) -> dict:
    from .errors import ConfigError

    if args.module:
        return {"kind": SCRIPT_KIND, "path": "", "source": "", "module": args.module, "argv": list(args.script_args)}
    path = os.path.abspath(args.script)
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the script {args.script!r} ({exc.strerror}); give the path of a "
                          "Python file on the driver's machine, or -m MODULE for an installed module") from None
    try:
        compile(source, path, "exec")
    except SyntaxError as exc:
        raise ConfigError(f"the script {args.script} does not compile: {exc}") from None
    return {"kind": SCRIPT_KIND, "path": path, "source": source, "module": None, "argv": list(args.script_args)}


def _spark_session(args: argparse.Namespace, name: str):
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(args.app_name or f"tfos {name}")
    if args.master:
        builder = builder.master(args.master)
    for key, value in args.conf:
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(args.spark_log_level)
    for path in filter(None, (p.strip() for p in args.py_files.split(","))):
        spark.sparkContext.addPyFile(path)
    return spark


def _check_module(module: str) -> None:
    import importlib.util

    from .errors import ConfigError

    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise ConfigError(f"module {module!r} cannot be imported on the driver; install it on every machine or "
                          "ship it with --py-files (a .py file, or a .zip of its package)")


def _report_nodes(cluster) -> None:
    """Logs each node's exit code, as the node stage reported it (chief/master first)."""
    import json

    job = getattr(cluster, "_job", None)
    summaries = [json.loads(r) for r in (getattr(job, "results", None) or [])]
    summaries.sort(key=lambda s: (s.get("role", "").split(":")[0] not in ("chief", "master"), s["worker_num"]))
    for summary in summaries:
        logger.info("node %s (%s) ended: %s, exit code %s", summary["worker_num"], summary.get("role"),
                    summary.get("outcome"), summary.get("exit_code"))


def _run(args: argparse.Namespace) -> int:
    from . import cluster as tfcluster

    payload = _payload(args)
    name = args.module or os.path.basename(args.script)
    spark = _spark_session(args, name)
    try:
        if args.module:
            _check_module(args.module)
        logger.info("running %s on %d TF nodes (master %s)", name, args.num_executors, spark.sparkContext.master)
        cluster = tfcluster.run(
            spark.sparkContext, _run_script, payload, args.num_executors, num_ps=args.num_ps,
            tensorboard=args.tensorboard, log_dir=args.log_dir, eval_node=args.eval_node,
            master_node=None if args.master_node == "none" else args.master_node,
            reservation_timeout=args.reservation_timeout, **cluster_settings(args, payload),
        )
        cluster.shutdown(timeout=args.timeout)
        _report_nodes(cluster)
    finally:
        spark.stop()
    print(f"tfos: {name} finished on {args.num_executors} TF nodes", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tfos``.

    Args:
        argv: the command line after ``python -m tfos``; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0 on success, the failed node's script status (or 128+signal, or 1) on a node
        failure, 2 for a bad command line or setting.
    """
    from .errors import TFOSError

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "launcher":
        print(os.path.abspath(__file__))
        return 0
    _configure_logging(args)
    try:
        return _run(args)
    except TFOSError as exc:
        print(f"tfos: {exc}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print("tfos: interrupted; every TF node was stopped", file=sys.stderr)
        return 130
