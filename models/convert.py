"""Convert PyTorch state dicts to Paddle: torchvision ResNets, reference CSRA checkpoints and
the attention repositories' ResNets.

Formats (detected from the keys by ``detect_format``):
- ``torchvision-resnet``: ImageNet ResNet (``fc.*`` dropped, the CSRA head starts fresh);
- ``csra-reference``: the CSRA reference's checkpoints (``classifier.multi_head.*``);
- ``channel-attention``: SanderKlomp/channel-attention ResNets, recalibrators under
  ``layerX.Y.rclb.*`` (se, srm, ge, meanrew, multise, eca; a ``multise3`` checkpoint, three
  separate SE MLPs ``fc1``/``fc2``/``fc3``, is rewritten exactly into ``multise``'s grouped
  convs: branch i -> group i);
- ``prm-resnet``: 13952522076/PRM ResNets, ``layerX.Y.prm.*``;
- ``at-kernel-mmcls``: the AT-kernel mmcls backbone, ``backbone.``-prefixed, ``conv2.{emb_K,
  MLP,emb_V}.*`` in the AT blocks, its ``head.*`` dropped;
- ``paddle``: already Paddle names.
A ``module.`` (DataParallel) prefix is stripped.

The conversion is driven by the *target model*: every tensor is renamed, transposed where
the target layer is a ``Linear`` (torch keeps [out, in], Paddle [in, out]), reshaped to
[out, in, 1, 1] where the target holds a torch Linear as a 1x1 conv (the SE/MultiSE gates
here), and checked against the target's shape. Nothing is guessed silently: each skipped tensor has a reason.
A backbone-only source (no classifier, no attention-block tensors) may leave the classifier
and the model's attention blocks at their initialisation; the 3x3 conv weights a mixer
replaces are then skipped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from paddle import nn

from models.state_check import diff_state
from utils.errors import UserError

FORMAT_TORCHVISION_RESNET = "torchvision-resnet"
FORMAT_CSRA_REFERENCE = "csra-reference"
FORMAT_PADDLE = "paddle"
FORMAT_CHANNEL_ATTENTION = "channel-attention"
FORMAT_PRM = "prm-resnet"
FORMAT_AT_MMCLS = "at-kernel-mmcls"
MMCLS_BACKBONE_PREFIX = "backbone."

_BN_RENAMES = {"running_mean": "_mean", "running_var": "_variance"}
_IMAGENET_FC = ("fc.weight", "fc.bias")
CLASSIFIER_PREFIX = "classifier."


@dataclass
class Conversion:
    """Result of converting one checkpoint.

    state: Paddle name -> float32/int array, ready for ``set_state_dict``;
    renamed: (source key, target key) pairs that changed name; skipped: (key, reason);
    missing_ok: target keys legitimately absent (e.g. the classifier of an ImageNet backbone);
    missing_attention: attention-block keys absent from a source without any (they start fresh);
    notes: other rewrites worth printing (e.g. multise3 -> multise).
    """

    format: str
    state: dict[str, np.ndarray] = field(default_factory=dict)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing_ok: list[str] = field(default_factory=list)
    prefix_stripped: str | None = None
    missing_attention: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> tuple[dict[str, Any], bool]:
    """Remove ``prefix`` from every key when all keys carry it (DataParallel checkpoints)."""
    keys = list(state)
    if keys and all(k.startswith(prefix) for k in keys):
        return {k[len(prefix):]: v for k, v in state.items()}, True
    return dict(state), False


def strip_mmcls_prefix(state: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """mmcls checkpoints: keep ``backbone.*`` without the prefix; return (state, dropped head keys).

    Applies only when some key starts with ``backbone.`` and every other key is under ``head.``.
    """
    keys = list(state)
    if not any(k.startswith(MMCLS_BACKBONE_PREFIX) for k in keys):
        return dict(state), []
    if not all(k.startswith((MMCLS_BACKBONE_PREFIX, "head.")) for k in keys):
        return dict(state), []
    head = [k for k in keys if k.startswith("head.")]
    return {k[len(MMCLS_BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(MMCLS_BACKBONE_PREFIX)}, head


def detect_format(keys: list[str]) -> str:
    """Name the checkpoint format from its keys (after prefix stripping).

    Returns one of ``csra-reference`` (torch names, CSRA classifier), ``channel-attention``
    (``.rclb.`` recalibrators), ``prm-resnet`` (``.prm.``), ``at-kernel-mmcls``
    (``conv2.emb_K``), ``torchvision-resnet`` (torch names, ImageNet fc) or ``paddle``
    (already Paddle names); UserError otherwise.
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
    if any(".rclb." in k for k in keys):
        return FORMAT_CHANNEL_ATTENTION
    if any(".prm." in k for k in keys):
        return FORMAT_PRM
    if any(".conv2.emb_K." in k for k in keys):
        return FORMAT_AT_MMCLS
    return FORMAT_TORCHVISION_RESNET


