"""The allow-list unpickler behind every checkpoint reader (``.pth`` and Paddle files).

A pickle names importable callables and calls them, so plain ``pickle.load`` (and
``paddle.load`` / ``torch.load``, which use it) on a user's file can run any code.
:class:`AllowListUnpickler` resolves every global through one mapping of
``(module, name) -> stand-in``: the stand-ins are this project's own inert functions and
classes, and every other name is refused *before* it is imported. The refusal message is
the caller's (it knows the format and how to re-save a trusted file).

Extension-registry opcodes (``EXT1/2/4``) name globals through ``copyreg``; CPython resolves
them through ``find_class`` too, except for codes already cached in
``copyreg._extension_cache`` by an earlier unpickle in this process. Only in that case the
opcode stream is scanned first (:func:`refuse_extension_opcodes`); the cache is empty in a
normal process, so loading costs no extra pass.
"""
from __future__ import annotations

import copyreg
import io
import pickle
import pickletools
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Callable, Mapping

from utils.errors import UserError

__all__ = ["InertRecord", "UnsafePickleError", "AllowListUnpickler", "record_type", "refuse_extension_opcodes",
           "unpickle_with_allow_list"]

_EXT_OPCODES = {"EXT1", "EXT2", "EXT4"}


class UnsafePickleError(UserError):
    """A checkpoint's pickle asks for something outside the reader's allow-list."""


Refusal = Callable[[str], UnsafePickleError]
"""Builds the error for a refused name (``"module.name"`` or a description)."""


class AllowListUnpickler(pickle.Unpickler):
    """Unpickler whose globals come only from an allow-list of stand-ins.

    Args (constructor):
        file: binary file object positioned at the pickle.
        allowed: ``(module, name) -> object`` returned for that global.
        refuse: builds the exception raised for any other global.
        persistent_load: handler of persistent ids, or None to refuse them.
        encoding: how protocol-2 ``str`` of Python 2 pickles are decoded.
    """

    def __init__(
        self,
        file: IO[bytes],
        allowed: Mapping[tuple[str, str], Any],
        refuse: Refusal,
        persistent_load: Callable[[Any], Any] | None = None,
        encoding: str = "latin1",
    ) -> None:
        super().__init__(file, encoding=encoding)
        self._allowed = allowed
        self._refuse = refuse
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - see class doc
        obj = self._allowed.get((module, name))
        if obj is None:
            raise self._refuse(f"{module}.{name}")
        return obj

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        if self._persistent is None:
            raise self._refuse(f"a pickle persistent id ({str(pid)[:60]!r})")
        return self._persistent(pid)


def refuse_extension_opcodes(data: bytes | IO[bytes], refuse: Refusal, corrupt: Callable[[Exception], UserError]) -> None:
    """Raise ``refuse(...)`` if the pickle uses an extension-registry opcode.

    Args:
        data: the pickle bytes, or a seekable file positioned at it (rewound afterwards).
        refuse: builds the refusal for the global an EXT code names.
        corrupt: builds the error for a stream that is not a valid pickle.
    ``pickletools.genops`` only parses: it never imports or calls anything.
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    start = stream.tell()
    try:
        for op, arg, _pos in pickletools.genops(stream):
            if op.name in _EXT_OPCODES:
                target = copyreg._inverted_registry.get(arg)  # type: ignore[attr-defined]
                raise refuse(f"{target[0]}.{target[1]}" if target else f"pickle extension code {arg}")
    except UnsafePickleError:
        raise
    except Exception as exc:  # malformed opcode stream
        raise corrupt(exc) from None
    finally:
        stream.seek(start)


def extension_cache_in_use() -> bool:
    """Whether EXT opcodes could bypass ``find_class`` in this process (see module doc)."""
    return bool(copyreg._extension_cache)  # type: ignore[attr-defined]


def unpickle_with_allow_list(
    file: IO[bytes],
    allowed: Mapping[tuple[str, str], Any],
    refuse: Refusal,
    corrupt: Callable[[Exception], UserError],
    persistent_load: Callable[[Any], Any] | None = None,
) -> Any:
    """Unpickle ``file`` with only ``allowed`` globals; EXT opcodes refused.

    Args:
        file: seekable binary file positioned at the pickle.
        allowed, refuse, persistent_load: see :class:`AllowListUnpickler`.
        corrupt: builds the error for a malformed pickle or a stand-in's rejection
            (``ValueError``/``TypeError`` and the like raised while rebuilding).
    Returns:
        the unpickled object (built only from the stand-ins and plain pickle data).
    Raises:
        UnsafePickleError: a global outside the allow-list (nothing of it was imported).
        UserError: from ``corrupt``.
    """
    if extension_cache_in_use():
        refuse_extension_opcodes(file, refuse, corrupt)
    try:
        return AllowListUnpickler(file, allowed, refuse, persistent_load).load()
    except UserError:
        raise
    except Exception as exc:  # truncated stream, bad opcode, stand-in rejected its arguments
        raise corrupt(exc) from None



class InertRecord:
    """Stand-in for a plain attribute-bag class in a pickle (``argparse.Namespace``): keeps its fields.

    A genuine pickle of such an object (protocol 2+) is ``NEWOBJ(cls)`` with no arguments followed
    by ``BUILD`` with the instance ``__dict__``; the unpickler then gets this stand-in instead of
    the class, so the real class is never imported or called. The fields are whatever the
    allow-list unpickler built (plain data and allow-listed objects only); they are kept as a
    read-only mapping and read as attributes (``record.lr``). Constructor arguments, a second
    state, or a state that is not a dict of str keys are refused as corrupt.

    Subclass it per pickled name (``record_type``) so that ``type(record).pickled_name`` tells
    what the file held.
    """

    pickled_name = "?"
    __slots__ = ("_fields",)

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertRecord":
        if args or kwargs:
            raise ValueError(f"{cls.pickled_name} record built with arguments (a genuine pickle has none)")
        record = object.__new__(cls)
        object.__setattr__(record, "_fields", None)
        return record

    def __setstate__(self, state: Any) -> None:
        if object.__getattribute__(self, "_fields") is not None:
            raise ValueError(f"{self.pickled_name} record given a second state")
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise ValueError(f"{self.pickled_name} record: state must be a dict of str keys, got {type(state).__name__}")
        object.__setattr__(self, "_fields", MappingProxyType(dict(state)))

    def __setattr__(self, key: str, value: Any) -> None:
        raise ValueError(f"a {self.pickled_name} record is read-only")

    @property
    def fields(self) -> Mapping[str, Any]:
        """The recorded fields (name -> value), read-only; empty before its state was set."""
        return object.__getattribute__(self, "_fields") or MappingProxyType({})

    def __getattr__(self, name: str) -> Any:
        fields = object.__getattribute__(self, "_fields") or {}
        if name in fields:
            return fields[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in list(self.fields.items())[:8])
        more = ", ..." if len(self.fields) > 8 else ""
        return f"{self.pickled_name}({inner}{more}) [inert record]"


def record_type(pickled_name: str) -> type[InertRecord]:
    """An ``InertRecord`` subclass standing in for the global ``pickled_name`` (``"argparse.Namespace"``)."""
    return type(pickled_name.rsplit(".", 1)[-1] + "Record", (InertRecord,), {"pickled_name": pickled_name, "__slots__": ()})
