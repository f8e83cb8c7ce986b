"""Read ``.safetensors`` weights (Hugging Face hub / current timm) as NumPy arrays, without torch.

A safetensors file is a JSON header (names, dtypes, shapes, byte ranges) followed by raw
tensor bytes: reading it runs nothing from the file. It is read with the ``safetensors``
package's NumPy API (``safe_open(..., framework="np")``), tensor by tensor. bfloat16 tensors
(no NumPy dtype) are widened to float32 from their raw bytes, exactly.
"""
from __future__ import annotations

import json
import os
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np

from utils.errors import UserError

__all__ = ["SAFETENSORS_SUFFIX", "load_safetensors"]

SAFETENSORS_SUFFIX = ".safetensors"
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header


def _bf16_tensors(path: Path) -> dict[str, tuple[list[int], int, int]]:
    """name -> (shape, start, end) of the bfloat16 tensors, from the file's JSON header."""
    with open(path, "rb") as fh:
        size = struct.unpack("<Q", fh.read(8))[0]
        if size > _MAX_HEADER:
            raise UserError(f"{path}: safetensors header of {size} bytes is too large (malformed file)")
        header = json.loads(fh.read(size))
    base = 8 + size
    return {name: (info["shape"], base + info["data_offsets"][0], base + info["data_offsets"][1])
            for name, info in header.items() if name != "__metadata__" and info.get("dtype") == "BF16"}


def load_safetensors(path: str | os.PathLike[str]) -> "OrderedDict[str, np.ndarray]":
    """Read every tensor of a ``.safetensors`` file.

    Args:
        path: the file.
    Returns:
        name -> contiguous ``numpy.ndarray`` in the file's order (bfloat16 -> float32).
    Raises:
        UserError: the file is missing, not a safetensors file, or malformed.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    try:
        bf16 = _bf16_tensors(path)
        with safe_open(str(path), framework="np") as handle:
            for name in handle.keys():
                if name in bf16:
                    shape, start, end = bf16[name]
                    with open(path, "rb") as fh:
                        fh.seek(start)
                        raw = np.frombuffer(fh.read(end - start), dtype="<u2")
                    out[name] = (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
                else:
                    out[name] = np.ascontiguousarray(handle.get_tensor(name))
    except UserError:
        raise
    except Exception as exc:  # the package's errors (bad header, truncated data) and struct/json ones
        raise UserError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    if not out:
        raise UserError(f"{path} holds no tensors")
    return out
