"""Read and write PyTorch ``.pth`` checkpoints without torch and without running their code.

``torch.save`` (torch >= 1.6) writes a zip archive::

    <prefix>/data.pkl       pickle (protocol 2) of the saved object; tensors are
                            ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``
                            calls whose storages are pickle *persistent ids*
    <prefix>/data/<key>     raw bytes of each storage
    <prefix>/byteorder      "little" or "big" (absent in old files: little)
    <prefix>/version        format version ("3")

A pickle can name any importable callable and call it, so unpickling an untrusted
checkpoint with plain ``pickle``/``torch.load`` can run arbitrary code. :func:`load_pth`
therefore unpickles with an allow-list: only the few torch names needed to rebuild dense
tensors, ``collections.OrderedDict`` and plain pickle data (dict, list, tuple, str, int,
float, bool, None) are accepted. Every other global is refused *before* it is imported,
with :class:`UnsafePickleError` (the allow-list unpickler of :mod:`utils.safe_pickle`, shared
with the Paddle checkpoint reader). Tensors come back as contiguous ``numpy.ndarray``.

Notes:
    * ``bfloat16`` has no numpy dtype: such tensors are converted to ``float32`` (exact, as
      bfloat16 is the upper half of a float32).
    * ``bool`` tensors come back as ``numpy.bool_``; any non-zero byte is ``True``.
    * Quantized or sparse tensors, tensor subclasses, pickled modules/optimizers and the
      legacy (pre-1.6, non-zip) format are not supported: re-save the weights with
      ``torch.save(model.state_dict(), path)``.
    * The one pickled object admitted is ``argparse.Namespace`` (the training arguments that
      timm-style training checkpoints carry under ``args``): it comes back as an inert
      :class:`utils.safe_pickle.InertRecord` of its fields; the class itself is never imported
      or called.

Memory limits (a small file must not be able to ask for huge memory):
    * Every zip record is checked *before* it is read: a storage record must declare exactly
      ``numel * itemsize`` uncompressed bytes, ``byteorder`` at most 16 bytes; records are
      then read in chunks that never exceed the declared size. Only stored (what torch
      writes) and deflated records are accepted: zipfile cannot bound the output of its
      bzip2/lzma decompressors, so those are refused.
    * One budget per load ties everything allocated for the file's contents to the bytes
      really in the file: the declared uncompressed sizes of the records read (``data.pkl``
      and each storage) plus the bytes of every rebuilt array may total at most
      ``16 x file size + 64 MiB``. Each amount is charged before it is read or allocated;
      exceeding the budget raises :class:`UserError` ("malformed or malicious"). A genuine
      torch file needs about 2x its size (records once, arrays once; bfloat16 -> float32,
      tensors sharing a storage and broadcast views add a little); 16x leaves ample room
      for that and for a deflate-recompressed archive, while a zip bomb (a 1 MB deflated
      record declaring GBs) or a stride-0 view of a one-element storage (a 600-byte file
      asking for a 20000 x 20000 array) is refused with nothing allocated. The rule is on
      the total rather than "no view larger than its storage" because genuine torch files
      hold broadcast views (``expand``: stride 0) larger than their storage, and because
      many views of one large storage would otherwise still multiply memory.

:func:`save_pth` writes numpy arrays (in nested dicts/lists/tuples) in the same format,
readable by ``torch.load(path, weights_only=True)``; :func:`extract_state_dict` pulls the
name -> array mapping out of a loaded checkpoint.
"""
from __future__ import annotations

import argparse
import collections
import io
import math
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from utils.errors import UserError
from utils.safe_pickle import AllowListUnpickler, InertRecord, UnsafePickleError, record_type, refuse_extension_opcodes

__all__ = ["UnsafePickleError", "load_pth", "save_pth", "extract_state_dict", "select_weights"]

_RESAVE_HINT = (
    "If you trust the file, load it once with torch and re-save only the weights with "
    "`torch.save(model.state_dict(), path)`, then use that file."
)

