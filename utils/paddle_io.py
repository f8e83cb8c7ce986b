"""Read files written by ``paddle.save`` (``.pdparams``, ``.pdopt``, ``.pdstates``) safely.

``paddle.load`` unpickles without an allow-list, so a shared ``.pdparams`` could run any
code when loaded. :func:`load_paddle` reads the same files through
:class:`utils.safe_pickle.AllowListUnpickler`, admitting only what ``paddle.save`` (Paddle
2.1 to 3.3, pickle protocols 2-4) writes for state dicts, optimizer states (with their
LR-scheduler state) and training progress:

* NumPy arrays and scalars of boolean/integer/float/complex dtypes
  (``numpy._core.multiarray._reconstruct``/``scalar``, ``numpy.ndarray``, ``numpy.dtype``,
  also under NumPy 1's ``numpy.core`` names), with ``_codecs.encode`` for protocol 2 bytes;
* ``builtins.tuple`` (a dygraph tensor is saved as ``tuple((name, array))``),
  ``collections.OrderedDict``, and the ``eval("data", {"data": array})`` form Paddle uses
  for a static ``DenseTensor`` (answered by a stand-in that only returns that array);
* ``paddle.base.libpaddle.GeneratorState`` (a random-generator state), rebuilt as an inert
  :class:`GeneratorStateRecord` of its integers.

Every stand-in checks its arguments: an array's byte count must equal its shape times its
item size (so a small file cannot ask for a large allocation), object and structured
dtypes are refused, and NumPy's own dtype state is never applied from the file. Any other
global is refused before it is imported, naming it. After unpickling, the result is
post-processed the way ``paddle.load`` does it (large-parameter slices joined, the name
table dropped, arrays turned into ``paddle.Tensor`` unless ``return_numpy``), so callers
get what ``paddle.load`` would have returned for a genuine file.
"""
from __future__ import annotations

import collections
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import UserError
from utils.safe_pickle import UnsafePickleError, unpickle_with_allow_list

__all__ = ["load_paddle", "GeneratorStateRecord", "restore_generator_state", "UnsafePickleError"]

_BIG_PARAM_TABLE = "UnpackBigParamInfor@@"  # sic: Paddle's key for parameters split in slices
_NAME_TABLE = "StructuredToParameterName@@"
_DTYPE_CODES = frozenset(
    {"b1", "?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}
)
_BYTE_ORDERS = {"<": "<", ">": ">", "|": "|", "=": "="}


def _resave_hint() -> str:
    return (
        "If you trust the file, load it with paddle.load on a machine you trust and re-save only the "
        "weights with paddle.save(model.state_dict(), path), then use that file."
    )


# --------------------------------------------------------------------------------------
# Stand-ins for the globals paddle.save writes
# --------------------------------------------------------------------------------------


class _PendingDtype:
    """``numpy.dtype(code, align, copy)`` from the file, resolved only by :meth:`resolve`.

    The pickle's BUILD state may set the byte order; names, fields and sub-arrays (which
    could describe object or structured dtypes) are refused.
    """

    __slots__ = ("code", "order")

    def __init__(self, code: str) -> None:
        self.code = code
        self.order = "="

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 5:
            raise ValueError(f"bad dtype state {str(state)[:80]}")
        order, subarray, names, fields = state[1], state[2], state[3], state[4]
        if order not in _BYTE_ORDERS or subarray is not None or names is not None or fields is not None:
            raise ValueError("structured or sub-array dtypes are not weights")
        self.order = order

    def resolve(self) -> np.dtype:
        """The real NumPy dtype, built from the checked code and byte order."""
        dtype = np.dtype(self.code)
        return dtype if self.order in ("|", "=") else dtype.newbyteorder(self.order)


def _dtype(code: Any, align: Any = False, copy: Any = False) -> _PendingDtype:
    """Stand-in for ``numpy.dtype``: numeric codes only."""
    if not isinstance(code, str) or code not in _DTYPE_CODES:
        raise ValueError(f"dtype {str(code)[:40]!r} is not a numeric array dtype")
    return _PendingDtype(code)


class _NDArrayType:
    """Stand-in for the ``numpy.ndarray`` class: only ``_reconstruct`` may use it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("numpy.ndarray may only be rebuilt from its pickled state")


_NDARRAY = _NDArrayType()


class _PendingArray:
    """An array announced by ``_reconstruct``; its checked data arrive with BUILD."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise ValueError("bad array state")
        version, shape, dtype, is_fortran, raw = state
        if type(version) is not int or not isinstance(dtype, _PendingDtype):
            raise ValueError("array dtype must come from numpy.dtype")
        if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
            raise ValueError(f"bad array shape {str(shape)[:80]}")
        if not isinstance(raw, (bytes, bytearray)):
            raise ValueError("array data must be raw bytes (object arrays are not weights)")
        real = dtype.resolve()
        expected = math.prod(shape) * real.itemsize
        if len(raw) != expected:
            raise ValueError(f"array of shape {shape} and dtype {real} needs {expected} bytes, the file holds {len(raw)}")
        array = np.empty((0,), dtype=np.uint8)
        array.__setstate__((version, shape, real, bool(is_fortran), raw))
        self.array = array


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _PendingArray:
    """Stand-in for ``numpy._core.multiarray._reconstruct``."""
    if cls is not _NDARRAY:
        raise ValueError("_reconstruct may only rebuild numpy.ndarray")
    return _PendingArray()


def _scalar(dtype: Any, data: Any = None) -> np.generic:
    """Stand-in for ``numpy._core.multiarray.scalar``: a numeric scalar from its bytes."""
    if not isinstance(dtype, _PendingDtype) or not isinstance(data, (bytes, bytearray)):
        raise ValueError("bad numpy scalar")
    real = dtype.resolve()
    if len(data) != real.itemsize:
        raise ValueError(f"numpy {real} scalar needs {real.itemsize} bytes, got {len(data)}")
    return np.frombuffer(bytes(data), dtype=real)[0]


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode`` (protocol 2 writes bytes as latin-1 text)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("only latin-1 byte strings can be decoded")
    return text.encode("latin-1")


def _tuple(items: Any = ()) -> tuple:
    """Stand-in for ``builtins.tuple``."""
    if not isinstance(items, (tuple, list)):
        raise ValueError("tuple() of a non-sequence")
    return tuple(items)


def _dense_tensor(expression: Any, namespace: Any = None, *rest: Any) -> Any:
    """Stand-in for the ``eval("data", {"data": array})`` Paddle writes for a DenseTensor."""
    if expression != "data" or rest or not isinstance(namespace, dict) or set(namespace) != {"data"}:
        raise UnsafePickleError("the checkpoint's pickle calls eval with an expression of its own")
    return namespace["data"]


class GeneratorStateRecord:
    """A Paddle random-generator state read from a file, as inert integers.

    ``state`` is ``(device, seed, offset, bytes_as_ints)``; turn it back into Paddle's
    ``GeneratorState`` with :func:`restore_generator_state`.
    """

    __slots__ = ("state",)

    def __init__(self, state: tuple | None = None) -> None:
        self.state = state

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 4 and all(type(v) is int for v in state[:3])
                and isinstance(state[3], list) and all(type(v) is int and 0 <= v < 256 for v in state[3])):
            raise ValueError("bad random-generator state")
        self.state = state


