"""Convert PyTorch state dicts to Paddle, driven by the registries: backbone families and attention blocks.

Nothing here knows a particular backbone or block. A checkpoint is read as
- a container: a ``module.`` (DataParallel) prefix is stripped, and an mmcls checkpoint
  (``backbone.*`` + ``head.*``) keeps its backbone;
- a backbone family's keys (``BackboneFamily.signature``, e.g. ResNet's ``conv1.weight`` and
  ``layer1.*``), renamed by the family (``rename``) and by the torch -> Paddle BatchNorm rule
  (``running_mean`` -> ``_mean``, ``running_var`` -> ``_variance``); the family's ImageNet
  classifier (``head_keys``, ResNet's ``fc.*``) is dropped;
- attention-block tensors: the keys under a block's slot (``layer3.1.rclb.*``,
  ``layer4.0.conv2.emb_K.*``: the family's ``block_pattern`` + the spec's ``checkpoint_key``
  or the family's ``mixer_slot``) that a registered ``AttentionSpec``'s ``CheckpointKeys``
  owns; its rules name the block (``infer_attention``), its ``rewrite`` hook converts
  variants (multise3 -> multise), its ``img_size`` hook reads GE's input size.

Formats (``detect_format``): ``paddle`` (already Paddle names), ``csra-reference`` (the CSRA
reference's checkpoints, ``classifier.multi_head.*``), the ``source_format`` of the first
registered attention block with tensors in the checkpoint (``channel-attention``,
``prm-resnet``, ``at-kernel-mmcls``), else the family's ``torch_format``
(``torchvision-resnet``).

The conversion is driven by the *target model*: every tensor is renamed, transposed where
the target layer is a ``Linear`` (torch keeps [out, in], Paddle [in, out]), reshaped to
[out, in, 1, 1] where the target holds a torch Linear as a 1x1 conv (the SE/MultiSE gates
here), and checked against the target's shape. Nothing is guessed silently: each skipped tensor has a reason.
A backbone-only source (no classifier, no attention-block tensors) may leave the classifier
and the model's attention blocks at their initialisation; the 3x3 conv weights a mixer
replaces are then skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
from paddle import nn

from models.attention import ATTENTIONS, AttentionSpec
from models.family import FAMILIES, BackboneFamily, load_families
from models.state_check import diff_state
from utils.errors import UserError

FORMAT_CSRA_REFERENCE = "csra-reference"
FORMAT_PADDLE = "paddle"
MMCLS_BACKBONE_PREFIX = "backbone."

_BN_RENAMES = {"running_mean": "_mean", "running_var": "_variance"}
CLASSIFIER_PREFIX = "classifier."
_CSRA_HEADS_PREFIX = "classifier.multi_head."


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


def _families() -> list[BackboneFamily]:
    load_families()
    return [FAMILIES.get(name) for name in FAMILIES.names()]


def _attention_specs() -> list[AttentionSpec]:
    return [ATTENTIONS.get(name) for name in ATTENTIONS.names()]


def detect_family(keys: list[str]) -> BackboneFamily:
    """The registered backbone family whose ``signature`` the keys (prefix-stripped) match.

    Raises UserError naming the families' expected keys and the first keys found.
    """
    keyset = set(keys)
    for family in _families():
        if family.signature(keyset):
            return family
    expected = "; ".join(f"{f.name}: {f.key_hint}" for f in _families())
    raise UserError(
        f"unrecognised checkpoint: expected the keys of a registered backbone family ({expected}), "
        f"first keys found: {', '.join(keys[:5]) or 'none'}. Pass a checkpoint of one of the registered models"
    )


def attention_tensors(key: str, families: list[BackboneFamily] | None = None) -> Iterator[tuple[int, AttentionSpec, str]]:
    """``(stage, spec, leaf)`` for each registered attention block whose signature owns ``key``.

    ``key`` (prefix-stripped, torch or Paddle names) must lie in a block of a family
    (``BackboneFamily.locate``) under the block's slot: a recalibrator's ``checkpoint_key``
    or the family's ``mixer_slot``; ``leaf`` is the rest of the key. Several recalibrators
    share a slot (``rclb``): each one owning the key is yielded, in registry order.
    """
    for family in families if families is not None else _families():
        located = family.locate(key)
        if located is None:
            continue
        stage, rest = located
        for spec in _attention_specs():
            slot = spec.slot(family.mixer_slot)
            if slot and rest.startswith(f"{slot}.") and spec.checkpoint.owns_leaf(rest[len(slot) + 1:]):
                yield stage, spec, rest[len(slot) + 1:]
        return


def detect_format(keys: list[str]) -> str:
    """Name the checkpoint format from its keys (after prefix stripping).

    Returns ``paddle`` (Paddle BatchNorm names), ``csra-reference`` (torch names, CSRA
    classifier), the ``source_format`` of the first registered attention block (registry
    order) with tensors in the checkpoint (``channel-attention``, ``prm-resnet``,
    ``at-kernel-mmcls``...), else the family's ``torch_format`` (``torchvision-resnet``).
    UserError when no registered family recognises the keys.
    """
    family = detect_family(keys)
    torch_bn = any(k.endswith((".running_mean", ".running_var")) for k in keys)
    paddle_bn = any(k.endswith(("._mean", "._variance")) for k in keys)
    if paddle_bn and not torch_bn:
        return FORMAT_PADDLE
    if any(k.startswith(_CSRA_HEADS_PREFIX) for k in keys):
        return FORMAT_CSRA_REFERENCE
    present = {spec.name for key in keys for _, spec, _ in attention_tensors(key, [family])}
    for spec in _attention_specs():
        if spec.name in present and spec.checkpoint.source_format:
            return spec.checkpoint.source_format
    return family.torch_format


def infer_attention(state: Mapping[str, Any]) -> dict[str, Any]:
    """The ``build_model`` attention arguments a checkpoint's keys imply (torch or Paddle names).

    Every key under an attention slot is matched against the registered blocks'
    ``CheckpointKeys.identify`` rules. Returns ``{}`` for a checkpoint without attention
    blocks, else ``{"attention": name, "attention_stages": [...]}`` plus ``"img_size"`` when the
    block's ``img_size`` hook reads one (GE, from its first stage's kernel, assuming a side
    that is a multiple of 32). UserError when several blocks are found.
    """
    state, _ = strip_prefix(state)
    state, _ = strip_mmcls_prefix(state)
    families = _families()
    found: dict[str, set[int]] = {}
    sizes: dict[str, dict[int, int]] = {}
    for key, value in state.items():
        for stage, spec, leaf in attention_tensors(key, families):
            shape = tuple(int(s) for s in np.shape(value))
            if not spec.checkpoint.identifies(leaf, shape):
                continue
            found.setdefault(spec.name, set()).add(stage)
            size = spec.checkpoint.img_size(leaf, shape, stage) if spec.checkpoint.img_size else None
            if size:
                sizes.setdefault(spec.name, {})[stage] = size
            break
    if not found:
        return {}
    if len(found) > 1:
        raise UserError(f"the checkpoint mixes several attention blocks ({', '.join(sorted(found))}); it cannot be loaded")
    name, stages = next(iter(found.items()))
    out: dict[str, Any] = {"attention": name, "attention_stages": sorted(stages)}
    if sizes.get(name):
        out["img_size"] = sizes[name][min(sizes[name])]
    return out


def checkpoint_img_size(state: Mapping[str, Any]) -> int | None:
    """The input side a checkpoint (torch or Paddle names) was made for, when its family can tell
    (``BackboneFamily.checkpoint_img_size``, e.g. a ViT's position-embedding grid), else None."""
    state, _ = strip_prefix(state)
    state, _ = strip_mmcls_prefix(state)
    family = detect_family(list(state))
    return family.checkpoint_img_size(state) if family.checkpoint_img_size else None


def _linear_weight_names(model: nn.Layer) -> set[str]:
    return {f"{name}.weight" if name else "weight" for name, layer in model.named_sublayers() if isinstance(layer, nn.Linear)}


def convert_torch_state(source: Mapping[str, np.ndarray], model: nn.Layer) -> Conversion:
    """Convert a PyTorch state dict to the names and layouts of ``model``.

    Args:
        source: torch key -> numpy array (from ``utils.pth_io``), possibly ``module.``-prefixed
            or an mmcls checkpoint; its keys must match a registered family (``detect_family``).
        model: the target Paddle model (its state dict defines names and shapes).
    Returns:
        a ``Conversion``. Raises UserError when the tensors do not fit the model, naming the
        first bad keys.
    """
    state, stripped = strip_prefix(source)
    state, head_keys = strip_mmcls_prefix(state)
    family = detect_family(list(state))
    fmt = detect_format(list(state))
    conv = Conversion(format=fmt, prefix_stripped="module." if stripped else None)
    if head_keys:
        conv.prefix_stripped = MMCLS_BACKBONE_PREFIX if not stripped else f"module., {MMCLS_BACKBONE_PREFIX}"
        conv.skipped.extend((k, "mmcls classification head, replaced by the CSRA head") for k in head_keys)
    for spec in _attention_specs():  # variants of a block's checkpoints (multise3 -> multise)
        note = spec.checkpoint.rewrite(state) if spec.checkpoint.rewrite else None
        if note:
            conv.notes.append(note)
    target = model.state_dict()
    linear_weights = _linear_weight_names(model)
    replaced = _replaced_conv_keys(model)
    source_has_blocks = _has_attention_keys(state)
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            conv.skipped.append((key, "BN step counter (Paddle does not keep one)"))
            continue
        if key in family.head_keys and key not in target:
            conv.skipped.append((key, "ImageNet classifier, replaced by the CSRA head"))
            continue
        new_key = family.rename(key) if family.rename else key
        if new_key in replaced and not source_has_blocks:
            conv.skipped.append((key, "3x3 conv replaced by the attention mixer (which starts fresh)"))
            continue
        parent, _, leaf = new_key.rpartition(".")
        new_key = f"{parent}.{_BN_RENAMES[leaf]}" if leaf in _BN_RENAMES else new_key
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
    if family.fit_state is not None:  # e.g. ViT: refuse unsupported variants, pos_embed to the model's grid
        conv.notes.extend(family.fit_state(conv.state, model))
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


def _has_attention_keys(state: Mapping[str, Any]) -> bool:
    """Whether a (prefix-stripped) checkpoint holds any tensor owned by a registered attention block."""
    families = _families()
    return any(next(attention_tensors(k, families), None) is not None for k in state)


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