# Keys under which training checkpoints commonly keep the weights, in order of preference.
_STATE_DICT_KEYS = ("state_dict", "model", "state_dict_ema")


# --------------------------------------------------------------------------------------
# Storage types
# --------------------------------------------------------------------------------------


class _StorageType:
    """Stand-in for a ``torch.<Name>Storage`` class: remembers the element dtype.

    Attributes:
        name: torch class name, e.g. ``"FloatStorage"``.
        dtype: numpy dtype of the raw little-endian elements (``bfloat16`` is read as
            ``uint16`` and ``bool`` as ``uint8``, then converted, see ``convert``).
        convert: applied to the rebuilt array (bfloat16 -> float32, bytes -> bool), or None.
        out_itemsize: bytes per element of the rebuilt array (after ``convert``).
    """

    __slots__ = ("name", "dtype", "convert", "out_itemsize")

    def __init__(
        self,
        name: str,
        dtype: str,
        convert: Callable[[np.ndarray], np.ndarray] | None = None,
        out_itemsize: int | None = None,
    ):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", np.dtype(dtype))
        object.__setattr__(self, "convert", convert)
        object.__setattr__(self, "out_itemsize", out_itemsize or np.dtype(dtype).itemsize)

    def __setattr__(self, key: str, value: Any) -> None:  # BUILD opcodes cannot alter it
        raise UnsafePickleError("checkpoint pickle tried to modify a storage type")

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError("checkpoint pickle tried to modify a storage type")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError(f"checkpoint pickle tried to call torch.{self.name}")

    def __repr__(self) -> str:
        return f"torch.{self.name}"


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32 (exact: bfloat16 is the top half of float32)."""
    wide = raw.astype(np.uint32)
    wide <<= 16  # in place: one float32-sized buffer, not two
    return wide.view(np.float32)


def _bytes_to_bool(raw: np.ndarray) -> np.ndarray:
    """uint8 bytes -> bool (non-zero is True), so no invalid numpy bools are ever created."""
    return raw != 0


_STORAGE_TYPES: dict[str, _StorageType] = {
    t.name: t
    for t in (
        _StorageType("FloatStorage", "<f4"),
        _StorageType("DoubleStorage", "<f8"),
        _StorageType("HalfStorage", "<f2"),
        _StorageType("BFloat16Storage", "<u2", _bf16_to_f32, out_itemsize=4),
        _StorageType("LongStorage", "<i8"),
        _StorageType("IntStorage", "<i4"),
        _StorageType("ShortStorage", "<i2"),
        _StorageType("CharStorage", "i1"),
        _StorageType("ByteStorage", "u1"),
        _StorageType("BoolStorage", "u1", _bytes_to_bool),
    )
}

# numpy dtype (kind + itemsize) -> storage type written by save_pth
_SAVE_STORAGE: dict[str, str] = {
    "f4": "FloatStorage",
    "f8": "DoubleStorage",
    "f2": "HalfStorage",
    "i8": "LongStorage",
    "i4": "IntStorage",
    "i2": "ShortStorage",
    "i1": "CharStorage",
    "u1": "ByteStorage",
    "b1": "BoolStorage",
}


_EXPANSION_FACTOR = 16
"""A load may allocate at most this many times the file's size (plus the slack below)."""
_EXPANSION_SLACK = 64 << 20
"""Bytes every load may use on top of ``_EXPANSION_FACTOR x file size`` (small files)."""
_READ_CHUNK = 16 << 20
"""Records are decompressed in pieces of at most this many bytes."""