def _stage_of(key: str) -> int | None:
    match = re.match(r"layer(\d)\.", key)
    return int(match.group(1)) if match else None


def infer_attention(state: Mapping[str, Any]) -> dict[str, Any]:
    """The ``build_model`` attention arguments a checkpoint's keys imply (torch or Paddle names).

    Returns ``{}`` for a checkpoint without attention blocks, else ``{"attention": name,
    "attention_stages": [...]}`` plus ``"img_size"`` for GE (from its stage kernels, assuming
    a side that is a multiple of 32).
    """
    state, _ = strip_prefix(state)
    state, _ = strip_mmcls_prefix(state)
    found: dict[str, set[int]] = {}
    ge_kernels: dict[int, int] = {}
    for key, value in state.items():
        stage = _stage_of(key)
        if stage is None:
            continue
        shape = tuple(int(s) for s in np.shape(value))
        name = None
        if ".prm." in key:
            name = "prm"
        elif ".conv2.emb_K." in key:
            name = "at"
        elif ".conv2.context_layer." in key:
            name = "emod"
        elif ".rclb." in key:
            leaf = key.split(".rclb.", 1)[1]
            if leaf == "cfc":
                name = "srm" if len(shape) == 2 else "ab"
            elif leaf.startswith(("fc1.", "style_assigner.")) or (leaf == "fc.0.weight" and len(shape) == 4):
                name = "multise"
            elif leaf == "fc.0.weight":
                name = "se"
            elif leaf == "conv.0.weight":
                name = "ge"
                ge_kernels[stage] = shape[-1]
            elif leaf == "conv.weight":
                name = "eca"
        if name:
            found.setdefault(name, set()).add(stage)
    if not found:
        return {}
    if len(found) > 1:
        raise UserError(f"the checkpoint mixes several attention blocks ({', '.join(sorted(found))}); it cannot be loaded")
    name, stages = next(iter(found.items()))
    out: dict[str, Any] = {"attention": name, "attention_stages": sorted(stages)}
    if ge_kernels:
        stage, kernel = min(ge_kernels.items())
        out["img_size"] = kernel * 2 ** (stage + 1)
    return out