def restore_generator_state(record: Any) -> Any:
    """A Paddle ``GeneratorState`` from a :class:`GeneratorStateRecord` (others pass through)."""
    if not isinstance(record, GeneratorStateRecord):
        return record
    import paddle

    kind = type(paddle.get_rng_state()[0])
    state = kind.__new__(kind)
    state.__setstate__(record.state)
    return state


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): _NDARRAY,
    ("_codecs", "encode"): _encode,
    ("builtins", "tuple"): _tuple,
    ("__builtin__", "tuple"): _tuple,
    ("builtins", "eval"): _dense_tensor,
    ("__builtin__", "eval"): _dense_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("paddle.base.libpaddle", "GeneratorState"): GeneratorStateRecord,
    ("paddle.fluid.libpaddle", "GeneratorState"): GeneratorStateRecord,
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy._core.multiarray", "numpy.core.multiarray")},
    **{(module, "scalar"): _scalar for module in ("numpy._core.multiarray", "numpy.core.multiarray")},
}


# --------------------------------------------------------------------------------------
# Post-processing (what paddle.load does after unpickling)
# --------------------------------------------------------------------------------------


def _settle(obj: Any, seen: dict[int, Any]) -> Any:
    """Replace every :class:`_PendingArray` by its array, rebuilding tuples that hold one."""
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise ValueError("an array was announced but never given its data")
        return obj.array
    key = id(obj)
    if key in seen:
        return seen[key]
    if type(obj) in (dict, collections.OrderedDict):
        seen[key] = obj
        for k in list(obj):
            obj[k] = _settle(obj[k], seen)
    elif type(obj) is list:
        seen[key] = obj
        obj[:] = [_settle(v, seen) for v in obj]
    elif type(obj) is tuple:
        seen[key] = obj  # provisional: a tuple cannot contain itself
        seen[key] = tuple(_settle(v, seen) for v in obj)
        return seen[key]
    elif isinstance(obj, _PendingDtype):
        raise ValueError("a dtype outside an array")
    return obj