class _MemoryBudget:
    """The bytes one :func:`load_pth` call may still allocate for the file's contents.

    Charged with each record's declared uncompressed size before reading it and with each
    rebuilt array's size before allocating it; see the module docstring.
    """

    __slots__ = ("path", "file_size", "limit", "used")

    def __init__(self, path: Path, file_size: int):
        """Args: path: the checkpoint (for messages); file_size: its size in bytes."""
        self.path = path
        self.file_size = file_size
        self.limit = _EXPANSION_FACTOR * file_size + _EXPANSION_SLACK
        self.used = 0

    def charge(self, nbytes: int, what: str) -> None:
        """Reserve ``nbytes`` for ``what``; raise :class:`UserError` if over the limit."""
        if self.used + nbytes > self.limit:
            raise UserError(
                f"{self.path}: refusing to load this checkpoint: it is malformed or malicious: "
                f"{what} would need {nbytes:,} bytes, but a {self.file_size:,}-byte checkpoint may "
                f"expand to at most {self.limit:,} bytes in all ({_EXPANSION_FACTOR} x its size + "
                f"{_EXPANSION_SLACK >> 20} MiB; {self.used:,} already used). It was refused before "
                f"that memory was allocated and nothing from the file was run. A genuine torch.save "
                f"file never needs this much: check where the file came from."
            )
        self.used += nbytes


class _Storage:
    """A storage read from ``data/<key>``: a flat read-only array of ``stype`` elements,
    with the load's memory budget (charged by every tensor built from it)."""

    __slots__ = ("stype", "array", "budget")

    def __init__(self, stype: _StorageType, array: np.ndarray, budget: _MemoryBudget):
        object.__setattr__(self, "stype", stype)
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "budget", budget)

    def __setattr__(self, key: str, value: Any) -> None:
        raise UnsafePickleError("checkpoint pickle tried to modify a tensor storage")

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError("checkpoint pickle tried to modify a tensor storage")


# --------------------------------------------------------------------------------------
# Tensor rebuilding (the allowed callables)
# --------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(_is_int(v) for v in x):
        raise ValueError(f"tensor {what} must be a tuple of ints, got {x!r}")
    return tuple(x)


