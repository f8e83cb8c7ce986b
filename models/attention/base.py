"""Shared pieces of the attention blocks: registry entries, base classes, initialisers.

Two kinds of blocks plug into a ResNet residual block (see ``models.resnet``):

- a *recalibrator* acts on the residual branch after its last BN, before ``out + identity``;
  it is built as ``cls.create(ctx)`` for every block of the chosen stages and stored in the
  block under the registry entry's ``checkpoint_key`` (``rclb``, ``prm``...), so converted
  checkpoints keep the original key names;
- a *mixer* replaces a bottleneck's 3x3 ``conv2`` (keeping that name).

``BlockContext`` tells a block where it sits (channels, stride, stage, configured input
size); ``AttentionSpec`` is one registry entry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import paddle
from paddle import nn


RECALIBRATOR = "recalibrator"
MIXER = "mixer"
ALL_STAGES = (1, 2, 3, 4)


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
class AttentionSpec:
    """One registry entry: the block class, its kind, default stages and checkpoint key."""

    name: str
    cls: type[AttentionBlock]
    kind: str
    default_stages: tuple[int, ...]
    checkpoint_key: str | None = None  # recalibrators only: attribute name inside the block
    bottleneck_only: bool = False
    summary: str = ""

    def __post_init__(self) -> None:
        if self.kind not in (RECALIBRATOR, MIXER):
            raise ValueError(f"attention '{self.name}': kind must be {RECALIBRATOR!r} or {MIXER!r}")
        if self.kind == RECALIBRATOR and not self.checkpoint_key:
            raise ValueError(f"recalibrator '{self.name}' needs a checkpoint_key")

    def build(self, ctx: BlockContext) -> AttentionBlock:
        """Instantiate the block for one residual block."""
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
