"""Training-time convolutions on small maps as one GEMM over the whole batch (CPU).

Paddle's CPU ``conv2d`` kernel (forward and both backward passes) runs one im2col + GEMM per
image of the batch. On the late stages of a ResNet at small inputs (8 x 8 maps and below, e.g.
every stage after the first at 64 px) those per-image GEMMs are a few dozen columns wide and
run far below the CPU's GEMM rate. Unfolding the whole batch into one matrix
``[C * kh * kw, B * Ho * Wo]`` and multiplying it once by the ``[O, C * kh * kw]`` weight
gives the same convolution (to float rounding: the sums run in another order) with GEMMs B
times wider; autograd differentiates it through ``matmul`` and ``unfold`` (whose backward is
``fold``), so the weight gradient is one GEMM as well.

Measured on a 2-core AMD EPYC, 2 threads, one training step of the reference recipe
(``bench/train_speed.py --gemm_conv_side``): ResNet-18 @ 64 px batch 8 1.38x faster with maps
of side <= 8 (1.21x with <= 16, 1.16x with <= 32: larger maps are better in the native kernel),
ResNet-50 @ 224 px batch 8 1.06x (only the last stage's 7 x 7 maps qualify).

Only the forward of the training run changes: evaluation (``model.eval()``), export and
inference use the native kernel, and the parameters (names, shapes, values) are untouched,
so checkpoints are the same files. :func:`use_gemm_convs` is applied by the Trainer on the CPU
(``TrainConfig.gemm_conv_side``; 0 turns it off, the plain path).
"""
from __future__ import annotations

import types

import paddle
import paddle.nn.functional as F

from engine.config import DEFAULT_GEMM_CONV_SIDE

__all__ = ["conv2d_as_gemm", "use_gemm_convs", "uses_gemm"]


def _pair(value: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[1])) if len(value) == 2 else (int(value[0]), int(value[0]))
    return int(value), int(value)


def conv2d_as_gemm(layer: paddle.nn.Conv2D, x: paddle.Tensor) -> paddle.Tensor:
    """``layer(x)`` for a ``paddle.nn.Conv2D`` with groups 1, zero padding and NCHW data,
    computed as one GEMM over the batch.

    Args:
        layer: the convolution (weight [O, C, kh, kw], optional bias [O]; its stride,
            padding and dilation are used; symmetric padding given as an int or a pair).
        x: float tensor [B, C, H, W].
    Returns:
        [B, O, Ho, Wo], equal to the native convolution up to float rounding.
    """
    b, c, h, w = x.shape
    out_ch, _, kh, kw = layer.weight.shape
    sh, sw = _pair(layer._stride)
    ph, pw = _pair(layer._padding)
    dh, dw = _pair(layer._dilation)
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if kh == 1 and kw == 1 and ph == 0 and pw == 0:  # a 1 x 1 convolution needs no unfold
        xs = x[:, :, ::sh, ::sw] if (sh, sw) != (1, 1) else x
        cols = xs.transpose([1, 0, 2, 3]).reshape([c, b * ho * wo])
    else:
        cols = F.unfold(x, [kh, kw], strides=[sh, sw], paddings=[ph, pw], dilations=[dh, dw])  # [B, C*kh*kw, L]
        cols = cols.transpose([1, 0, 2]).reshape([c * kh * kw, b * ho * wo])
    y = paddle.matmul(layer.weight.reshape([out_ch, -1]), cols)  # [O, B*L]
    y = y.reshape([out_ch, b, ho, wo]).transpose([1, 0, 2, 3])
    if layer.bias is not None:
        y = y + layer.bias.reshape([1, out_ch, 1, 1])
    return y


def _eligible(layer: paddle.nn.Layer) -> bool:
    """A plain convolution the GEMM path computes exactly: Conv2D, groups 1, NCHW, zero padding
    given symmetrically (an int or one value per spatial side)."""
    if type(layer) is not paddle.nn.Conv2D or layer._groups != 1 or layer._data_format != "NCHW":
        return False
    if getattr(layer, "_padding_mode", "zeros") != "zeros" or isinstance(layer._padding, str):
        return False
    pad = layer._padding
    return isinstance(pad, int) or (isinstance(pad, (list, tuple)) and len(pad) in (1, 2) and all(isinstance(p, int) for p in pad))


def use_gemm_convs(model: paddle.nn.Layer, max_side: int = DEFAULT_GEMM_CONV_SIDE) -> int:
    """Make the eligible convolutions of ``model`` run as one GEMM over the batch while training
    on inputs of at most ``max_side`` x ``max_side``; other inputs, evaluation and export keep
    the native kernel.

    Args:
        model: any layer tree (a CSRA model, a backbone).
        max_side: the largest input height and width taken by the GEMM path; 0: none (the
            model is left as it is).
    Returns:
        the number of convolutions switched (0 when none is eligible or ``max_side`` is 0).
    """
    if max_side <= 0:
        return 0
    count = 0
    for layer in model.sublayers(include_self=True):
        if not _eligible(layer):
            continue
        native = type(layer).forward

        def forward(self: paddle.nn.Conv2D, x: paddle.Tensor, _native=native) -> paddle.Tensor:
            if self.training and x.shape[2] <= self._gemm_max_side and x.shape[3] <= self._gemm_max_side:
                return conv2d_as_gemm(self, x)
            return _native(self, x)

        layer._gemm_max_side = int(max_side)
        layer.forward = types.MethodType(forward, layer)
        count += 1
    return count


def uses_gemm(layer: paddle.nn.Layer) -> bool:
    """Whether :func:`use_gemm_convs` switched this convolution."""
    return hasattr(layer, "_gemm_max_side")