def _build_array(storage: Any, storage_offset: Any, size: Any, stride: Any) -> np.ndarray:
    """Materialize a tensor view of ``storage`` as a contiguous numpy array.

    Args:
        storage: a :class:`_Storage` produced by ``persistent_load``.
        storage_offset: offset of the first element, in elements.
        size: shape.
        stride: strides in elements (non-negative; 0 for broadcast dimensions).
    Returns:
        a new C-contiguous, writable array (bfloat16 -> float32, bool as ``np.bool_``).
    Raises:
        ValueError: malformed arguments or a view reaching outside the storage.
        UserError: the array would exceed the load's memory budget (checked before
            anything is allocated).
    """
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor storage must come from a persistent id, got {type(storage).__name__}")
    size = _int_tuple(size, "size")
    stride = _int_tuple(stride, "stride")
    if not _is_int(storage_offset) or storage_offset < 0:
        raise ValueError(f"bad tensor storage offset {storage_offset!r}")
    if len(size) != len(stride):
        raise ValueError(f"tensor size {size} and stride {stride} differ in length")
    if any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise ValueError(f"negative tensor size/stride {size} / {stride}")
    flat = storage.array
    if 0 not in size:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.shape[0]:
            raise ValueError(
                f"tensor view (offset {storage_offset}, size {size}, stride {stride}) reaches "
                f"element {last} of a storage holding {flat.shape[0]}"
            )
    # Python ints: no overflow. Charged before allocating (stride-0 views can ask for far
    # more elements than the storage holds).
    storage.budget.charge(
        math.prod(size) * storage.stype.out_itemsize,
        f"a tensor of shape {str(size)[:80]} ({storage.stype.name}, strides {str(stride)[:80]})",
    )
    if 0 in size:
        out = np.empty(size, dtype=flat.dtype)
    else:
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[storage_offset:],
            shape=size,
            strides=tuple(s * item for s in stride),
            writeable=False,
        )
        out = np.array(view, order="C", copy=True)
    if storage.stype.convert is not None:
        out = storage.stype.convert(out)
    return out.astype(out.dtype.newbyteorder("="), copy=False)  # C order kept; 0-d stays 0-d


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``; autograd fields are ignored."""
    return _build_array(storage, storage_offset, size, stride)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> np.ndarray:
    """Stand-in for the older ``torch._utils._rebuild_tensor``."""
    return _build_array(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> np.ndarray:
    """Stand-in for ``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is its data."""
    if not isinstance(data, np.ndarray):
        raise ValueError(f"nn.Parameter data must be a tensor, got {type(data).__name__}")
    return data


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None
) -> np.ndarray:
    """Stand-in for ``torch._utils._rebuild_parameter_with_state``; the extra state is dropped."""
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): stype for name, stype in _STORAGE_TYPES.items()},
    # training checkpoints' ``args``: rebuilt as an inert record of its fields (NEWOBJ + BUILD)
    ("argparse", "Namespace"): record_type("argparse.Namespace"),
}

def _refusal(path: Path, what: str) -> UnsafePickleError:
    hint = ""
    if what.startswith("torch"):
        hint = (
            " (only dense tensors of standard dtypes are supported: not quantized/sparse "
            "tensors, tensor subclasses or pickled modules)"
        )
    return UnsafePickleError(
        f"{path}: refusing to load this checkpoint: its pickle references `{what}`, which is "
        f"not on the allow-list of tensor and container constructors{hint}; loading it would "
        f"import and possibly execute code from the file. {_RESAVE_HINT}"
    )


def _storage_loader(path: Path, read_storage: Callable[[str, _StorageType, int], _Storage]) -> Callable[[Any], _Storage]:
    """The persistent-id handler of a torch pickle: ``("storage", type, key, location, numel)``
    ids become storages read by ``read_storage``; any other id is refused."""

    def persistent_load(pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise UnsafePickleError(
                f"{path}: refusing to load this checkpoint: unsupported pickle persistent id "
                f"{str(kind)[:60]!r} (only tensor storages are allowed). {_RESAVE_HINT}"
            )
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise UserError(f"{path}: corrupt checkpoint: storage type {stype!r} is not a torch storage")
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise UserError(f"{path}: corrupt checkpoint: bad storage id {str(pid)[:120]}")
        return read_storage(key, stype, numel)

    return persistent_load


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _find_data_pkl(zf: zipfile.ZipFile, path: Path) -> str:
    """Return ``<prefix>`` such that ``<prefix>/data.pkl`` is in the archive."""
    names = zf.namelist()
    prefixes = [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(prefixes) == 1:
        prefix = prefixes[0]
        if f"{prefix}/constants.pkl" in names or any(n.startswith(f"{prefix}/code/") for n in names):
            raise UserError(
                f"{path}: this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint "
                f"(its code is not supported). {_RESAVE_HINT}"
            )
        return prefix
    if not prefixes:
        raise UserError(
            f"{path}: not a torch.save checkpoint: the zip archive has no <folder>/data.pkl "
            f"(entries: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
        )
    raise UserError(f"{path}: ambiguous checkpoint: several data.pkl files ({', '.join(prefixes)})")


def _check_not_legacy(path: Path) -> None:
    """Raise a UserError for a missing/empty/non-zip file; never unpickles anything."""
    if not path.exists():
        raise UserError(f"{path}: checkpoint file not found")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise UserError(f"{path}: checkpoint file is empty")
    if zipfile.is_zipfile(path):
        return
    if head.startswith(b"PK"):
        raise UserError(f"{path}: truncated or corrupt checkpoint: the zip archive cannot be read")
    raise UserError(
        f"{path}: legacy/non-zip checkpoint: re-save it with torch >= 1.6 (default zip format), "
        f"e.g. `torch.save(torch.load(path), path2)` on a machine you trust. This reader does not "
        f"unpickle raw pickle files, which could execute code."
    )


_COMPRESSION_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


def _record_info(zf: zipfile.ZipFile, name: str, path: Path) -> zipfile.ZipInfo:
    """The zip entry ``name``, refused unless stored or deflated (see module docstring)."""
    info = zf.getinfo(name)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        method = _COMPRESSION_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise UserError(
            f"{path}: refusing to load this checkpoint: record {name} is {method}-compressed; "
            f"torch.save writes records uncompressed, and the size of {method} output cannot "
            f"be bounded while reading. Re-save the weights with torch.save, or re-zip the "
            f"archive without compression (zip -0)."
        )
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise UserError(
            f"{path}: corrupt checkpoint: stored record {name} declares {info.file_size} bytes "
            f"but holds {info.compress_size}"
        )
    return info


def _read_record(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytearray:
    """Read exactly ``info.file_size`` bytes of a record, decompressing at most
    :data:`_READ_CHUNK` bytes at a time (zipfile stops at the declared size and checks the
    CRC when it gets there). The caller has checked and charged the declared size."""
    out = bytearray(info.file_size)
    view = memoryview(out)
    pos = 0
    with zf.open(info) as fh:
        while pos < len(out):
            chunk = fh.read(min(_READ_CHUNK, len(out) - pos))
            if not chunk:
                break
            view[pos: pos + len(chunk)] = chunk
            pos += len(chunk)
    if pos != len(out):
        raise UserError(
            f"{path}: truncated or corrupt checkpoint: record {info.filename} holds {pos} bytes, "
            f"its header declares {len(out)}"
        )
    return out


def load_pth(path: str | os.PathLike[str]) -> Any:
    """Load a ``torch.save`` zip checkpoint safely, tensors as numpy arrays.

    Args:
        path: a ``.pth``/``.pt``/``.ckpt`` file written by ``torch.save`` (torch >= 1.6).
    Returns:
        the saved object: dicts, ``OrderedDict``, lists, tuples, str, int, float, bool, None,
        and tensors / ``nn.Parameter`` as C-contiguous ``numpy.ndarray`` (bfloat16 ->
        float32). Tensors sharing a storage become independent copies.
    Raises:
        UnsafePickleError: the pickle references a global outside the allow-list (nothing
            outside the allow-list is imported or called).
        UserError: missing/empty file, legacy or non-zip format (never unpickled), no
            ``data.pkl``, truncated or corrupt archive or pickle; a bzip2/lzma-compressed
            record; contents that would need more memory than the file can justify
            (``16 x file size + 64 MiB``, see the module docstring), refused before reading
            or allocating it.
    """
    path = Path(path)
    _check_not_legacy(path)
    try:
        budget = _MemoryBudget(path, path.stat().st_size)
        with zipfile.ZipFile(path) as zf:
            prefix = _find_data_pkl(zf, path)
            names = set(zf.namelist())
            byteorder = "little"
            if f"{prefix}/byteorder" in names:
                info = _record_info(zf, f"{prefix}/byteorder", path)
                if info.file_size > 16:
                    raise UserError(
                        f"{path}: corrupt checkpoint: {info.filename} declares {info.file_size} "
                        f"bytes (expected 'little' or 'big')"
                    )
                byteorder = _read_record(zf, info, path).decode("ascii", "replace").strip()
                if byteorder not in ("little", "big"):
                    raise UserError(f"{path}: corrupt checkpoint: unknown byteorder {byteorder!r}")
            info = _record_info(zf, f"{prefix}/data.pkl", path)
            budget.charge(info.file_size, f"the pickle record {info.filename}")
            data = bytes(_read_record(zf, info, path))
            refuse_extension_opcodes(  # torch never writes EXT opcodes: refused outright
                data, lambda what: _refusal(path, what),
                lambda exc: UserError(f"{path}: corrupt checkpoint: data.pkl is not a valid pickle ({exc})"),
            )

            cache: dict[tuple[str, str], _Storage] = {}

            def read_storage(key: str, stype: _StorageType, numel: int) -> _Storage:
                hit = cache.get((key, stype.name))
                if hit is not None:
                    return hit
                name = f"{prefix}/data/{key}"
                if name not in names:
                    raise UserError(f"{path}: corrupt checkpoint: storage record {name} is missing")
                info = _record_info(zf, name, path)
                dtype = stype.dtype if byteorder == "little" else stype.dtype.newbyteorder(">")
                if info.file_size != numel * dtype.itemsize:  # checked before reading anything
                    raise UserError(
                        f"{path}: corrupt checkpoint: {name} declares {info.file_size} bytes, "
                        f"expected {numel} x {dtype.itemsize} for {stype.name}"
                    )
                budget.charge(info.file_size, f"storage record {name}")
                arr = np.frombuffer(_read_record(zf, info, path), dtype=dtype)
                arr.flags.writeable = False
                storage = cache[(key, stype.name)] = _Storage(stype, arr, budget)
                return storage

            unpickler = AllowListUnpickler(
                io.BytesIO(data), _ALLOWED_GLOBALS, lambda what: _refusal(path, what),
                _storage_loader(path, read_storage), encoding="utf-8",
            )
            return unpickler.load()
    except UserError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise UserError(f"{path}: truncated or corrupt checkpoint ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # malformed pickle, bad tensor arguments, damaged entries
        raise UserError(
            f"{path}: corrupt checkpoint: cannot rebuild its contents ({type(exc).__name__}: {exc})"
        ) from exc


# --------------------------------------------------------------------------------------
# State dict extraction
# --------------------------------------------------------------------------------------


def extract_state_dict(obj: Any) -> "collections.OrderedDict[str, np.ndarray]":
    """Return the ``name -> array`` weights held by a loaded checkpoint.

    Args:
        obj: what :func:`load_pth` returned: a raw state dict, or a training checkpoint dict
            holding one under ``"state_dict"``, ``"model"`` or ``"state_dict_ema"`` (tried in
            that order, recursively, when the value is a dict).
    Returns:
        an ``OrderedDict`` of the string-keyed array entries, in file order; other entries
        (``epoch``, optimizer settings, ...) are skipped. Key prefixes such as ``module.``
        are kept as they are.
    Raises:
        UserError: ``obj`` is not a dict or holds no arrays.
    """
    if not isinstance(obj, dict):
        raise UserError(f"checkpoint holds a {type(obj).__name__}, not a dict of tensors (state dict)")
    for key in _STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict):
            return extract_state_dict(inner)
    out: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict(
        (k, v) for k, v in obj.items() if isinstance(k, str) and isinstance(v, np.ndarray)
    )
    if not out:
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise UserError(
            f"checkpoint holds no tensors (top-level keys: {keys or 'none'}); expected a state dict "
            f"or a dict with one of {', '.join(_STATE_DICT_KEYS)}"
        )
    return out


# What the other top-level entries of a training checkpoint (timm's train.py and the like) hold.
_TRAINING_ENTRIES = {
    "optimizer": "optimizer state",
    "amp_scaler": "AMP loss-scaler state",
    "args": "training arguments",
    "state_dict_ema": "EMA copy of the weights",
    "model_ema": "EMA copy of the weights",
}


def select_weights(obj: Any, use_ema: bool = False) -> "tuple[collections.OrderedDict[str, np.ndarray], list[str]]":
    """The weights of a loaded checkpoint, and one line per training entry left out.

    Args:
        obj: what :func:`load_pth` returned: a state dict or a training checkpoint (a dict with
            ``state_dict`` and e.g. ``state_dict_ema``, ``optimizer``, ``args``, ``amp_scaler``,
            ``epoch``, ``metric``).
        use_ema: take the EMA copy (``state_dict_ema``) instead of ``state_dict``.
    Returns:
        ``(weights, notes)``: the name -> array mapping (as :func:`extract_state_dict`), and, for
        a training checkpoint, a line naming the entry used and one per dropped entry. A plain
        state dict gives no notes.
    Raises:
        UserError: ``use_ema`` without an EMA copy in the file, or no weights (see
        :func:`extract_state_dict`).
    """
    ema_keys = [k for k in ("state_dict_ema", "model_ema") if isinstance(obj, dict) and isinstance(obj.get(k), dict)]
    if use_ema and not ema_keys:
        keys = ", ".join(repr(k) for k in list(obj)[:8]) if isinstance(obj, dict) else type(obj).__name__
        raise UserError(f"--use_ema: the checkpoint holds no EMA copy of the weights (state_dict_ema); top-level keys: {keys}")
    if not isinstance(obj, dict) or not any(isinstance(obj.get(k), dict) for k in _STATE_DICT_KEYS):
        return extract_state_dict(obj), []
    used = ema_keys[0] if use_ema else next(k for k in _STATE_DICT_KEYS if isinstance(obj.get(k), dict))
    weights = extract_state_dict(obj[used])
    info = ", ".join(f"{k} {obj[k]!r}" for k in ("arch", "epoch") if isinstance(obj.get(k), (str, int)))
    notes = [f"weights: '{used}' of a training checkpoint" + (f" ({info})" if info else "")]
    for key, value in obj.items():
        if key == used:
            continue
        what = _TRAINING_ENTRIES.get(key) if isinstance(key, str) else None
        if key in ema_keys and not use_ema:
            notes.append(f"dropped '{key}': {what} (pass --use_ema to take it instead)")
        elif key in ("state_dict", "model") and use_ema:
            notes.append(f"dropped '{key}': the trained (non-EMA) weights")
        elif isinstance(value, InertRecord):
            notes.append(f"dropped '{key}': {what or 'a record'} ({value.pickled_name}, read as an inert record, nothing run)")
        elif what:
            notes.append(f"dropped '{key}': {what}")
    return weights, notes


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------


class _GlobalRef:
    """A name the writer emits as a pickle ``GLOBAL`` opcode without importing it."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str):
        self.module = module
        self.name = name

    def __call__(self, *args: Any) -> Any:  # save_reduce requires a callable
        raise TypeError(f"{self.module}.{self.name} is only a pickle reference")


