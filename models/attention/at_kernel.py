"""The AT kernel (Koooko96/AT-kernel): an attention-generated k x k kernel replacing a 3x3 conv.

For an input ``x [B, C, H, W]`` (average-pooled by the stride first):
    Q = x repeated over the k*k offsets;  K = unfold_k(emb_K(x)) (zero padding (k-1)/2)
    A = MLP(concat(Q, K)) viewed [B, O, g, k*k, H, W]  (1x1 conv 2C -> C/r, BN, ReLU,
        1x1 conv C/r -> O*g, GroupNorm(O groups); BN/GN statistics over the k*k*H*W positions)
    V = unfold_k(emb_V(x)) viewed [B, O, g, k*k, H, W];  out = sum over g and k*k of A * V
Keys as the reference's (``emb_K.0/1``, ``MLP.0/1/3/4``, ``emb_V.0/1``) so mmcls checkpoints
convert by name. Initialisation as the reference: every conv kaiming-normal (fan_out, relu),
conv biases PyTorch's default, BN/GN (1, 0).

The first MLP conv is linear in ``concat(Q, K)``; the forward applies its Q half once per
position (Q does not vary over the offsets) and its K half before unfolding (a 1x1 conv
commutes with unfold; the zero padding stays zero because the bias is added with the Q
half), so only the cheap C/r-channel map is unfolded. The result is the reference's
function; only the order of the sums differs.

Stride: the reference average-pools with floor rounding, which needs even feature maps
(input side a multiple of 32 in a ResNet); here the pooling rounds up (partial windows
average their valid pixels), identical for even sides and matching the strided 1x1
shortcut for odd ones, so any input size works.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from models.norm import BatchNorm2D
from models.attention.base import Mixer, constant_attr, he_normal_fan_out_attr, torch_default_attr
from utils.errors import UserError


def _conv1x1(cin: int, cout: int, bias: bool) -> nn.Conv2D:
    return nn.Conv2D(cin, cout, 1, weight_attr=he_normal_fan_out_attr(cout, 1),
                     bias_attr=torch_default_attr(cin) if bias else False)


class ATKernel(Mixer):
    """AT kernel: ``x [B, Cin, H, W] -> [B, Cout, ceil(H/stride), ceil(W/stride)]``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3,
                 group_channels: int = 4, reduction: int = 4) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise UserError(f"the AT kernel size must be odd, got {kernel_size}")
        mid = in_channels // reduction
        if mid < 1:
            raise UserError(f"AT kernel: {in_channels} channels are too few for reduction {reduction}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.kernel_size, self.group_channels = stride, kernel_size, group_channels
        og = out_channels * group_channels
        self.emb_K = nn.Sequential(_conv1x1(in_channels, in_channels, False), BatchNorm2D(in_channels), nn.ReLU())
        self.MLP = nn.Sequential(
            _conv1x1(2 * in_channels, mid, True),
            BatchNorm2D(mid),
            nn.ReLU(),
            _conv1x1(mid, og, True),
            nn.GroupNorm(out_channels, og, weight_attr=constant_attr(1.0), bias_attr=constant_attr(0.0)),
        )
        self.emb_V = nn.Sequential(_conv1x1(in_channels, og, False), BatchNorm2D(og))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        h, w = x.shape[2], x.shape[3]
        k, c, o, g = self.kernel_size, self.in_channels, self.out_channels, self.group_channels
        kk, pad = k * k, (k - 1) // 2
        conv0 = self.MLP[0]
        q_part = F.conv2d(x, conv0.weight[:, :c], bias=conv0.bias)  # [B, mid, H, W]
        k_part = F.conv2d(self.emb_K(x), conv0.weight[:, c:])  # [B, mid, H, W]
        mid = k_part.shape[1]
        k_part = F.unfold(k_part, k, paddings=pad).reshape([-1, mid, kk, h * w])
        a = (q_part.reshape([-1, mid, 1, h * w]) + k_part).reshape([-1, mid, kk * h, w])
        for layer in (self.MLP[1], self.MLP[2], self.MLP[3], self.MLP[4]):
            a = layer(a)  # [B, O*g, k*k*H, W]
        v = F.unfold(self.emb_V(x), k, paddings=pad)  # [B, O*g*k*k, H*W], channel-major
        out = (a.reshape([-1, o, g * kk, h * w]) * v.reshape([-1, o, g * kk, h * w])).sum(axis=2)
        return out.reshape([-1, o, h, w])

    def flops(self, in_shape: list[int]) -> int:
        b, c, h, w = (int(s) for s in in_shape)
        if self.stride > 1:
            h, w = -(-h // self.stride), -(-w // self.stride)
        hw, kk = h * w, self.kernel_size ** 2
        mid, og = self.MLP[0].weight.shape[0], self.out_channels * self.group_channels
        macs = c * c * hw  # emb_K
        macs += 2 * c * mid * hw  # MLP.0, Q half and K half
        macs += mid * og * kk * hw  # MLP.3 at every offset
        macs += c * og * hw  # emb_V
        macs += 2 * og * kk * hw  # A * V and the sum
        macs += 4 * (mid + og) * kk * hw  # BN, ReLU, GroupNorm
        return b * macs
