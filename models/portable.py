"""Portable forms of layers whose fastest Paddle op other runtimes cannot read.

A layer may compute its output with an op that is best for Paddle (e.g. ``addmm``, the Linear
with its bias inside the GEMM) but that paddle2onnx cannot convert. Such a layer has a boolean
class attribute ``portable`` (False); set to True on the instance, it traces to ops every
converter reads, with the same values. The ONNX export traces the model a second time inside
``portable_ops`` and converts that program; the Paddle program keeps the fast form.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import paddle.nn as nn


def portable_layers(model: nn.Layer) -> list[nn.Layer]:
    """The sublayers of ``model`` (itself included) that have a portable form."""
    return [layer for layer in [model, *model.sublayers()] if isinstance(getattr(type(layer), "portable", None), bool)]


def has_portable_form(model: nn.Layer) -> bool:
    """True if any layer of ``model`` traces differently inside ``portable_ops``."""
    return bool(portable_layers(model))


@contextmanager
def portable_ops(model: nn.Layer) -> Iterator[nn.Layer]:
    """Within the block every layer of ``model`` with a portable form uses it; restored afterwards.

    Args:
        model: any Paddle layer.
    Yields:
        ``model`` itself.
    """
    layers = portable_layers(model)
    for layer in layers:
        layer.portable = True
    try:
        yield model
    finally:
        for layer in layers:
            del layer.portable  # back to the class attribute (False)