_REBUILD_V2_REF = _GlobalRef("torch._utils", "_rebuild_tensor_v2")
_STORAGE_REFS = {name: _GlobalRef("torch", name) for name in _STORAGE_TYPES}


class _StorageRef:
    """One storage to write: ``data/<key>`` with the bytes of a contiguous little-endian array."""

    __slots__ = ("key", "stype", "array")

    def __init__(self, key: str, stype: str, array: np.ndarray):
        self.key = key
        self.stype = stype
        self.array = array


class _TorchPickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Pure-Python pickler writing numpy arrays the way torch pickles tensors (protocol 2).

    Each array becomes ``torch._utils._rebuild_tensor_v2(<persistent storage id>, 0, shape,
    stride, False, OrderedDict())``; the storage id is ``("storage", torch.<T>Storage, key,
    "cpu", numel)``, exactly what ``torch.save`` emits.
    """

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: io.BytesIO):
        super().__init__(file, protocol=2)
        self.storages: list[_StorageRef] = []

    def persistent_id(self, obj: Any) -> Any:  # noqa: D102
        if isinstance(obj, _StorageRef):
            return ("storage", _STORAGE_REFS[obj.stype], obj.key, "cpu", int(obj.array.size))
        return None

    def _save_global_ref(self, obj: _GlobalRef) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    def _save_array(self, arr: np.ndarray) -> None:
        stype = _SAVE_STORAGE[f"{arr.dtype.kind}{arr.dtype.itemsize}"]
        ref = _StorageRef(str(len(self.storages)), stype, arr)
        self.storages.append(ref)
        self.save_reduce(
            _REBUILD_V2_REF,
            (ref, 0, tuple(int(n) for n in arr.shape), _contiguous_strides(arr.shape), False, collections.OrderedDict()),
            obj=arr,
        )

    dispatch[_GlobalRef] = _save_global_ref
    dispatch[np.ndarray] = _save_array


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides in elements, as torch computes them (size-0 dims count as 1)."""
    strides: list[int] = []
    acc = 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(int(n), 1)
    return tuple(reversed(strides))


