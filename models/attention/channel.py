"""The channel-attention recalibrators compared by Klomp et al. (Neural Processing Letters 2023).

All act on the residual branch ``x [B, C, H, W]`` and return a tensor of the same shape; they
are stored in a residual block as ``rclb`` (the reference's key). Parameter names are the
reference's; its Linear layers (SE's ``fc``, MultiSE's ``style_assigner``) act on the channel
means and are held as 1x1 convs with weights [out, in, 1, 1] (the converter reshapes torch's
[out, in]). Initialisation follows the reference: its ResNet re-initialises every Conv2d as
N(0, sqrt(2 / (k*k*out))) and BN as (1, 0); Linear and Conv1d keep PyTorch's defaults,
reproduced explicitly here (Paddle's defaults differ).

Every global mean over H, W is one global average pool (see ``global_mean``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from models.norm import BatchNorm2D
from models.attention.base import (
    BlockContext,
    Recalibrator,
    batch_norm_affine,
    constant_attr,
    he_normal_fan_out_attr,
    stage_resolution,
    torch_default_attr,
)
from utils.errors import UserError


def _spatial(in_shape: list[int]) -> tuple[int, int, int]:
    b, c, h, w = (int(s) for s in in_shape)
    return b, c, h * w


def global_mean(x: paddle.Tensor) -> paddle.Tensor:
    """Mean over H, W of ``x [B, C, H, W]`` as ``[B, C, 1, 1]``.

    A global average pool: one op that Paddle Inference's oneDNN backend runs as a pooling
    primitive on its blocked layout, where ``mean(axis=[2, 3])`` (reduce_mean) made the whole
    ResNet-50 about twice as slow at 448 px.
    """
    return F.adaptive_avg_pool2d(x, 1)


def spatial_size(x: paddle.Tensor, block: str) -> int:
    """H * W of ``x``; UserError for 1x1 maps, where an unbiased std is undefined."""
    n = x.shape[2] * x.shape[3]
    if n == 1:
        raise UserError(f"{block} needs feature maps larger than 1x1 (an unbiased std over one position is "
                        "undefined): use a larger input (side > 32 px for stage 4)")
    return n


def unbiased_std(x: paddle.Tensor, mean: paddle.Tensor) -> paddle.Tensor:
    """Unbiased standard deviation over H, W (no epsilon) of ``x [B, C, H, W]`` given its mean
    ``[B, C, 1, 1]``; two passes (x - mean, then the mean of squares) as ``torch.std``."""
    n = spatial_size(x, "SRM")
    d = x - mean
    # d * d rather than paddle.square: Paddle 3.3's oneDNN predictor may run square in place.
    return paddle.sqrt(global_mean(d * d) * (n / (n - 1)))


def pointwise(cin: int, cout: int, bias: bool = True, groups: int = 1) -> nn.Conv2D:
    """A 1x1 conv standing for the reference's ``nn.Linear(cin, cout)`` on ``[B, C, 1, 1]``
    channel means, initialised as PyTorch's Linear (U(-1/sqrt(fan_in), 1/sqrt(fan_in))).

    Its weight is ``[cout, cin, 1, 1]``: the converter reshapes a torch Linear weight
    ``[cout, cin]`` into it. On the means no reshape is needed, and Paddle Inference runs
    conv + bias + activation as one oneDNN op, where a chain of reshape/matmul/add ops on
    these tiny tensors cost more than the whole gating pass over the feature map.
    """
    fan_in = cin // groups
    return nn.Conv2D(cin, cout, 1, groups=groups, weight_attr=torch_default_attr(fan_in),
                     bias_attr=torch_default_attr(fan_in) if bias else False)


def scale_rows(weight: paddle.Tensor, bias: paddle.Tensor, factor: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """The 1x1 conv ``(weight [C, Cin, 1, 1], bias [C])`` with output channel c multiplied by
    ``factor[c]`` (``factor [C]``)."""
    return weight * factor.reshape([-1, 1, 1, 1]), bias * factor


class MeanAffineRecalibrator(Recalibrator):
    """A recalibrator ``x -> x * scale + shift`` whose ``scale``/``shift`` depend on the channel
    means of ``x`` only: subclasses define ``mean_affine(mean [B, C, 1, 1]) -> (scale | None,
    shift | None)``, each ``[B, C, 1, 1]`` or None, and may override ``inference_affine`` to fold
    their first linear map into conv3's (see ``Recalibrator``)."""

    def mean_affine(self, mean: paddle.Tensor) -> tuple[paddle.Tensor | None, paddle.Tensor | None]:
        raise NotImplementedError

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        scale, shift = self.mean_affine(global_mean(x))
        if scale is not None:
            x = x * scale
        return x if shift is None else x + shift

    def inference_affine(self, mean_h: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor,
                         x: paddle.Tensor) -> tuple[paddle.Tensor | None, paddle.Tensor | None]:
        """(scale, shift) from conv3's input means (see ``Recalibrator``); ``x`` is not read."""
        return self.mean_affine(F.conv2d(mean_h, weight, bias))


