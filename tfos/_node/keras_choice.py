"""Which Keras a node's TF process gets: Keras 3 (TensorFlow's default) or tf-keras 2 (``TF_USE_LEGACY_KERAS=1``).

A node must see one Keras, the one the user's code expects, however its classes arrived. The setting
``legacy_keras`` (``TFOS_LEGACY_KERAS``) decides:

- ``auto`` (default): Keras 3 if ``main_fun`` uses Keras 3 itself: it imports ``keras`` (``import keras``,
  ``from keras import layers``), or it refers to Keras 3 objects made on the driver (a class imported there
  with ``from tensorflow.keras.models import Sequential``, which is Keras 3 on a driver without
  ``TF_USE_LEGACY_KERAS``, travels by reference and must find Keras 3 in the node). Otherwise, for code that only
  says ``tf.keras``, tf-keras 2, as TensorFlowOnSpark's examples expect. A script run by ``python -m tfos run``
  is judged by its source: ``import keras`` or ``from keras ...`` means Keras 3.
- ``1``: always tf-keras 2; ``0``: always Keras 3.

Keras 3 under MultiWorkerMirroredStrategy needs tfos's repair (:mod:`tfos._node.keras3`), applied in the TF
process whenever it runs Keras 3. This module is pure: it reads code objects and source text.
"""

from __future__ import annotations

import dis
import re
import types
from typing import Any

from ..errors import ConfigError

KERAS3, TF_KERAS = "keras3", "tf_keras"
SETTINGS = ("auto", "1", "0")
_MAX_DEPTH = 3
_SOURCE_KERAS3 = re.compile(r"^\s*(import\s+keras\b|from\s+keras(\.|\s))", re.MULTILINE)
_SOURCE_TF_KERAS = re.compile(r"^\s*(import\s+tf_keras\b|from\s+tf_keras(\.|\s))", re.MULTILINE)


def normalize(value: Any) -> str:
    """``legacy_keras`` as ``"auto"``, ``"1"`` or ``"0"`` (booleans and their usual spellings accepted)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    low = str(value).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return "1"
    if low in ("0", "false", "no", "off"):
        return "0"
    if low in ("auto", ""):
        return "auto"
    raise ConfigError(f"legacy_keras must be 'auto', 1 (tf-keras 2) or 0 (Keras 3), got {value!r} "
                      "(TFOS_LEGACY_KERAS)")


def choose(setting: str, fn: Any = None, source: str | None = None) -> str:
    """The Keras of the TF process, :data:`KERAS3` or :data:`TF_KERAS`, for ``main_fun`` ``fn`` (or a script's
    ``source``) under the ``legacy_keras`` setting.

    Raises:
        ConfigError: ``fn`` refers to both Keras 3 and tf-keras objects (one model cannot mix them).
    """
    setting = normalize(setting)
    if setting != "auto":
        return TF_KERAS if setting == "1" else KERAS3
    if source is not None:
        return KERAS3 if _SOURCE_KERAS3.search(source) and not _SOURCE_TF_KERAS.search(source) else TF_KERAS
    found = references(fn) if fn is not None else {}
    if KERAS3 in found and TF_KERAS in found:
        raise ConfigError(
            f"main_fun uses both Keras 3 ({found[KERAS3]}) and tf-keras 2 ({found[TF_KERAS]}); one model cannot mix "
            "the two. Import Keras one way only: `import keras` (Keras 3) or tf.keras with TF_USE_LEGACY_KERAS=1 "
            "set on the driver before TensorFlow is imported (tf-keras), or set legacy_keras explicitly.")
    return KERAS3 if KERAS3 in found else TF_KERAS


SCRIPT_KIND = "tfos-script"  # tf_args of ``python -m tfos run``: the script travels as source (see tfos.cli)


def script_source(tf_args: Any) -> str | None:
    """The Python source ``python -m tfos run`` ships as ``tf_args`` (a module's source, read here), else None."""
    if not isinstance(tf_args, dict) or tf_args.get("kind") != SCRIPT_KIND:
        return None
    if tf_args.get("source") or not tf_args.get("module"):
        return tf_args.get("source") or ""
    import importlib.util

    try:
        spec = importlib.util.find_spec(tf_args["module"])
        if spec is None or not spec.origin:
            return ""
        with open(spec.origin, encoding="utf-8", errors="replace") as f:
            return f.read(1_000_000)
    except (ImportError, ValueError, AttributeError, TypeError, OSError):
        return ""


def references(fn: Any, depth: int = 0, seen: set | None = None) -> dict[str, str]:
    """``{KERAS3: what, TF_KERAS: what}``: the Keras flavours ``fn`` imports or refers to, each with an example."""
    seen = set() if seen is None else seen
    found: dict[str, str] = {}
    if depth > _MAX_DEPTH or id(fn) in seen:
        return found
    seen.add(id(fn))
    code = getattr(fn, "__code__", None)
    if code is None:
        call = getattr(type(fn), "__call__", None)
        return references(call, depth + 1, seen) if isinstance(call, types.FunctionType) else found
    for name in _imports(code):
        _note(found, _flavour_of_module(name), f"import {name}")
    scope = getattr(fn, "__globals__", {})
    values = [scope[n] for n in code_names(code) if n in scope]
    values += [cell.cell_contents for cell in (fn.__closure__ or ()) if _has_contents(cell)]
    for value in values:
        if isinstance(value, types.FunctionType):
            for flavour, what in references(value, depth + 1, seen).items():
                _note(found, flavour, what)
        else:
            module = value.__name__ if isinstance(value, types.ModuleType) else _module_of(value)
            _note(found, _flavour_of_module(module), f"{module}.{getattr(value, '__name__', type(value).__name__)}")
    return found


def _note(found: dict, flavour: str | None, what: str) -> None:
    if flavour is not None:
        found.setdefault(flavour, what)


def _flavour_of_module(name: str) -> str | None:
    top = (name or "").split(".", 1)[0]
    return KERAS3 if top == "keras" else TF_KERAS if top == "tf_keras" else None


def _module_of(value: Any) -> str:
    module = getattr(value, "__module__", None) if isinstance(value, type) else None
    return module or getattr(type(value), "__module__", "") or ""


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def code_names(code: types.CodeType) -> set[str]:
    """The global and attribute names ``code`` and the code nested in it use (also ``tfos._node.preimport``'s)."""
    return {name for c in _codes(code) for name in c.co_names}


def _imports(code: types.CodeType) -> list[str]:
    """Module names of the import statements in ``code`` and the code nested in it."""
    return [ins.argval for c in _codes(code) for ins in dis.get_instructions(c) if ins.opname == "IMPORT_NAME"]
