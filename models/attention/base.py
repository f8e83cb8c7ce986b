"""Shared pieces of the attention blocks: registry entries, base classes, initialisers.

Two kinds of blocks plug into a ResNet residual block (see ``models.resnet``):

- a *recalibrator* acts on the residual branch after its last BN, before ``out + identity``;
  it is built as ``cls.create(ctx)`` for every block of the chosen stages and stored in the
  block under the registry entry's ``checkpoint_key`` (``rclb``, ``prm``...), so converted
  checkpoints keep the original key names;
- a *mixer* replaces a bottleneck's 3x3 ``conv2`` (keeping that name).

``BlockContext`` tells a block where it sits (channels, stride, stage, configured input
size); ``AttentionSpec`` is one registry entry, and its ``CheckpointKeys`` say how the block's
tensors look in checkpoints, so that ``models.convert`` can recognise, name and convert them
without knowing any block.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import paddle
from paddle import nn

from models.spec import ATTENTION_STAGES

RECALIBRATOR = "recalibrator"
MIXER = "mixer"
ALL_STAGES = ATTENTION_STAGES  # (1, 2, 3, 4)


@dataclass(frozen=True)
class BlockContext:
    """Where a block sits: ``channels`` is the residual branch width (recalibrators);
    ``in_channels``/``out_channels``/``stride`` describe the replaced 3x3 conv (mixers);
    ``stage`` is 1..4; ``img_size`` is the configured square input side."""

    stage: int
    img_size: int
    channels: int = 0
    in_channels: int = 0
    out_channels: int = 0
    stride: int = 1


def stage_resolution(img_size: int, stage: int) -> int:
    """Side of the feature maps in ``stage`` (1..4) for a square ``img_size`` input.

    The stem (7x7/2 conv, 3x3/2 max-pool) and every stride-2 stage halve the side with
    ceiling rounding, so stage s has ``ceil(img_size / 2**(s+1))`` (224 -> 56, 28, 14, 7).
    """
    side = img_size
    for _ in range(stage + 1):
        side = -(-side // 2)
    return side


class AttentionBlock(nn.Layer):
    """Base class of every attention block.

    Class attributes a block may override:
      ``no_weight_decay``: its parameters train without weight decay (SRM);
    ``flops(in_shape)`` returns the multiply-adds of one forward for an input
    ``[B, C, H, W]`` (elementwise operations over the feature map count one each).
    """

    no_weight_decay: bool = False

    def flops(self, in_shape: list[int]) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


class Recalibrator(AttentionBlock):
    """Acts on the residual branch ``x [B, C, H, W] -> [B, C, H, W]``.

    A recalibrator whose output is ``x * scale + shift``, with per-sample, per-channel
    ``scale``/``shift`` that can be computed from the means of conv3's input (SE, ECA, MultiSE,
    AB, SRM) may define ``inference_affine(mean_h, weight, bias, x) -> (scale | None, shift |
    None)`` (each ``[B, C, 1, 1]``), where ``x = bn3(conv3(h))`` is its input, ``mean_h
    [B, Cin, 1, 1]`` the channel means of ``h`` and ``weight [C, Cin, 1, 1]``, ``bias [C]`` conv3
    with bn3 folded in, so that ``mean_HW(x) = conv2d(mean_h, weight, bias)`` in eval mode.
    A bottleneck in eval mode then skips the passes over ``x`` that the means would need and
    keeps conv3, bn3, the residual add and the ReLU fusable (see
    ``BottleneckBlock._inference_tail``). Operations on parameters alone (the folded
    weights) are constant-folded once when Paddle Inference loads the exported model.
    """

    @classmethod
    def create(cls, ctx: BlockContext) -> "Recalibrator":
        return cls(ctx.channels)


class Mixer(AttentionBlock):
    """Replaces a 3x3 conv: ``x [B, Cin, H, W] -> [B, Cout, ceil(H/s), ceil(W/s)]``."""

    @classmethod
    def create(cls, ctx: BlockContext) -> "Mixer":
        return cls(ctx.in_channels, ctx.out_channels, stride=ctx.stride)


@dataclass(frozen=True)
class KeyRule:
    """A checkpoint key that identifies a block: ``pattern`` is a regex matched in full against
    the key's *leaf* (the part under the block's slot, e.g. ``fc.0.weight`` in
    ``layer2.0.rclb.fc.0.weight``); ``ndim``, when given, is the tensor's required rank (it
    tells apart blocks with the same names, e.g. SRM's ``cfc`` [C, 2] from AB's ``cfc`` [C])."""

    pattern: str
    ndim: int | None = None

    def matches(self, leaf: str, shape: tuple[int, ...]) -> bool:
        """Whether a tensor named ``leaf`` with ``shape`` satisfies the rule."""
        return re.fullmatch(self.pattern, leaf) is not None and (self.ndim is None or len(shape) == self.ndim)


@dataclass(frozen=True)
class CheckpointKeys:
    """An attention block's key signature in checkpoints (torch or Paddle names).

    Keys are read relative to the block's *slot* in a residual block: a recalibrator's
    ``checkpoint_key`` (``layer2.0.rclb.`` -> ``rclb``), a mixer's replaced layer (the family's
    ``mixer_slot``, ``conv2`` in a ResNet bottleneck). The part after ``<slot>.`` is the *leaf*.

    Attributes:
        source_format: name of the format of the block's reference checkpoints
            (``channel-attention``...), reported by ``detect_format``; None if there are none.
        identify: rules; a key matching one names this block (``infer_attention``).
        owns: leaf prefixes of all of the block's tensors (``""``: everything under the slot);
            a checkpoint holding one has attention-block tensors.
        img_size: optional ``(leaf, shape, stage) -> img_size | None``: the input side a tensor's
            shape implies (GE's kernels).
        rewrite: optional ``rewrite(state) -> note | None``: rewrites a variant of the block's
            checkpoints in place (prefix-stripped torch names) before conversion, e.g. multise3.
    """

    source_format: str | None = None
    identify: tuple[KeyRule, ...] = ()
    owns: tuple[str, ...] = ("",)
    img_size: Callable[[str, tuple[int, ...], int], int | None] | None = None
    rewrite: Callable[[dict[str, Any]], str | None] | None = None

    def owns_leaf(self, leaf: str) -> bool:
        """Whether ``leaf`` (a key under the block's slot) is one of the block's tensors."""
        return any(leaf.startswith(prefix) for prefix in self.owns)

    def identifies(self, leaf: str, shape: tuple[int, ...]) -> bool:
        """Whether the tensor ``leaf`` with ``shape`` names this block."""
        return any(rule.matches(leaf, shape) for rule in self.identify)


@dataclass(frozen=True)
class AttentionSpec:
    """One registry entry: the block class, its kind, default stages, checkpoint slot and key signature.

    ``checkpoint_key`` (recalibrators only) is the attribute name of the block inside a
    residual block, i.e. its slot in the state dict; a mixer takes the name of the layer it
    replaces. ``checkpoint`` describes the block's tensors in checkpoints (``CheckpointKeys``).
    Which models can host the block is the model spec's business (``ModelSpec.attention_kinds``).
    """

    name: str
    cls: type[AttentionBlock]
    kind: str
    default_stages: tuple[int, ...]
    checkpoint_key: str | None = None  # recalibrators only: attribute name inside the block
    checkpoint: CheckpointKeys = field(default_factory=CheckpointKeys)
    summary: str = ""

    def __post_init__(self) -> None:
        if self.kind not in (RECALIBRATOR, MIXER):
            raise ValueError(f"attention '{self.name}': kind must be {RECALIBRATOR!r} or {MIXER!r}")
        if self.kind == RECALIBRATOR and not self.checkpoint_key:
            raise ValueError(f"recalibrator '{self.name}' needs a checkpoint_key")

    def slot(self, mixer_slot: str | None) -> str | None:
        """The block's slot in a residual block: ``checkpoint_key``, or ``mixer_slot`` (the
        family's replaced layer) for a mixer."""
        return self.checkpoint_key if self.kind == RECALIBRATOR else mixer_slot

    def build(self, ctx: BlockContext) -> AttentionBlock:
        """Instantiate the block for one residual block (``ctx``: where it sits); returns the layer."""
        layer = self.cls.create(ctx)
        if self.kind == RECALIBRATOR:
            layer.checkpoint_key = self.checkpoint_key
        return layer


# ----------------------------------------------------------------------------- eval-mode folding
def batch_norm_affine(bn: nn.BatchNorm2D) -> tuple[paddle.Tensor, paddle.Tensor]:
    """``bn`` in eval mode as ``x * scale + shift`` (running statistics): ``scale = gamma /
    sqrt(running_var + eps)``, ``shift = beta - running_mean * scale``, each ``[C]``."""
    scale = bn.weight / paddle.sqrt(bn._variance + bn._epsilon)
    return scale, bn.bias - bn._mean * scale


def fold_batch_norm(weight: paddle.Tensor, bn: nn.BatchNorm2D) -> tuple[paddle.Tensor, paddle.Tensor]:
    """A bias-free conv ``weight [C, Cin, kh, kw]`` followed by ``bn`` (eval mode) as one conv:
    returns ``(weight [C, Cin, kh, kw], bias [C])``."""
    scale, shift = batch_norm_affine(bn)
    return weight * scale.reshape([-1, 1, 1, 1]), shift


# ----------------------------------------------------------------------------- initialisers
def uniform_attr(bound: float) -> paddle.ParamAttr:
    """U(-bound, bound)."""
    return paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound))


def torch_default_attr(fan_in: int) -> paddle.ParamAttr:
    """PyTorch's default init of Linear/Conv weights *and* biases.

    ``kaiming_uniform_(a=sqrt(5))`` has bound ``sqrt(6 / ((1 + 5) * fan_in)) = 1/sqrt(fan_in)``,
    and the bias is ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: the same distribution.
    """
    return uniform_attr(1.0 / math.sqrt(fan_in))


def he_normal_fan_out_attr(out_channels: int, kernel: int) -> paddle.ParamAttr:
    """N(0, sqrt(2 / (k*k*out))): the channel-attention reference's (and torchvision's) conv init."""
    return paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, math.sqrt(2.0 / (kernel * kernel * out_channels))))


def constant_attr(value: float) -> paddle.ParamAttr:
    return paddle.ParamAttr(initializer=nn.initializer.Constant(value))
