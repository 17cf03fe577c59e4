"""How main_fun and its arguments travel to the executors: cloudpickle, keeping source file names.

cloudpickle 3.1.3 and later write ``<dynamic-code>`` as the file name of every function it pickles by value (the
functions of ``__main__`` and of modules registered with ``register_pickle_by_value``), so a node's traceback
would say ``File "<dynamic-code>", line 25, in main_fun``. :func:`dumps` keeps each code object's own file name,
so root-cause reports name the user's file again. With an older cloudpickle it changes nothing.
"""

from __future__ import annotations

import collections
import io
import pickle
import types
from typing import Any

import cloudpickle

_DYNAMIC_FILENAME = "<dynamic-code>"


def _reduce_code_keeping_filename(code: types.CodeType):
    rebuild, args = cloudpickle.Pickler.dispatch_table[types.CodeType](code)
    return rebuild, tuple(code.co_filename if isinstance(a, str) and a == _DYNAMIC_FILENAME else a for a in args)


class _Pickler(cloudpickle.Pickler):
    dispatch_table = collections.ChainMap({types.CodeType: _reduce_code_keeping_filename},
                                          cloudpickle.Pickler.dispatch_table)


def dumps(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)``, with the functions' source file names kept (see the module docstring)."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.DEFAULT_PROTOCOL).dump(obj)
    return buffer.getvalue()


def dumps_for_nodes(obj: Any, what: str, hint: str = "") -> bytes:
    """:func:`dumps`, with a failure turned into a :class:`~tfos.errors.ConfigError` naming ``what``."""
    from ..errors import ConfigError

    try:
        return dumps(obj)
    except Exception as exc:
        raise ConfigError(f"{what} cannot be pickled ({type(exc).__name__}: {exc}).{hint}") from exc