class SELayer(MeanAffineRecalibrator):
    """Squeeze-and-excitation: ``x * sigmoid(W2 relu(W1 mean_HW(x) + b1) + b2)``, reduction 16.

    Parameters: ``fc.0`` C -> C/16, ``fc.2`` C/16 -> C (the reference's Linear layers, with
    bias), held as 1x1 convs on the channel means (see ``pointwise``).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise UserError(f"SE needs at least {reduction} channels, got {channels}")
        self.fc = nn.Sequential(pointwise(channels, hidden), nn.ReLU(), pointwise(hidden, channels))

    def mean_affine(self, mean: paddle.Tensor) -> tuple[paddle.Tensor, None]:
        """(gate [B, C, 1, 1], None) from the channel means ``mean [B, C, 1, 1]``."""
        return F.sigmoid(self.fc(mean)), None

    def flops(self, in_shape: list[int]) -> int:
        b, c, hw = _spatial(in_shape)
        hidden = self.fc[0].weight.shape[0]
        return b * (2 * c * hw + 2 * c * hidden)


class SRMLayer(Recalibrator):
    """Style-based recalibration: ``x * sigmoid(BN(cfc_c0 mean_HW(x) + cfc_c1 std_HW(x)))``.

    ``std`` is unbiased and has no epsilon (as the reference); training computes it in two
    passes (as ``torch.std``), evaluation in one (``E[x^2] - mean^2``, cheaper in the
    predictor; equal up to float rounding for features whose mean is not many orders of
    magnitude above their spread). Parameters ``cfc`` [C, 2] (zeros) and ``bn`` (BN over C);
    the reference trains them without weight decay.
    """

    no_weight_decay = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cfc = self.create_parameter([channels, 2], attr=constant_attr(0.0))
        self.bn = BatchNorm2D(channels)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        mean = global_mean(x)  # [B, C, 1, 1]
        if self.training:
            std = unbiased_std(x, mean)
        else:  # one pass over x at inference: var = E[x^2] - mean^2 (clamped at 0)
            n = spatial_size(x, "SRM")
            std = paddle.sqrt(F.relu(global_mean(x * x) - mean * mean) * (n / (n - 1)))
        cfc = self.cfc.unsqueeze([2, 3])  # [C, 2, 1, 1]
        z = mean * cfc[:, 0] + std * cfc[:, 1]
        return x * F.sigmoid(self.bn(z))

    def inference_affine(self, mean_h: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor,
                         x: paddle.Tensor) -> tuple[paddle.Tensor, None]:
        """(gate, None) in eval mode: ``gate = sigmoid(a0 mean + a1 std + b)`` with ``cfc``, the
        eval-mode BN and the unbiased-std factor folded into per-channel coefficients; the mean
        from conv3's input, ``E[x^2]`` from one pass over ``x``. The ``a0 mean + b`` term is a 1x1
        conv on ``mean_h`` and ``a1 std`` a per-channel (depthwise) 1x1 conv, whose sum and
        sigmoid Paddle Inference fuses into one op."""
        n = spatial_size(x, "SRM")
        c = x.shape[1]
        mean = F.conv2d(mean_h, weight, bias)  # [B, C, 1, 1]
        var = F.relu(global_mean(x * x) - mean * mean)  # biased; clamped against rounding below 0
        bn_scale, bn_shift = batch_norm_affine(self.bn)  # [C] each
        w0, b0 = scale_rows(weight, bias, self.cfc[:, 0] * bn_scale)
        a1 = (self.cfc[:, 1] * bn_scale * math.sqrt(n / (n - 1))).reshape([-1, 1, 1, 1])
        z = F.conv2d(mean_h, w0, b0 + bn_shift) + F.conv2d(paddle.sqrt(var), a1, groups=c)
        return F.sigmoid(z), None

    def flops(self, in_shape: list[int]) -> int:
        b, c, hw = _spatial(in_shape)
        return b * c * (4 * hw + 8)


class GELayer(Recalibrator):
    """Gather-excite (GE-theta-): a depthwise conv spanning the whole feature map, BN, sigmoid.

    ``kernel_size`` must equal the feature map side: ``create`` takes it from the stage and
    the configured input size (56/28/14/7 for stages 1-4 at 224, 112/56/28/14 at 448), so
    the block keeps its global extent at any configured size. A forward at another
    resolution raises a UserError naming the expected input size.
    Parameters: ``conv.0`` (depthwise conv with bias), ``conv.1`` (BN).
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        k = self.kernel_size
        self.conv = nn.Sequential(
            nn.Conv2D(channels, channels, k, groups=channels,
                      weight_attr=he_normal_fan_out_attr(channels, k), bias_attr=torch_default_attr(k * k)),
            BatchNorm2D(channels),
        )

    @classmethod
    def create(cls, ctx: BlockContext) -> "GELayer":
        return cls(ctx.channels, stage_resolution(ctx.img_size, ctx.stage))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        h, w = x.shape[2], x.shape[3]
        k = self.kernel_size
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 and (h, w) != (k, k):
            raise UserError(
                f"GE block built for {k}x{k} feature maps got {h}x{w}: its kernel follows the configured "
                "input size (img_size); build the model with the img_size you run it at"
            )
        return x * F.sigmoid(self.conv(x))

    def flops(self, in_shape: list[int]) -> int:
        b, c, hw = _spatial(in_shape)
        return b * c * (2 * hw + 4)


