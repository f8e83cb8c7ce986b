"""Position-aware recalibration (PRM; IJCAI 2020), stored in a block as ``prm``.

Channels are split into G = 64 contiguous groups of c' = C/G. Per sample and group:
the query position is the arg-max over H*W of the channel sum; ``sim_max`` is the dot
product of every position with the query position's vector, ``sim_gap`` with the group's
mean vector; a position prior ``D = (N(theta0 |i - row|) + N(theta1 |j - col|)) / 2`` with
``N`` the zero-mean Gaussian density of standard deviation ``scale`` weights ``sim_max``;
``sim = zero_g D sim_max + one_g sim_gap`` is standardised over positions (unbiased std +
1e-5), mapped by ``weight_g * . + bias_g`` and gates its group's channels through a sigmoid.

Parameters (the reference's names/shapes/init): ``weight`` [1,G,1,1] zeros, ``bias``
[1,G,1,1] ones, ``one`` [1,G,1] ones, ``zero`` [1,G,1] zeros, ``theta`` [1,2,1,1] U[0,1),
``scale`` [1] ones: 259 per block; at initialisation the gate is the constant sigmoid(1).
Unlike the reference, nothing is written to disk during the forward.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F
from paddle import nn

from models.attention.base import Recalibrator, constant_attr
from models.attention.channel import spatial_size
from utils.errors import UserError


def _ones_like(t: paddle.Tensor) -> paddle.Tensor:
    """Ones shaped like ``t`` (``paddle.ones_like`` warns about ``place`` while exporting to a static graph)."""
    return t * 0.0 + 1.0


class PRMLayer(Recalibrator):
    """Position-aware recalibration: ``x [B, C, H, W] -> [B, C, H, W]``; C divisible by ``groups``."""

    def __init__(self, channels: int, groups: int = 64) -> None:
        super().__init__()
        if channels % groups:
            raise UserError(f"PRM needs the block width to be divisible by {groups} groups, got {channels} channels")
        self.groups = groups
        self.group_channels = channels // groups
        self.weight = self.create_parameter([1, groups, 1, 1], attr=constant_attr(0.0))
        self.bias = self.create_parameter([1, groups, 1, 1], attr=constant_attr(1.0))
        self.one = self.create_parameter([1, groups, 1], attr=constant_attr(1.0))
        self.zero = self.create_parameter([1, groups, 1], attr=constant_attr(0.0))
        self.theta = self.create_parameter([1, 2, 1, 1], attr=paddle.ParamAttr(initializer=nn.initializer.Uniform(0.0, 1.0)))
        self.scale = self.create_parameter([1], attr=constant_attr(1.0))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # Written for Paddle Inference's oneDNN backend as much as for dygraph: full-size
        # tensors see only a reshape to [B*G, c', HW], two batched matmuls and one same-shape
        # multiply; broadcasts other than per-channel ones and reduce ops are avoided (both
        # fall back to very slow oneDNN paths), spatial means are global average pools.
        g, cg = self.groups, self.group_channels
        h, w = x.shape[2], x.shape[3]
        hw = spatial_size(x, "PRM")
        xs = x.reshape([-1, cg, hw])  # [B*G, c', HW]
        mean = F.adaptive_avg_pool2d(x, 1).reshape([-1, cg, 1])  # [B*G, c', 1]
        # One pass for the channel sums and sim_gap: [1, mean]^T X -> [B*G, 2, HW].
        first = paddle.matmul(paddle.concat([_ones_like(mean), mean], axis=2), xs, transpose_x=True)
        sums, sim_gap = paddle.unbind(first, axis=1)  # [B*G, HW] each
        # Query position: arg-max of the channel sum (first index on ties, as torch's max-pool).
        idx = paddle.argmax(sums, axis=1, keepdim=True)  # [B*G, 1] int64
        query = paddle.take_along_axis(xs, idx.unsqueeze(1).expand([-1, cg, 1]), axis=2, broadcast=False)  # [B*G, c', 1]
        sim_max = paddle.matmul(query, xs, transpose_x=True).reshape([-1, hw])  # [B*G, HW]
        # Position prior, separable: (N(theta0 |i - row|) + N(theta1 |j - col|)) / 2 from H + W
        # Gaussians per group; the outer sum is a batched matmul ([r, 1] x [1, c]^T).
        sigma = self.scale
        theta = self.theta.reshape([2])
        d_row = paddle.abs(paddle.arange(h, dtype="int64").unsqueeze(0) - idx // w).astype(x.dtype) * (theta[0] / sigma)
        d_col = paddle.abs(paddle.arange(w, dtype="int64").unsqueeze(0) - idx % w).astype(x.dtype) * (theta[1] / sigma)
        norm = 0.5 / (sigma * math.sqrt(2.0 * math.pi))  # the mean of two densities
        g_row = (norm * paddle.exp(-0.5 * d_row * d_row)).reshape([-1, h, 1])  # [B*G, H, 1]
        g_col = (norm * paddle.exp(-0.5 * d_col * d_col)).reshape([-1, 1, w])  # [B*G, 1, W]
        prior = paddle.matmul(paddle.concat([g_row, _ones_like(g_row)], axis=2),
                              paddle.concat([_ones_like(g_col), g_col], axis=1))  # [B*G, H, W]
        sim = (self.zero.unsqueeze(3) * (prior.reshape([-1, hw]) * sim_max).reshape([-1, g, h, w])
               + self.one.unsqueeze(3) * sim_gap.reshape([-1, g, h, w]))  # [B, G, H, W]
        # Standardise over positions (unbiased std + 1e-5), then the affine map.
        ctx = sim - F.adaptive_avg_pool2d(sim, 1)
        # ctx * ctx, not paddle.square: Paddle 3.3's oneDNN predictor runs square in place
        # (inplace_pass) and would overwrite ctx, which is used again below.
        std = paddle.sqrt(F.adaptive_avg_pool2d(ctx * ctx, 1) * (hw / (hw - 1)))  # [B, G, 1, 1]
        gate = F.sigmoid(ctx * (self.weight / (std + 1e-5)) + self.bias)  # [B, G, H, W]
        # Each group map gates its c' contiguous channels (on xs, already in plain layout).
        return (xs * gate.reshape([-1, 1, hw])).reshape([-1, g * cg, h, w])

    def flops(self, in_shape: list[int]) -> int:
        b, c, h, w = (int(s) for s in in_shape)
        hw = h * w
        # channel sum, two similarity dot products, group mean, gating, plus per-position work.
        return b * (5 * c * hw + 20 * self.groups * hw)
