"""Entry point of a node's TF process: ``python -m tfos._node.child``.

The supervisor starts this module with the environment already set (``TF_USE_LEGACY_KERAS``,
``CUDA_VISIBLE_DEVICES``, ``TF_CONFIG`` unless it is not known yet) and writes a pickled payload to its stdin.
Only here are the user's function and arguments unpickled, so whatever they import (TensorFlow included) sees that
environment. With ``--preimport tensorflow,...`` the process starts while the cluster is still being reserved and
imports those modules while it waits for the payload, which then brings ``TF_CONFIG`` (TensorFlow reads it when a
strategy or cluster resolver is made, not at import).

On an exception the child writes message, traceback, time and host as JSON to the error file the supervisor
named, then exits 1. It exits when its parent (the supervisor) dies.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback

from . import ERROR_FILE_ENV  # re-exported: importers of tfos._node.child use it

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Exits this process when the supervisor dies: prctl where Linux has it, and a polling watchdog."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(70)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(70)

    threading.Thread(target=watch, name="tfos-parent-watch", daemon=True).start()


LEGACY_KERAS_HINT = (
    "tfos sets TF_USE_LEGACY_KERAS=1 in the TF process so that tf.keras is tf-keras (Keras 2), but the tf_keras "
    "package cannot be imported on this executor. Install it in the executors' Python: pip install tf-keras "
    "(the release matching tensorflow's, e.g. tf-keras==2.21.*), or set TFOS_LEGACY_KERAS=0 "
    "(TFCluster.run(..., legacy_keras=False)) to use Keras 3."
)


def _missing_tf_keras(exc: BaseException) -> bool:
    if not isinstance(exc, ImportError) or os.environ.get("TF_USE_LEGACY_KERAS", "").lower() not in ("1", "true"):
        return False
    return exc.name == "tf_keras" or "tf_keras" in str(exc) or "Keras cannot be imported" in str(exc)


def _load(cloudpickle, data: bytes, what: str):
    """Unpickles main_fun or tf_args; a failure (its module fails to import here) gets a note saying so."""
    try:
        return cloudpickle.loads(data)
    except Exception as exc:
        add_note(
            exc, f"This happened while loading {what} in the TF process, before it ran: a module it needs failed to "
            f"import here. Functions defined in an importable module are pickled by reference, so that module "
            "must import cleanly on the executors (ship it with --py-files or sc.addPyFile, and keep its "
            "import-time code free of driver-only resources)."
        )
        raise


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 (no ``add_note``; ``write_error`` reads ``__notes__`` itself)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:
        exc.__notes__ = [*getattr(exc, "__notes__", ()), note]  # type: ignore[attr-defined]


def write_error(path: str | None, exc: BaseException) -> None:
    """Records the exception for the supervisor (torchelastic's error-file idea), with its notes (hints)."""
    if not path:
        return
    message = f"{type(exc).__name__}: {exc}" + "".join(f"\n{note}" for note in getattr(exc, "__notes__", ()))
    data = sys.modules.get("tfos.data")  # loaded if main_fun read TFRecords through it
    if data is not None:
        try:
            found = data.describe_failure(exc)
        except Exception:  # noqa: BLE001 - the original error must still be reported
            found = None
        if found:
            message += f"\n[tfos.data] {found}"
    record = {
        "message": message,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "time": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def _build_context(fields: dict, tmp_fd: int | None, feed_fd: int | None, secret: str | None,
                   feed_queue_chunks: int = 16):
    from ..node import TFNodeContext

    tmp_socket = socket.socket(fileno=tmp_fd) if tmp_fd is not None else None
    mgr = None
    if feed_fd is not None:
        # InputMode.SPARK: serve the feed from the start, before main_fun asks for it.
        from .._feed.server import FeedServer

        if secret is None:
            raise ValueError("the TF process was given a feed socket but no secret to check its feeders with")
        mgr = FeedServer(socket.socket(fileno=feed_fd), secret, feed_queue_chunks)
        mgr.start()
    return TFNodeContext(tmp_socket=tmp_socket, mgr=mgr, **fields)


def _read_payload(preimport: list[str]) -> dict | None:
    """The supervisor's payload from stdin, read by a thread while ``preimport`` modules are imported here.

    A module that fails to import is left alone: main_fun's own import of it raises the real error. Returns
    None when stdin closes without a payload (the node was not started).
    """
    box: dict = {}

    def read() -> None:
        box["data"] = sys.stdin.buffer.read()

    reader = threading.Thread(target=read, name="tfos-payload", daemon=True)
    reader.start()
    for name in preimport:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - reported when main_fun imports it
            pass
    reader.join()
    return pickle.loads(box["data"]) if box.get("data") else None


def _option(argv: list[str], name: str) -> str:
    """The value after ``name`` in ``argv`` ("" when absent)."""
    return argv[argv.index(name) + 1] if name in argv[:-1] else ""


def main() -> int:
    _die_with_parent(int(_option(sys.argv, "--parent") or os.getppid()))
    payload = _read_payload([m for m in _option(sys.argv, "--preimport").split(",") if m])
    if payload is None:
        return 0
    os.environ.update(payload.get("env") or {})
    # main_fun must not read the payload pipe; give it an empty stdin as a Spark task would have.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    error_file = os.environ.get(ERROR_FILE_ENV)
    try:
        import cloudpickle

        if payload.get("sys_path"):
            sys.path[:0] = [p for p in payload["sys_path"] if p not in sys.path]
        if payload.get("chdir"):
            os.chdir(payload["chdir"])
        if payload.get("keras3"):
            # Keras 3 (tfos._node.keras_choice chose it): repaired for MultiWorkerMirroredStrategy before main_fun loads, since
            # main_fun's Keras classes may arrive by reference and import Keras as they are unpickled.
            from . import keras3

            keras3.install()
        fn = _load(cloudpickle, payload["fn"], "main_fun")
        args = _load(cloudpickle, payload["args"], "tf_args")
        ctx = _build_context(payload["ctx"], payload.get("tmp_fd"), payload.get("feed_fd"), payload.get("secret"),
                             payload.get("feed_queue_chunks", 16))
        if isinstance(args, list):
            # TensorFlowOnSpark passes an argv list as sys.argv too, so argparse in main_fun works unchanged.
            sys.argv = [str(a) for a in args]
        result = fn(args, ctx)
        del result
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code != 0:
            write_error(error_file, exc)
        return code
    except BaseException as exc:  # noqa: BLE001 - everything the user code raises is reported
        if _missing_tf_keras(exc):
            add_note(exc, LEGACY_KERAS_HINT)
        write_error(error_file, exc)
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: TF's background threads sometimes keep an orderly interpreter exit waiting forever.
    os._exit(code)