class ABLayer(MeanAffineRecalibrator):
    """Attention bias ("meanrew"): ``x + cfc_c * mean_HW(x)``; ``cfc`` [C] starts at zero,
    so the block is an exact identity at initialisation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cfc = self.create_parameter([channels], attr=constant_attr(0.0))

    def mean_affine(self, mean: paddle.Tensor) -> tuple[None, paddle.Tensor]:
        """(None, shift [B, C, 1, 1]) from the channel means ``mean [B, C, 1, 1]``."""
        return None, mean * self.cfc.reshape([1, -1, 1, 1])

    def inference_affine(self, mean_h: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor,
                         x: paddle.Tensor) -> tuple[None, paddle.Tensor]:
        """(None, shift): ``cfc`` folded into the mean's 1x1 conv, one op per sample."""
        return None, F.conv2d(mean_h, *scale_rows(weight, bias, self.cfc))

    def flops(self, in_shape: list[int]) -> int:
        b, c, hw = _spatial(in_shape)
        return b * c * (2 * hw + 1)


class MultiSELayer(MeanAffineRecalibrator):
    """Multi-style SE: three SE MLPs mixed by a softmax style assignment.

    ``y = mean_HW(x)``; ``a = softmax(y Ws^T)`` over 3 styles; ``z_k`` = SE MLP k (reduction
    16, bias) of ``y``; ``x * sigmoid(sum_k a_k z_k)``. Parameters as the reference's grouped
    convs on ``y`` tiled 3 times: ``fc.0.weight`` [3C/16, C, 1, 1], ``fc.2.weight``
    [3C, C/16, 1, 1] (group k = MLP k), biases, and ``style_assigner.weight`` (the reference's
    Linear C -> 3 without bias, held as a 1x1 conv [3, C, 1, 1], see ``pointwise``).
    The grouped first conv on the tiled means equals a dense 1x1 conv on the means with the
    same weight, so ``y`` is never tiled; the style-weighted sum is one batched matmul.
    """

    branches = 3

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        n = self.branches
        wide = channels * n
        hidden = wide // reduction
        if hidden < n or hidden % n:
            raise UserError(f"MultiSE needs the channels ({channels}) to give {n} equal hidden groups at reduction {reduction}")
        self.channels, self.hidden = channels, hidden // n  # hidden units per branch
        self.fc = nn.Sequential(
            nn.Conv2D(wide, hidden, 1, groups=n, weight_attr=he_normal_fan_out_attr(hidden, 1),
                      bias_attr=torch_default_attr(channels)),
            nn.ReLU(),
            nn.Conv2D(hidden, wide, 1, groups=n, weight_attr=he_normal_fan_out_attr(wide, 1),
                      bias_attr=torch_default_attr(self.hidden)),
        )
        self.style_assigner = pointwise(channels, n, bias=False)

    def mean_affine(self, mean: paddle.Tensor) -> tuple[paddle.Tensor, None]:
        """(gate [B, C, 1, 1], None) from the channel means ``mean [B, C, 1, 1]``."""
        n, c = self.branches, self.channels
        style = F.softmax(self.style_assigner(mean), axis=1)  # [B, n, 1, 1]
        conv0 = self.fc[0]
        hid = F.relu(F.conv2d(mean, conv0.weight, conv0.bias))  # group k of conv0 sees the means themselves
        z = self.fc[2](hid)  # [B, n*C, 1, 1]: branch k in channels k*C..(k+1)*C
        gate = paddle.matmul(style.reshape([-1, 1, n]), z.reshape([-1, n, c]))  # sum_k a_k z_k: [B, 1, C]
        return F.sigmoid(gate).reshape([-1, c, 1, 1]), None

    def inference_affine(self, mean_h: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor,
                         x: paddle.Tensor) -> tuple[paddle.Tensor, None]:
        """(gate, None) in eval mode as a chain of 1x1 convs, with no reshapes (each a layout
        reorder in oneDNN) and no matmul.

        ``sum_k a_k z_k = sum_k W2_k (a_k hid_k) + sum_k a_k b2_k``: every branch gets one more
        hidden unit fixed at 1 (zero weights, bias 1, through the ReLU) whose outgoing weight is
        the branch's output bias ``b2_k``; the hidden units are scaled by their branch's style
        weight, and one conv over all branches' units (fc.2's weights side by side) gives the
        mixed pre-activation.
        """
        n, c, h = self.branches, self.channels, self.hidden
        mean = F.conv2d(mean_h, weight, bias)  # [B, C, 1, 1]
        style = F.softmax(self.style_assigner(mean), axis=1)  # [B, n, 1, 1]
        conv0, conv2 = self.fc[0], self.fc[2]
        dtype = conv0.weight.dtype
        w0 = paddle.concat([conv0.weight.reshape([n, h, c]), paddle.zeros([n, 1, c], dtype=dtype)], axis=1)
        b0 = paddle.concat([conv0.bias.reshape([n, h]), paddle.ones([n, 1], dtype=dtype)], axis=1)
        hid = F.relu(F.conv2d(mean, w0.reshape([n * (h + 1), c, 1, 1]), b0.reshape([-1])))  # [B, n(h+1), 1, 1]
        # Unit j of branch k takes a_k: a 0/1 conv from the n style weights.
        spread = paddle.eye(n, dtype=dtype).unsqueeze(1).tile([1, h + 1, 1]).reshape([n * (h + 1), n, 1, 1])
        weighted = hid * F.conv2d(style, spread)
        w2 = paddle.concat([conv2.weight.reshape([n, c, h]), conv2.bias.reshape([n, c, 1])], axis=2)  # [n, C, h+1]
        w2 = w2.transpose([1, 0, 2]).reshape([c, n * (h + 1), 1, 1])
        return F.sigmoid(F.conv2d(weighted, w2)), None

    def flops(self, in_shape: list[int]) -> int:
        b, c, hw = _spatial(in_shape)
        n, h = self.branches, self.hidden
        return b * (2 * c * hw + n * c + 2 * n * h * c + n * c)