def _join_big_parameters(result: dict) -> None:
    """Join parameters that ``paddle.save`` split into ``<key>@@.<i>`` slices."""
    table = result.pop(_BIG_PARAM_TABLE)
    if not isinstance(table, dict):
        raise ValueError(f"{_BIG_PARAM_TABLE} is not a table")
    for key, info in table.items():
        slices = info.get("slices") if isinstance(info, dict) else None
        shape = info.get("OriginShape") if isinstance(info, dict) else None
        if not isinstance(slices, list) or not all(isinstance(s, str) and isinstance(result.get(s), np.ndarray) for s in slices):
            raise ValueError(f"slices of parameter {key!r} are missing")
        if not isinstance(shape, (tuple, list)) or not all(type(n) is int and n >= 0 for n in shape):
            raise ValueError(f"bad shape of parameter {key!r}")
        joined = np.concatenate([result.pop(s).reshape(-1) for s in slices])
        if joined.size != math.prod(shape):
            raise ValueError(f"slices of parameter {key!r} do not fill its shape {tuple(shape)}")
        result[key] = joined.reshape(shape)


def _is_named_tensor(obj: Any) -> bool:
    return type(obj) is tuple and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], np.ndarray)


def _contains(obj: Any, test: Any) -> bool:
    if test(obj):
        return True
    if type(obj) in (dict, collections.OrderedDict):
        return any(_contains(v, test) for v in obj.values())
    if type(obj) in (list, tuple):
        return any(_contains(v, test) for v in obj)
    return False


def _convert(obj: Any, test: Any, convert: Any) -> Any:
    if test(obj):
        return convert(obj)
    if type(obj) in (dict, collections.OrderedDict):
        for k in list(obj):
            obj[k] = _convert(obj[k], test, convert)
    elif type(obj) is list:
        obj[:] = [_convert(v, test, convert) for v in obj]
    return obj


def _to_tensor(array: np.ndarray, name: str | None = None) -> Any:
    import paddle

    tensor = paddle.to_tensor(array)
    if name:
        tensor.name = name
    return tensor


def _as_paddle_load_returns(result: Any, return_numpy: bool) -> Any:
    """Post-process an unpickled object the way ``paddle.load`` does."""
    if isinstance(result, dict):
        if _BIG_PARAM_TABLE in result:
            _join_big_parameters(result)
        if _NAME_TABLE in result:
            names = result.pop(_NAME_TABLE)
            if not isinstance(names, dict):
                raise ValueError(f"{_NAME_TABLE} is not a table")
            if not return_numpy:
                for key, name in names.items():
                    if isinstance(result.get(key), np.ndarray):
                        result[key] = _to_tensor(result[key], name if isinstance(name, str) else None)
            return result
    if return_numpy:
        return _convert(result, _is_named_tensor, lambda t: t[1])
    if _contains(result, _is_named_tensor):
        return _convert(result, _is_named_tensor, lambda t: _to_tensor(t[1], t[0]))
    return _convert(result, lambda v: isinstance(v, np.ndarray), _to_tensor)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def _check_file(path: Path) -> bytes:
    """Refuse a missing, empty or zip file; return the file's first byte."""
    if not path.exists():
        raise UserError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: checkpoint file is empty (an interrupted download or save?)")
    if zipfile.is_zipfile(path):
        raise UserError(f"{path} is a zip archive (a PyTorch checkpoint?), not a paddle.save file: give it a .pth ending")
    with open(path, "rb") as fh:
        return fh.read(1)


def load_paddle(path: str | os.PathLike[str], return_numpy: bool = False) -> Any:
    """Read a ``paddle.save`` file without importing or running anything from it.

    Args:
        path: a ``.pdparams``/``.pdopt``/``.pdstates`` (or any ``paddle.save``) file.
        return_numpy: return arrays as ``numpy.ndarray`` instead of ``paddle.Tensor``.
    Returns:
        what ``paddle.load(path, return_numpy=...)`` returns for a genuine file: dicts,
        lists, tuples, scalars, arrays or tensors; random-generator states come back as
        :class:`GeneratorStateRecord` (see :func:`restore_generator_state`).
    Raises:
        UnsafePickleError: the pickle names anything outside the allow-list (nothing of it
            was imported or called).
        UserError: a missing, empty, truncated or malformed file, naming it.
    """
    path = Path(path)
    first = _check_file(path)

    def refuse(what: str) -> UnsafePickleError:
        return UnsafePickleError(
            f"{path}: refusing to load this checkpoint: its pickle references `{what}`, which is not among "
            f"the arrays and containers paddle.save writes; nothing from the file was imported or run. "
            + _resave_hint()
        )

    def corrupt(exc: Exception) -> UserError:
        if first != b"\x80":  # paddle.save always writes pickle protocol 2-4, which starts so
            return UserError(
                f"{path}: not a paddle.save checkpoint ({type(exc).__name__}: {exc}); static-graph and binary "
                "tensor formats are not read: save the weights with paddle.save(model.state_dict(), path)"
            )
        return UserError(f"{path}: truncated or corrupt checkpoint ({type(exc).__name__}: {exc}); re-save or re-download it")

    with open(path, "rb") as fh:
        raw = unpickle_with_allow_list(fh, _ALLOWED, refuse, corrupt)
    try:
        return _as_paddle_load_returns(_settle(raw, {}), return_numpy)
    except (ValueError, TypeError) as exc:
        raise corrupt(exc) from None
