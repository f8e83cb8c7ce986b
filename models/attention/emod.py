"""EfficientMod's modulation (Ma et al., ICLR 2024): the one implementation, used twice.

``Modulation`` computes, on a feature map ``[B, C, H, W]`` with expansion r,

    ctx = g(sum_k GELU(dwconv_k(f(x))))      (``ContextLayer``; f, g: C -> C; depthwise kernel 7)
    v   = fc1(x)                              (C -> rC; followed by GELU only when r > 1)
    out = fc2(v * tile(ctx, r))               (rC -> C_out; hidden channel j uses ctx channel j mod C)

channels-first, EfficientMod's Linear layers being 1x1 convs (a torch ``[out, in]`` weight
becomes ``[out, in, 1, 1]``). It is used by EfficientMod's own backbone
(``models.efficientmod``: ``layers.i.blocks.j.mlp``) and by the ResNet mixer
``EfficientModMixer`` (``--attention emod``), which replaces a bottleneck's 3x3 conv with r = 1.
Channels-first is the faster layout in Paddle Inference's oneDNN: Linear layers on 4-D
channels-last maps fall back to a slow non-oneDNN kernel there, and NHWC depthwise convs are
mislaid by its layout passes.

The mixer keeps no LayerNorm, layer scale or residual of its own (the bottleneck keeps its BN,
bn2 follows, and its residual). With a stride, the mixer average-pools its input first
(ceiling rounding, as the AT kernel here), so the output has the shape of the strided 3x3 conv
it replaces.

Names follow EfficientMod's checkpoints: ``fc1``, ``fc2``, ``context_layer.f``,
``context_layer.g``, ``context_layer.context_list.0``. Initialisation as EfficientMod: the
channel-mixing layers truncated-normal std 0.02 with zero bias; the depthwise conv keeps
PyTorch's default (its init hook only reaches Linear layers).
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from models.attention.base import Mixer, constant_attr, torch_default_attr


def trunc_normal_attr() -> paddle.ParamAttr:
    """EfficientMod's Linear init: truncated normal, std 0.02 (cut at +-2, i.e. in effect N(0, 0.02^2))."""
    return paddle.ParamAttr(initializer=nn.initializer.TruncatedNormal(0.0, 0.02))


def pointwise(cin: int, cout: int) -> nn.Conv2D:
    """A channel-mixing layer ``[B, C_in, H, W] -> [B, C_out, H, W]`` (EfficientMod's ``nn.Linear`` as a
    1x1 conv, with its init)."""
    return nn.Conv2D(cin, cout, 1, weight_attr=trunc_normal_attr(), bias_attr=constant_attr(0.0))


def linear(cin: int, cout: int, bias: bool = True) -> nn.Linear:
    """``nn.Linear(cin, cout)`` on the last axis with EfficientMod's init (the attention blocks' layers)."""
    return nn.Linear(cin, cout, weight_attr=trunc_normal_attr(), bias_attr=constant_attr(0.0) if bias else False)


class ContextLayer(nn.Layer):
    """``g(sum_k GELU(dwconv_k(f(x))))``: ``[B, C, H, W]`` -> same shape.

    Args:
        channels: C (input and output width).
        conv_channels: width of f's output and the depthwise convs (C in every EfficientMod preset).
        kernel_sizes: one depthwise conv per size, summed after their GELU.
    """

    def __init__(self, channels: int, conv_channels: int, kernel_sizes: tuple[int, ...] = (7,)) -> None:
        super().__init__()
        self.f = pointwise(channels, conv_channels)
        self.g = pointwise(conv_channels, channels)
        self.context_list = nn.LayerList([
            nn.Conv2D(conv_channels, conv_channels, k, padding=k // 2, groups=conv_channels,
                      weight_attr=torch_default_attr(k * k), bias_attr=torch_default_attr(k * k))
            for k in kernel_sizes
        ])

    def forward(self, x: paddle.Tensor, repeat: int = 1) -> paddle.Tensor:
        """x -> the context, its channels tiled ``repeat`` times (done on g's weights: no extra pass)."""
        x = self.f(x)
        out = None
        for conv in self.context_list:
            ctx = F.gelu(conv(x))
            out = ctx if out is None else out + ctx
        if repeat == 1:
            return self.g(out)
        # tile(g(z), r) = g'(z) with g's output rows repeated r times: weight-only, so Paddle
        # Inference computes g' once at load and the tile op over the map disappears.
        return F.conv2d(out, paddle.tile(self.g.weight, [repeat, 1, 1, 1]), paddle.tile(self.g.bias, [repeat]))


class Modulation(nn.Layer):
    """``fc2(act(fc1(x)) * tile(ctx(x), ratio))``: ``[B, C, H, W]`` -> ``[B, C_out, H, W]``.

    Args:
        channels: C.
        ratio: expansion r (fc1 is C -> rC); GELU after fc1 only when r > 1, as EfficientMod.
        out_channels: C_out (default C).
        kernel_size: the depthwise conv's kernel (7 in every preset).
    """

    def __init__(self, channels: int, ratio: int = 1, out_channels: int | None = None, kernel_size: int = 7) -> None:
        super().__init__()
        self.ratio, self.kernel_size = ratio, kernel_size
        out_channels = out_channels or channels
        self.fc1 = pointwise(channels, ratio * channels)
        self.context_layer = ContextLayer(channels, channels, (kernel_size,))
        self.fc2 = pointwise(ratio * channels, out_channels)

    def modulate(self, x: paddle.Tensor, out_scale: paddle.Tensor | None = None) -> paddle.Tensor:
        """The modulation on an input already in this layer's layout and resolution.

        Args:
            x: ``[B, C, H, W]``.
            out_scale: optional per-output-channel factor ``[C_out]`` (a layer scale), applied by
                scaling fc2's weight and bias, which is exact and costs no pass over the map.
        Returns:
            ``[B, C_out, H, W]``.
        """
        v = self.fc1(x)
        if self.ratio > 1:
            v = F.gelu(v)
        ctx = self.context_layer(x, repeat=self.ratio)  # hidden channel j uses ctx channel j mod C
        if out_scale is None:
            return self.fc2(v * ctx)
        return F.conv2d(v * ctx, self.fc2.weight * out_scale.reshape([-1, 1, 1, 1]), self.fc2.bias * out_scale)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.modulate(x)

    def modulation_macs(self, batch: int, h: int, w: int) -> int:
        """Multiply-adds of one forward at ``h x w`` (elementwise products and GELUs count one each)."""
        c, hidden, out = int(self.fc1.weight.shape[1]), int(self.fc1.weight.shape[0]), int(self.fc2.weight.shape[0])
        hw = h * w
        macs = 2 * c * c * hw + c * hidden * hw + hidden * out * hw  # f, g, fc1, fc2
        macs += c * self.kernel_size ** 2 * hw  # depthwise conv
        macs += c * hw + hidden * hw + (hidden * hw if self.ratio > 1 else 0)  # GELUs, product
        return batch * macs


class EfficientModMixer(Modulation, Mixer):
    """EfficientMod modulation as a ResNet mixer, channels-first with r = 1:
    ``x [B, Cin, H, W] -> [B, Cout, ceil(H/stride), ceil(W/stride)]``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 7) -> None:
        super().__init__(in_channels, 1, out_channels, kernel_size)
        self.stride = stride

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        return self.modulate(x)

    def flops(self, in_shape: list[int]) -> int:
        b, c, h, w = (int(s) for s in in_shape)
        if self.stride > 1:
            h, w = -(-h // self.stride), -(-w // self.stride)
        return self.modulation_macs(b, h, w)
