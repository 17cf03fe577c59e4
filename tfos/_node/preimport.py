"""Which modules a node's TF process imports while the cluster is still being reserved.

Importing TensorFlow takes seconds (about 5 s with tf-keras on a 2-core machine). A node's TF process is
started as soon as its Spark task starts when ``preimport`` asks for it, imports what ``main_fun`` will import
while the other nodes register, and only then receives ``TF_CONFIG`` and ``main_fun`` (TensorFlow reads
``TF_CONFIG`` when a strategy or cluster resolver is created, not at import). The setting ``preimport``
(``TFOS_PREIMPORT``) decides:

- ``off`` (default; or ``0``/empty): nothing, the TF process starts once the cluster spec is known;
- ``auto``: TensorFlow (and tf-keras when ``TF_USE_LEGACY_KERAS=1``) if ``main_fun`` uses it, as far as its code
  shows (:func:`mentions_tensorflow`); nothing otherwise, so a main function that never imports TensorFlow does
  not pay for it;
- a comma-separated list of module names: exactly those.

It is off by default because it measured no gain where every node shares the same cores (the test machine: both
nodes' imports then compete with the reservation for them; ``bench/results/side_by_side.md``). The head start it
can give is the reservation's duration, on hosts whose cores are idle meanwhile.

This module is pure: it looks at code objects and source text, imports nothing of the user's.
"""

from __future__ import annotations

import builtins
import importlib.util
import types
from typing import Any

from .keras_choice import code_names

TF_MODULES = ("tensorflow", "keras", "tf_keras")
_MAX_DEPTH = 3


def modules_for(setting: str, fn: Any, legacy_keras: bool) -> tuple[str, ...]:
    """The modules to pre-import for ``fn`` under ``setting`` (see the module docstring)."""
    value = (setting or "").strip()
    if value.lower() in ("", "0", "off", "false", "no", "none"):
        return ()
    if value.lower() == "auto":
        return tf_modules(legacy_keras) if mentions_tensorflow(fn) else ()
    return tuple(name.strip() for name in value.split(",") if name.strip())


def tf_modules(legacy_keras: bool) -> tuple[str, ...]:
    """TensorFlow, and tf-keras when ``tf.keras`` will be tf-keras."""
    return ("tensorflow", "tf_keras") if legacy_keras else ("tensorflow",)


def mentions_tensorflow(fn: Any, depth: int = 0, seen: set | None = None) -> bool:
    """True if ``fn`` (a function, or a callable object) imports or uses TensorFlow or Keras.

    Looks at the names its code (and the code nested in it) uses, at the modules and functions those names
    refer to in its globals, and at the source of modules it imports by name. False when nothing shows it,
    which only costs the head start.
    """
    seen = set() if seen is None else seen
    if depth > _MAX_DEPTH or id(fn) in seen:
        return False
    seen.add(id(fn))
    code = getattr(fn, "__code__", None)
    if code is None:
        call = getattr(type(fn), "__call__", None)
        return isinstance(call, types.FunctionType) and mentions_tensorflow(call, depth + 1, seen)
    names = code_names(code)
    if any(_is_tf_name(n) for n in names):
        return True
    scope = getattr(fn, "__globals__", {})
    for name in names:
        value = scope.get(name)
        if isinstance(value, types.ModuleType):
            if _is_tf_name(value.__name__) or (depth < _MAX_DEPTH and _source_mentions(value.__name__)):
                return True
        elif isinstance(value, types.FunctionType) and mentions_tensorflow(value, depth + 1, seen):
            return True
        elif (value is None and name not in scope and not hasattr(builtins, name) and depth < _MAX_DEPTH
              and _source_mentions(name)):
            return True  # a module imported by name inside fn (``import main; main.main()``)
    return False


def source_mentions_tensorflow(text: str) -> bool:
    """True if Python source text imports TensorFlow or Keras (for scripts run by ``python -m tfos run``)."""
    return any(f"import {m}" in text or f"from {m}" in text for m in TF_MODULES)


def script_modules(source: str, module: str | None, legacy_keras: bool) -> tuple[str, ...]:
    """What to pre-import for ``python -m tfos run``: a script's ``source``, or the installed ``module`` (-m)."""
    uses_tf = _source_mentions(module, whole_name=True) if module else source_mentions_tensorflow(source)
    return tf_modules(legacy_keras) if uses_tf else ()


def _is_tf_name(name: str) -> bool:
    return name.split(".", 1)[0] in TF_MODULES


def _source_mentions(module_name: str, whole_name: bool = False) -> bool:
    """True if module ``module_name`` (its top-level package unless ``whole_name``: finding a dotted name imports
    its parent packages) is a source file on this path that imports TensorFlow."""
    try:
        spec = importlib.util.find_spec(module_name if whole_name else module_name.split(".", 1)[0])
    except (ImportError, ValueError):
        return False
    origin = getattr(spec, "origin", None) if spec is not None else None
    if not origin or not origin.endswith(".py"):
        return False
    try:
        with open(origin, encoding="utf-8", errors="replace") as f:
            return source_mentions_tensorflow(f.read(1_000_000))
    except OSError:
        return False

