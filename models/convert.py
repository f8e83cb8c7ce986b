"""Convert PyTorch state dicts (torchvision ResNets, reference CSRA checkpoints) to Paddle.

The conversion is driven by the *target model*: every tensor is renamed, transposed where
the target layer is a ``Linear`` (torch keeps [out, in], Paddle [in, out]) and checked
against the target's shape. Nothing is guessed silently: each skipped tensor has a reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from paddle import nn

from models.state_check import diff_state
from utils.errors import UserError

FORMAT_TORCHVISION_RESNET = "torchvision-resnet"
FORMAT_CSRA_REFERENCE = "csra-reference"
FORMAT_PADDLE = "paddle"

_BN_RENAMES = {"running_mean": "_mean", "running_var": "_variance"}
_IMAGENET_FC = ("fc.weight", "fc.bias")
CLASSIFIER_PREFIX = "classifier."


@dataclass
class Conversion:
    """Result of converting one checkpoint.

    state: Paddle name -> float32/int array, ready for ``set_state_dict``;
    renamed: (source key, target key) pairs that changed name; skipped: (key, reason);
    missing_ok: target keys legitimately absent (e.g. the classifier of an ImageNet backbone).
    """

    format: str
    state: dict[str, np.ndarray] = field(default_factory=dict)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing_ok: list[str] = field(default_factory=list)
    prefix_stripped: str | None = None


def strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> tuple[dict[str, Any], bool]:
    """Remove ``prefix`` from every key when all keys carry it (DataParallel checkpoints)."""
    keys = list(state)
    if keys and all(k.startswith(prefix) for k in keys):
        return {k[len(prefix):]: v for k, v in state.items()}, True
    return dict(state), False


def detect_format(keys: list[str]) -> str:
    """Name the checkpoint format from its keys (after prefix stripping).

    Returns one of ``csra-reference`` (torch names, CSRA classifier), ``torchvision-resnet``
    (torch names, ImageNet fc) or ``paddle`` (already Paddle names); UserError otherwise.
    """
    keyset = set(keys)
    torch_bn = any(k.endswith((".running_mean", ".running_var")) for k in keys)
    paddle_bn = any(k.endswith(("._mean", "._variance")) for k in keys)
    has_resnet = "conv1.weight" in keyset and any(k.startswith("layer1.") for k in keys)
    if not has_resnet:
        raise UserError(
            "unrecognised checkpoint: expected ResNet keys such as 'conv1.weight' and 'layer1.*' "
            f"(first keys found: {', '.join(keys[:5]) or 'none'})"
        )
    if paddle_bn and not torch_bn:
        return FORMAT_PADDLE
    if any(k.startswith("classifier.multi_head.") for k in keys):
        return FORMAT_CSRA_REFERENCE
    return FORMAT_TORCHVISION_RESNET


def _linear_weight_names(model: nn.Layer) -> set[str]:
    return {f"{name}.weight" if name else "weight" for name, layer in model.named_sublayers() if isinstance(layer, nn.Linear)}


def convert_torch_state(source: Mapping[str, np.ndarray], model: nn.Layer) -> Conversion:
    """Convert a PyTorch state dict to the names and layouts of ``model``.

    Args:
        source: torch key -> numpy array (from ``utils.pth_io``), possibly ``module.``-prefixed.
        model: the target Paddle model (its state dict defines names and shapes).
    Returns:
        a ``Conversion``. Raises UserError when the tensors do not fit the model, naming the
        first bad keys.
    """
    state, stripped = strip_prefix(source)
    fmt = detect_format(list(state))
    conv = Conversion(format=fmt, prefix_stripped="module." if stripped else None)
    target = model.state_dict()
    linear_weights = _linear_weight_names(model)
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            conv.skipped.append((key, "BN step counter (Paddle does not keep one)"))
            continue
        if key in _IMAGENET_FC and key not in target:
            conv.skipped.append((key, "ImageNet classifier, replaced by the CSRA head"))
            continue
        parent, _, leaf = key.rpartition(".")
        new_key = f"{parent}.{_BN_RENAMES[leaf]}" if leaf in _BN_RENAMES else key
        array = np.asarray(value)
        if new_key in linear_weights and array.ndim == 2:
            array = array.T
        if array.dtype == np.float64 or array.dtype == np.float16:
            array = array.astype(np.float32)
        if new_key != key:
            conv.renamed.append((key, new_key))
        conv.state[new_key] = np.ascontiguousarray(array)
    diff = diff_state(target, conv.state)
    allowed_missing = [k for k in diff.missing if k.startswith(CLASSIFIER_PREFIX)] if fmt == FORMAT_TORCHVISION_RESNET else []
    conv.missing_ok = allowed_missing
    diff.missing = [k for k in diff.missing if k not in allowed_missing]
    if diff.unexpected or diff.mismatched or diff.missing:
        raise UserError(
            f"the {fmt} checkpoint does not fit the target model: {diff.describe()}. "
            "Check that --model, --num_cls and --num_heads match the checkpoint"
        )
    return conv