def merge_multise3(state: dict[str, Any]) -> list[str]:
    """Rewrite ``multise3`` recalibrators (three SE MLPs ``fc1/fc2/fc3``) into ``multise`` in place.

    Branch i's Linear layers become group i of the grouped 1x1 convs: ``fc.0.weight`` =
    concat_i(fc{i}.0.weight) as [3C/16, C, 1, 1], ``fc.2.weight`` = concat_i(fc{i}.2.weight)
    as [3C, C/16, 1, 1], biases concatenated; ``style_assigner`` is unchanged. This is exact:
    group i of the grouped conv on y tiled three times computes branch i's MLP on y.
    Returns the block prefixes rewritten.
    """
    prefixes = sorted({k[: -len("fc1.0.weight")] for k in state if k.endswith(".rclb.fc1.0.weight")})
    for prefix in prefixes:
        branches = [f"{prefix}fc{i}." for i in (1, 2, 3)]
        for layer in ("0", "2"):
            weights = [np.asarray(state.pop(f"{b}{layer}.weight")) for b in branches]
            biases = [np.asarray(state.pop(f"{b}{layer}.bias")) for b in branches]
            state[f"{prefix}fc.{layer}.weight"] = np.concatenate(weights, axis=0)[:, :, None, None]
            state[f"{prefix}fc.{layer}.bias"] = np.concatenate(biases, axis=0)
    return prefixes


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
    state, head_keys = strip_mmcls_prefix(state)
    fmt = detect_format(list(state))
    conv = Conversion(format=fmt, prefix_stripped="module." if stripped else None)
    if head_keys:
        conv.prefix_stripped = MMCLS_BACKBONE_PREFIX if not stripped else f"module., {MMCLS_BACKBONE_PREFIX}"
        conv.skipped.extend((k, "mmcls classification head, replaced by the CSRA head") for k in head_keys)
    merged = merge_multise3(state)
    if merged:
        conv.notes.append(f"multise3: {len(merged)} block(s) of three SE MLPs merged into multise's grouped convs (exact)")
    target = model.state_dict()
    linear_weights = _linear_weight_names(model)
    replaced = _replaced_conv_keys(model)
    source_has_blocks = _has_attention_keys(state)
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            conv.skipped.append((key, "BN step counter (Paddle does not keep one)"))
            continue
        if key in _IMAGENET_FC and key not in target:
            conv.skipped.append((key, "ImageNet classifier, replaced by the CSRA head"))
            continue
        if key in replaced and not source_has_blocks:
            conv.skipped.append((key, "3x3 conv replaced by the attention mixer (which starts fresh)"))
            continue
        parent, _, leaf = key.rpartition(".")
        new_key = f"{parent}.{_BN_RENAMES[leaf]}" if leaf in _BN_RENAMES else key
        array = np.asarray(value)
        if new_key in linear_weights and array.ndim == 2:
            array = array.T
        elif array.ndim == 2 and new_key in target and tuple(target[new_key].shape) == (*array.shape, 1, 1):
            array = array.reshape(*array.shape, 1, 1)  # a torch Linear held as a 1x1 conv (SE, MultiSE style)
        if array.dtype == np.float64 or array.dtype == np.float16:
            array = array.astype(np.float32)
        if new_key != key:
            conv.renamed.append((key, new_key))
        conv.state[new_key] = np.ascontiguousarray(array)
    diff = diff_state(target, conv.state)
    has_classifier = any(k.startswith(CLASSIFIER_PREFIX) for k in conv.state)
    conv.missing_ok = [k for k in diff.missing if k.startswith(CLASSIFIER_PREFIX)] if not has_classifier else []
    if not source_has_blocks:
        block_keys = attention_state_keys(model)
        conv.missing_attention = [k for k in diff.missing if k in block_keys]
    allowed = set(conv.missing_ok) | set(conv.missing_attention)
    diff.missing = [k for k in diff.missing if k not in allowed]
    if diff.unexpected or diff.mismatched or diff.missing:
        hint = _attention_hint(state, model)
        raise UserError(
            f"the {fmt} checkpoint does not fit the target model: {diff.describe()}. "
            "Check that --model, --num_cls and --num_heads match the checkpoint" + hint
        )
    return conv


_ATTENTION_KEY = re.compile(r"^layer\d\.\d+\.(rclb|prm|conv2\.(emb_K|emb_V|MLP|fc1|fc2|context_layer))\.")


def _has_attention_keys(state: Mapping[str, Any]) -> bool:
    """Whether a (prefix-stripped) checkpoint holds any attention-block tensor."""
    return any(_ATTENTION_KEY.match(k) for k in state)


def attention_state_keys(model: nn.Layer) -> set[str]:
    """State-dict keys (parameters and BN statistics) that belong to the model's attention blocks."""
    from models.attention import attention_blocks

    prefixes = tuple(prefix for prefix, _ in attention_blocks(model))
    return {k for k in model.state_dict() if prefixes and k.startswith(prefixes)}


def _replaced_conv_keys(model: nn.Layer) -> set[str]:
    """Keys of the 3x3 convs that the model's mixers replace (``layerX.Y.conv2.weight``)."""
    from models.attention import Mixer, attention_blocks

    return {f"{prefix}weight" for prefix, layer in attention_blocks(model) if isinstance(layer, Mixer)}


def _attention_hint(state: Mapping[str, Any], model: nn.Layer) -> str:
    """A suggestion of the attention flags the checkpoint needs, when they differ from the model's."""
    try:
        implied = infer_attention(state)
    except UserError:
        return ""
    cfg = getattr(model, "config", {})
    have = {"attention": cfg.get("attention"), "attention_stages": cfg.get("attention_stages")}
    want = {"attention": implied.get("attention"), "attention_stages": implied.get("attention_stages")}
    if have == want and "img_size" not in implied:
        return ""
    if not implied:
        return " (the checkpoint has no attention blocks: drop --attention)"
    text = f" (the checkpoint has '{implied['attention']}' blocks in stage(s) {','.join(map(str, implied['attention_stages']))}: " \
        f"use --attention {implied['attention']} --attention_stages {','.join(map(str, implied['attention_stages']))}"
    if "img_size" in implied:
        text += f"; its GE kernels imply --img_size {implied['img_size']}"
    return text + ")"