def _normalize(obj: Any, where: str, arrays: dict[int, np.ndarray]) -> Any:
    """Validate ``obj`` for :func:`save_pth`, returning a copy with arrays made contiguous
    little-endian and numpy scalars turned into Python scalars. Raises UserError otherwise."""
    if obj is None or type(obj) in (bool, int, float, str):  # exact: np.float64 is a float subclass
        return obj
    if isinstance(obj, np.ndarray):
        if id(obj) in arrays:
            return arrays[id(obj)]
        key = f"{obj.dtype.kind}{obj.dtype.itemsize}"
        if key not in _SAVE_STORAGE:
            raise UserError(
                f"save_pth: array {where} has dtype {obj.dtype}, which torch cannot store; "
                f"supported: float16/32/64, int8/16/32/64, uint8, bool"
            )
        # np.asarray (unlike ascontiguousarray) keeps 0-d arrays 0-d; drops subclasses
        arr = np.asarray(obj, dtype=obj.dtype.newbyteorder("<"), order="C").view(type=np.ndarray)
        arrays[id(obj)] = arr
        return arr
    if isinstance(obj, (np.bool_, np.integer, np.floating, np.str_)):
        return obj.item()  # a plain Python scalar: torch's weights_only loader rejects numpy scalars
    if type(obj) is argparse.Namespace:  # pickled as the class + its __dict__ (NEWOBJ, BUILD), as torch.save does
        return argparse.Namespace(**_normalize(dict(vars(obj)), f"{where} (Namespace)", arrays))
    if type(obj) in (dict, collections.OrderedDict):
        out = type(obj)()
        for k, v in obj.items():
            k2 = _normalize(k, f"{where}[{k!r}] (key)", arrays)
            if isinstance(k2, np.ndarray):
                raise UserError(f"save_pth: array used as a dict key {where}")
            out[k2] = _normalize(v, f"{where}[{k!r}]", arrays)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_normalize(v, f"{where}[{i}]", arrays) for i, v in enumerate(obj))
    raise UserError(
        f"save_pth: unsupported value of type {type(obj).__name__} at {where}; only dict, "
        f"OrderedDict, list, tuple, str, int, float, bool, None and numpy arrays can be saved"
    )