class ECALayer(MeanAffineRecalibrator):
    """Efficient channel attention: a 3-tap Conv1d (no bias) across the channel means, sigmoid.

    Parameter ``conv.weight`` [1, 1, 3] (PyTorch default init).
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1D(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias_attr=False,
                              weight_attr=torch_default_attr(kernel_size))

    def mean_affine(self, mean: paddle.Tensor) -> tuple[paddle.Tensor, None]:
        """(gate [B, C, 1, 1], None) from the channel means ``mean [B, C, 1, 1]``."""
        c = mean.shape[1]
        k = self.conv.weight.shape[-1]
        # The Conv1d as a [1, k] Conv2D over the means laid out as [B, 1, 1, C] (one oneDNN op).
        z = F.conv2d(mean.reshape([-1, 1, 1, c]), self.conv.weight.unsqueeze(2), padding=[0, (k - 1) // 2])
        return F.sigmoid(z).reshape([-1, c, 1, 1]), None

    def inference_affine(self, mean_h: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor,
                         x: paddle.Tensor) -> tuple[paddle.Tensor, None]:
        """(gate, None) with the channel conv folded into the mean's 1x1 conv.

        The Conv1d is linear across channels: ``z[c] = sum_j k[j] m[c + j - p]`` (zero padding
        p) for ``m = weight * mean_h + bias``, so applied along the channel axis of ``weight``
        and ``bias`` it gives one 1x1 conv, and the gate is one conv + sigmoid per sample.
        """
        c, cin = weight.shape[0], weight.shape[1]
        rows = paddle.concat([weight.reshape([c, cin]), bias.reshape([c, 1])], axis=1)  # [C, Cin + 1]
        mixed = self.conv(rows.t().unsqueeze(1)).squeeze(1).t()  # the Conv1d along C, per column: [C, Cin + 1]
        z = F.conv2d(mean_h, mixed[:, :cin].reshape([c, cin, 1, 1]), mixed[:, cin])
        return F.sigmoid(z), None

    def flops(self, in_shape: list[int]) -> int:
        b, c, hw = _spatial(in_shape)
        return b * c * (2 * hw + 3)


# ----------------------------------------------------------------------------- checkpoint hooks (CheckpointKeys)
def ge_img_size(leaf: str, shape: tuple[int, ...], stage: int) -> int | None:
    """The input side a GE tensor implies: ``conv.0.weight`` [C, 1, k, k] spans stage ``stage``'s
    whole map, so ``img_size = k * 2**(stage + 1)`` (exact for sides that are multiples of 32).
    Returns None for the block's other tensors."""
    if leaf != "conv.0.weight" or not shape:
        return None
    return int(shape[-1]) * 2 ** (stage + 1)


def merge_multise3(state: dict[str, Any]) -> list[str]:
    """Rewrite ``multise3`` recalibrators (three SE MLPs ``fc1/fc2/fc3``) into ``multise`` in place.

    Branch i's Linear layers become group i of the grouped 1x1 convs: ``fc.0.weight`` =
    concat_i(fc{i}.0.weight) as [3C/16, C, 1, 1], ``fc.2.weight`` = concat_i(fc{i}.2.weight)
    as [3C, C/16, 1, 1], biases concatenated; ``style_assigner`` is unchanged. This is exact:
    group i of the grouped conv on y tiled three times computes branch i's MLP on y.
    Args:
        state: prefix-stripped torch key -> array; changed in place.
    Returns:
        the block prefixes rewritten (``layer1.0.rclb.``...).
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


def rewrite_multise3(state: dict[str, Any]) -> str | None:
    """``CheckpointKeys.rewrite`` of ``multise``: ``merge_multise3``; returns a note, or None if nothing changed."""
    merged = merge_multise3(state)
    if not merged:
        return None
    return f"multise3: {len(merged)} block(s) of three SE MLPs merged into multise's grouped convs (exact)"
