"""EfficientMod's modulation (Ma et al., ICLR 2024) as a mixer replacing a bottleneck's 3x3 conv.

EfficientMod's block is channels-last; this is the channels-first adaptation (a Linear over
channels is a 1x1 conv), at the bottleneck width with expansion r = 1:

    ctx = g(sum_k GELU(dwconv_k(f(x))))      (ContextLayer; f, g: C -> C; kernel 7)
    out = fc2(fc1(x) * ctx)                   (no GELU after fc1, as EfficientMod when r = 1)

The LayerNorm, layer scale and residual of EfficientMod's own block are not used: the
bottleneck keeps its BN (bn2 follows) and its residual. With a stride, the input is
average-pooled first (ceiling rounding, as the AT kernel here), so the output has the
shape of the strided 3x3 conv it replaces.

Names follow EfficientMod's ``Mlp``: ``fc1``, ``fc2``, ``context_layer.f``, ``context_layer.g``,
``context_layer.context_list.0``. Initialisation as EfficientMod: the channel-mixing
("Linear") layers truncated-normal std 0.02 with zero bias; the depthwise conv PyTorch's
default.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from models.attention.base import Mixer, constant_attr, torch_default_attr


def _pointwise(cin: int, cout: int) -> nn.Conv2D:
    """A channels-first ``nn.Linear(cin, cout)`` (EfficientMod's init)."""
    return nn.Conv2D(cin, cout, 1, weight_attr=paddle.ParamAttr(initializer=nn.initializer.TruncatedNormal(0.0, 0.02)),
                     bias_attr=constant_attr(0.0))


class ContextLayer(nn.Layer):
    """``g(sum_k GELU(dwconv_k(f(x))))`` on ``[B, C, H, W]``."""

    def __init__(self, channels: int, conv_channels: int, kernel_sizes: tuple[int, ...] = (7,)) -> None:
        super().__init__()
        self.f = _pointwise(channels, conv_channels)
        self.g = _pointwise(conv_channels, channels)
        self.context_list = nn.LayerList([
            nn.Conv2D(conv_channels, conv_channels, k, padding=k // 2, groups=conv_channels,
                      weight_attr=torch_default_attr(k * k), bias_attr=torch_default_attr(k * k))
            for k in kernel_sizes
        ])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.f(x)
        out = None
        for conv in self.context_list:
            ctx = F.gelu(conv(x))
            out = ctx if out is None else out + ctx
        return self.g(out)


class EfficientModMixer(Mixer):
    """EfficientMod modulation: ``x [B, Cin, H, W] -> [B, Cout, ceil(H/stride), ceil(W/stride)]``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 7) -> None:
        super().__init__()
        self.stride, self.kernel_size = stride, kernel_size
        self.fc1 = _pointwise(in_channels, in_channels)
        self.context_layer = ContextLayer(in_channels, in_channels, (kernel_size,))
        self.fc2 = _pointwise(in_channels, out_channels)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        return self.fc2(self.fc1(x) * self.context_layer(x))

    def flops(self, in_shape: list[int]) -> int:
        b, c, h, w = (int(s) for s in in_shape)
        if self.stride > 1:
            h, w = -(-h // self.stride), -(-w // self.stride)
        hw = h * w
        out = self.fc2.weight.shape[0]
        macs = 3 * c * c * hw + c * out * hw  # fc1, f, g, fc2
        macs += c * self.kernel_size ** 2 * hw  # depthwise conv
        macs += 2 * c * hw  # GELU, modulation product
        return b * macs
