"""The EfficientMod backbone family (Ma et al., ICLR 2024): ``efficientmod_xxs``, ``_xs``, ``_s``, ``_s_conv``.

Architecture (every LayerNorm normalises the C channels at each position, eps 1e-5). The
original keeps its maps channels-last; here they are channels-first ``[B, C, H, W]`` with the
modulation's Linear layers as 1x1 convs (the faster layout in Paddle Inference), which changes
no number: a LayerNorm over C is applied on the transposed view (``channel_layer_norm``).

- stem ``patch_embed``: conv 7x7 / 4 (padding 3, bias) -> LayerNorm;
- four stages ``layers.i``: ``d_i`` modulation blocks, then ``a_i`` self-attention blocks
  (``blocks.0 ..``, in that order), then, in stages 0-2, ``downsample``: conv 3x3 / 2 (padding 1,
  bias) -> LayerNorm to the next width. Output stride 32, sides rounded up (224 -> 7, 225 -> 8);
- ``norm``: a LayerNorm at every position of the last map. ``forward_features`` returns that map
  as ``[B, C4, ceil(H/32), ceil(W/32)]``; the CSRA head reads it. (The original ImageNet
  classifier averages it over positions and applies ``head``, a Linear(C4, 1000); that head is
  dropped when converting.)

Modulation block (``ModulationBlock``; expansion r alternates 1, R, 1, R ... from each stage's
first block): ``x + gamma_1 * Modulation(LN(x))`` with the layer scale ``gamma_1`` [C]
starting at 1e-4 and stochastic depth in training. ``Modulation`` is the one implementation of
``models.attention.emod`` (the ResNet mixer ``--attention emod`` is the same layer with r = 1).
``gamma_1`` is applied by scaling fc2's weight and bias, and the context's r-fold tiling by
repeating g's output rows: both weight-only, so the exported model computes them once at load.

Self-attention block (``SelfAttentionBlock``, on the HW positions as tokens, row-major; no
position embedding, so any input side works): ``t + Attn(LN(t))`` then ``t + MLP(LN(t))``;
8 heads of width ``d = max(C // 8, 32)`` (so the inner width 8d may exceed C), a bias-free
``qkv`` whose output channel ``s*8d + head*d + j`` holds q, k, v (s = 0, 1, 2), a biased
``proj``; MLP Linear(C, aC) -> GELU -> Linear(aC, C). GELU is the exact (erf) form everywhere.

Parameter names are the original checkpoints' (``patch_embed.proj``, ``layers.2.blocks.6.attn.qkv``,
``layers.0.blocks.1.mlp.context_layer.context_list.0`` ...), so their keys convert by the
generic rules of ``models.convert``: the attention blocks' Linear weights transposed, the
modulation's Linear weights reshaped to 1x1 convs ``[out, in, 1, 1]``, everything else as is.
Initialisation as the original: Linear weights truncated-normal 0.02 with zero bias; every conv
(stem, downsample, depthwise) PyTorch's default U(+-1/sqrt(fan_in)) for weight and bias;
LayerNorm (1, 0); ``gamma_1`` 1e-4.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection

import paddle
import paddle.nn.functional as F
from paddle import nn

from models.attention.base import constant_attr, torch_default_attr
from models.attention.emod import Modulation, linear
from models.csra import CSRAModel
from models.family import BackboneFamily, ModelSpec, register_family

__all__ = ["EFFICIENTMOD_PRESETS", "EfficientMod", "EfficientModCSRA", "EfficientModConfig", "ModulationBlock",
           "SelfAttentionBlock", "drop_path"]


@dataclass(frozen=True)
class EfficientModConfig:
    """The shape of one EfficientMod network.

    Attributes:
        widths: channels C1..C4 of the four stages.
        depths: modulation blocks per stage.
        attention_depths: self-attention blocks per stage (after its modulation blocks).
        ratio: R, the expansion of every second modulation block (1, R, 1, R ... per stage).
        attention_ratios: MLP ratio of the attention blocks, per stage.
        drop_path: the largest stochastic-depth rate (rates rise linearly from 0 over all blocks).
        kernel_size: the modulation's depthwise kernel.
        num_heads: attention heads.
        min_head_width: attention head width is ``max(C // num_heads, min_head_width)``.
    """

    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    attention_depths: tuple[int, int, int, int] = (0, 0, 0, 0)
    ratio: int = 6
    attention_ratios: tuple[int, int, int, int] = (4, 4, 4, 4)
    drop_path: float = 0.0
    kernel_size: int = 7
    num_heads: int = 8
    min_head_width: int = 32

    def block_rates(self) -> list[float]:
        """Stochastic-depth rate of every block in network order (stage by stage, modulation blocks first)."""
        total = sum(self.depths) + sum(self.attention_depths)
        if total <= 1:
            return [0.0] * total
        return [self.drop_path * i / (total - 1) for i in range(total)]


#: preset -> configuration (the original ImageNet models).
EFFICIENTMOD_PRESETS: dict[str, EfficientModConfig] = {
    "xxs": EfficientModConfig((32, 64, 128, 256), (2, 2, 6, 2), (0, 0, 1, 2), 6, (4, 4, 4, 4), 0.0),
    "xs": EfficientModConfig((32, 64, 144, 288), (3, 3, 4, 2), (0, 0, 3, 3), 4, (4, 4, 4, 4), 0.0),
    "s": EfficientModConfig((32, 64, 144, 312), (4, 4, 8, 4), (0, 0, 4, 4), 6, (4, 4, 4, 5), 0.02),
    "s_conv": EfficientModConfig((40, 80, 160, 344), (4, 4, 12, 8), (0, 0, 0, 0), 6, (4, 4, 4, 4), 0.02),
}


def drop_path(x: paddle.Tensor, rate: float, training: bool) -> paddle.Tensor:
    """Stochastic depth: in training, zero each sample's ``x`` with probability ``rate`` and scale the
    kept ones by ``1 / (1 - rate)``; identity in eval mode or at rate 0. ``x`` [B, ...] -> same shape."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = paddle.floor(keep + paddle.rand([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype))
    return x / keep * mask


def channel_layer_norm(norm: nn.LayerNorm, x: paddle.Tensor) -> paddle.Tensor:
    """``norm`` (a LayerNorm over C) at every position of ``x [B, C, H, W]`` -> ``[B, C, H, W]``."""
    return norm(x.transpose([0, 2, 3, 1])).transpose([0, 3, 1, 2])


class ConvEmbed(nn.Layer):
    """Conv (``proj``) then LayerNorm over channels (``norm``): ``[B, Cin, H, W]`` ->
    ``[B, Cout, ceil(H/s), ceil(W/s)]``. The stem and the downsamples."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        fan_in = cin * kernel * kernel
        self.proj = nn.Conv2D(cin, cout, kernel, stride=stride, padding=padding,
                              weight_attr=torch_default_attr(fan_in), bias_attr=torch_default_attr(fan_in))
        self.norm = nn.LayerNorm(cout)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return channel_layer_norm(self.norm, self.proj(x))


class ModulationBlock(nn.Layer):
    """``x + drop_path(gamma_1 * Modulation(LN(x)))``: ``[B, H, W, C]`` -> same shape.

    Args:
        channels: C.
        ratio: the modulation's expansion r.
        kernel_size: its depthwise kernel.
        drop_rate: stochastic-depth rate of this block.
    """

    def __init__(self, channels: int, ratio: int, kernel_size: int = 7, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.drop_rate = drop_rate
        self.norm = nn.LayerNorm(channels)
        self.mlp = Modulation(channels, ratio, kernel_size=kernel_size)
        self.gamma_1 = self.create_parameter([channels], attr=constant_attr(1e-4))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.mlp.modulate(channel_layer_norm(self.norm, x), out_scale=self.gamma_1)  # gamma_1 folded into fc2
        return x + drop_path(out, self.drop_rate, self.training)


class MultiHeadSelfAttention(nn.Layer):
    """Softmax attention over tokens ``[B, N, C]`` -> ``[B, N, C]``, heads of width ``head_width``.

    ``qkv``: Linear(C, 3 * heads * d), no bias; ``proj``: Linear(heads * d, C).
    """

    def __init__(self, channels: int, num_heads: int, head_width: int) -> None:
        super().__init__()
        self.num_heads, self.head_width = num_heads, head_width
        inner = num_heads * head_width
        self.scale = head_width ** -0.5
        self.qkv = linear(channels, 3 * inner, bias=False)
        self.proj = linear(inner, channels)

    def forward(self, t: paddle.Tensor) -> paddle.Tensor:
        b, n = t.shape[0], t.shape[1]
        qkv = self.qkv(t).reshape([b, n, 3, self.num_heads, self.head_width]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]  # each [B, heads, N, d]
        attn = F.softmax(paddle.matmul(q, k, transpose_y=True) * self.scale, axis=-1)
        out = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([b, n, self.num_heads * self.head_width])
        return self.proj(out)


class SelfAttentionBlock(nn.Layer):
    """Pre-norm transformer block on the positions of ``[B, H, W, C]`` -> same shape.

    Args:
        channels: C.
        mlp_ratio: a, the MLP's hidden width is aC.
        num_heads, min_head_width: head width ``max(C // num_heads, min_head_width)``.
        drop_rate: stochastic-depth rate of both residual branches.
    """

    def __init__(self, channels: int, mlp_ratio: int, num_heads: int = 8, min_head_width: int = 32,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.drop_rate = drop_rate
        self.norm1 = nn.LayerNorm(channels)
        self.attn = MultiHeadSelfAttention(channels, num_heads, max(channels // num_heads, min_head_width))
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential()
        self.mlp.add_sublayer("fc1", linear(channels, mlp_ratio * channels))
        self.mlp.add_sublayer("act", nn.GELU())
        self.mlp.add_sublayer("fc2", linear(mlp_ratio * channels, channels))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose([0, 2, 1])  # [B, HW, C], row-major positions
        t = t + drop_path(self.attn(self.norm1(t)), self.drop_rate, self.training)
        t = t + drop_path(self.mlp(self.norm2(t)), self.drop_rate, self.training)
        return t.transpose([0, 2, 1]).reshape([b, c, h, w])


class Stage(nn.Layer):
    """``blocks`` (modulation, then attention) and an optional ``downsample``: ``[B, H, W, C]`` ->
    ``[B, H, W, C]`` (last stage) or ``[B, ceil(H/2), ceil(W/2), C_next]``."""

    def __init__(self, blocks: list[nn.Layer], downsample: nn.Layer | None) -> None:
        super().__init__()
        self.blocks = nn.LayerList(blocks)
        self.downsample = downsample

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class EfficientMod(nn.Layer):
    """The EfficientMod trunk without its ImageNet head.

    Args:
        config: an ``EfficientModConfig`` (``EFFICIENTMOD_PRESETS[name]`` or a custom one).
        drop_path_rate: overrides ``config.drop_path`` when given.
    ``forward_features(x [B, 3, H, W]) -> [B, C4, ceil(H/32), ceil(W/32)]`` (after ``norm``).
    """

    def __init__(self, config: EfficientModConfig, drop_path_rate: float | None = None) -> None:
        super().__init__()
        if drop_path_rate is not None:
            config = EfficientModConfig(**{**config.__dict__, "drop_path": drop_path_rate})
        self.efficientmod_config = config
        widths = config.widths
        rates = iter(config.block_rates())
        self.patch_embed = ConvEmbed(3, widths[0], 7, 4, 3)
        stages = []
        for i, width in enumerate(widths):
            blocks: list[nn.Layer] = [
                ModulationBlock(width, 1 if j % 2 == 0 else config.ratio, config.kernel_size, next(rates))
                for j in range(config.depths[i])
            ]
            blocks += [SelfAttentionBlock(width, config.attention_ratios[i], config.num_heads, config.min_head_width,
                                          next(rates)) for _ in range(config.attention_depths[i])]
            downsample = ConvEmbed(width, widths[i + 1], 3, 2, 1) if i + 1 < len(widths) else None
            stages.append(Stage(blocks, downsample))
        self.layers = nn.LayerList(stages)
        self.norm = nn.LayerNorm(widths[-1])
        self.feature_channels = widths[-1]

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """x [B, 3, H, W] float32 -> normalised last map [B, C4, ceil(H/32), ceil(W/32)]."""
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return channel_layer_norm(self.norm, x)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.forward_features(x)


class EfficientModCSRA(CSRAModel, EfficientMod):
    """EfficientMod trunk + CSRA classifier: ``EfficientModCSRA(config, num_classes=, num_heads=, lam=)``.

    Backbone parameters keep the original checkpoints' names at the top level, the classifier
    sits under ``classifier.multi_head.{h}.head.weight``.
    ``forward(x [B, 3, H, W]) -> logits [B, num_classes]``.
    """


# ----------------------------------------------------------------------------- the family and its specs
FAMILY = "efficientmod"
FORMAT_EFFICIENTMOD = "efficientmod-timm"


def imagenet_head_logits(features: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """The original ImageNet classifier on ``forward_features``' map: mean over positions then Linear.

    Args:
        features: [B, C4, h, w]; weight: [C4, 1000] (Paddle layout, the torch ``head.weight``
            transposed); bias: [1000].
    Returns:
        logits [B, 1000].
    """
    return paddle.matmul(features.mean(axis=[2, 3]), weight) + bias


def _spec(preset: str, params: str, top1: str) -> ModelSpec:
    config = EFFICIENTMOD_PRESETS[preset]
    label = preset.replace("_conv", "-Conv")
    return ModelSpec(name=f"efficientmod_{preset}", family=FAMILY, preset=preset,
                     block="modulation" + ("" if not any(config.attention_depths) else " + attention"),
                     feature_channels=config.widths[-1], attention_kinds=frozenset(),
                     summary=f"EfficientMod-{label} ({params} params, {top1} ImageNet top-1) + CSRA")


EFFICIENTMOD_MODELS: tuple[ModelSpec, ...] = (
    _spec("xxs", "4.7 M", "77.1 %"),
    _spec("xs", "6.6 M", "79.4 %"),
    _spec("s", "12.9 M", "81.9 %"),
    _spec("s_conv", "12.9 M", "80.5 %"),
)


def build_efficientmod(spec: ModelSpec, **kwargs: Any) -> EfficientModCSRA:
    """``BackboneFamily.build``: ``EfficientModCSRA(EFFICIENTMOD_PRESETS[spec.preset], **kwargs)``."""
    return EfficientModCSRA(EFFICIENTMOD_PRESETS[spec.preset], **kwargs)


def looks_like_efficientmod(keys: Collection[str]) -> bool:
    """``BackboneFamily.signature``: the stem ``patch_embed.proj.weight`` and modulation blocks
    ``layers.<i>.blocks.<j>.mlp.context_layer.*``."""
    return "patch_embed.proj.weight" in keys and any(
        k.startswith("layers.") and ".mlp.context_layer." in k for k in keys)


register_family(
    BackboneFamily(
        name=FAMILY,
        build=build_efficientmod,
        signature=looks_like_efficientmod,
        key_hint="'patch_embed.proj.weight' and 'layers.*.blocks.*.mlp.context_layer.*'",
        torch_format=FORMAT_EFFICIENTMOD,
        # the ImageNet classifier (and a distillation head, should a file carry one)
        head_keys=("head.weight", "head.bias", "head_dist.weight", "head_dist.bias"),
        rename=None,  # the original names are kept
        block_pattern=None,  # hosts no attention block of models.attention
    ),
    EFFICIENTMOD_MODELS,
)

__all__ += ["EFFICIENTMOD_MODELS", "FAMILY", "FORMAT_EFFICIENTMOD", "build_efficientmod", "imagenet_head_logits",
            "looks_like_efficientmod"]