_ALIGN = 64


def _write_record(zf: zipfile.ZipFile, fh: Any, name: str, payload: bytes | memoryview) -> None:
    """Write one uncompressed zip entry whose data starts at a multiple of 64 bytes.

    Like torch's writer, the local header gets an ``FB`` extra field of padding.
    """
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = len(payload)
    zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # mirrors zipfile's own decision
    offset = fh.tell()
    fixed = 30 + len(name.encode("utf-8")) + 4 + (20 if zip64 else 0)
    pad = (-(offset + fixed)) % _ALIGN
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    with zf.open(info, "w", force_zip64=zip64) as dst:
        dst.write(payload)


def save_pth(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` as a torch zip checkpoint readable by ``torch.load(path, weights_only=True)``.

    Args:
        obj: nested dict / ``OrderedDict`` / list / tuple of numpy arrays, str, int, float,
            bool and None (numpy scalars are stored as Python numbers), and ``argparse.Namespace``
            of those (as training checkpoints hold their arguments; such a file needs
            ``weights_only=False`` in ``torch.load``). Arrays may be
            float16/32/64, int8/16/32/64, uint8 or bool; each becomes its own storage.
        path: output file (overwritten).
    Returns:
        None. The archive is laid out like torch's: ``archive/data.pkl`` (protocol 2),
        ``archive/byteorder`` ("little"), ``archive/data/0``, ``1``, ..., ``archive/version``
        ("3"), stored uncompressed with each record's data 64-byte aligned.
    Raises:
        UserError: unsupported value or dtype, or the file cannot be written.
    """
    path = Path(path)
    arrays: dict[int, np.ndarray] = {}
    clean = _normalize(obj, "obj", arrays)
    buf = io.BytesIO()
    pickler = _TorchPickler(buf)
    pickler.dump(clean)
    prefix = "archive"
    try:
        with open(path, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                _write_record(zf, fh, f"{prefix}/data.pkl", buf.getvalue())
                _write_record(zf, fh, f"{prefix}/byteorder", b"little")
                for ref in pickler.storages:
                    data = memoryview(ref.array.reshape(-1).view(np.uint8))
                    _write_record(zf, fh, f"{prefix}/data/{ref.key}", data)
                _write_record(zf, fh, f"{prefix}/version", b"3\n")
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write checkpoint ({exc})") from exc
