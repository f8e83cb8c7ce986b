"""The CSRA classifier: class-specific residual attention heads (Zhu and Wu, ICCV 2021).

One head with temperature T and weight lam, on features x [B, d, H, W]:
    s[b, c, p] = (x[b, :, p] . m[c]) / ||m[c]||_2            (1x1 conv, no bias)
    base = mean_p s;   att = max_p s (T == 99)  or  sum_p s * softmax_p(T * s)
    out  = base + lam * att                                   [B, C]
Several heads are summed. The max is taken per sample (the earlier Paddle port broadcast
sample 0's maxima onto the whole batch; that bug is not repeated here).
"""
from __future__ import annotations

import math
from typing import Any

import paddle
import paddle.nn.functional as F
from paddle import nn

from models.spec import HEAD_TEMPERATURES, MAX_POOL_TEMPERATURE, SUPPORTED_HEADS
from utils.errors import UserError

# The head-count -> temperatures table lives in the Paddle-free ``models.spec`` (the CLI's
# --num_heads choices are ``SUPPORTED_HEADS``); re-exported here.
__all__ = ["CSRA", "CSRAModel", "HEAD_TEMPERATURES", "MAX_POOL_TEMPERATURE", "MultiHeadCSRA", "SUPPORTED_HEADS",
           "head_temperatures"]


def head_temperatures(num_heads: int) -> tuple[int, ...]:
    """Temperatures of the reference for ``num_heads`` heads (``SUPPORTED_HEADS``: 1, 2, 4, 6 or 8).

    Returns a tuple of ``num_heads`` temperatures (99 = max pooling); UserError otherwise.
    """
    if num_heads not in HEAD_TEMPERATURES:
        raise UserError(
            f"--num_heads {num_heads} is not supported: CSRA defines temperatures for "
            f"{', '.join(map(str, SUPPORTED_HEADS))} heads only; use one of these"
        )
    return HEAD_TEMPERATURES[num_heads]


class CSRA(nn.Layer):
    """One residual-attention head: features [B, d, H, W] -> logits [B, num_classes]."""

    def __init__(self, in_channels: int, num_classes: int, temperature: float, lam: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.lam = lam
        # PyTorch's default Conv2d init (kaiming-uniform, a=sqrt(5)) reduces to U(-1/sqrt(fan_in), +).
        bound = 1.0 / math.sqrt(in_channels)
        self.head = nn.Conv2D(
            in_channels,
            num_classes,
            1,
            bias_attr=False,
            weight_attr=paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound)),
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        weight_norm = paddle.linalg.norm(self.head.weight, p=2, axis=1, keepdim=True)  # [C,1,1,1]
        score = self.head(x) / weight_norm.reshape([1, -1, 1, 1])  # [B, C, H, W]
        score = score.flatten(2)  # [B, C, H*W]
        base_logit = score.mean(axis=2)
        if self.temperature == MAX_POOL_TEMPERATURE:
            att_logit = score.max(axis=2)  # per sample
        else:
            weights = F.softmax(score * self.temperature, axis=2)
            att_logit = (score * weights).sum(axis=2)
        return base_logit + self.lam * att_logit


class MultiHeadCSRA(nn.Layer):
    """Sum of CSRA heads at the reference temperatures; [B, d, H, W] -> [B, num_classes].

    Parameters are named ``multi_head.{h}.head.weight`` as in the reference checkpoints.
    """

    def __init__(self, in_channels: int, num_classes: int, num_heads: int = 1, lam: float = 0.1) -> None:
        super().__init__()
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
            raise UserError(f"--lam must be a positive number, got {lam}")
        if num_classes < 1:
            raise UserError(f"--num_cls must be at least 1, got {num_classes}")
        self.temperatures = head_temperatures(num_heads)
        self.multi_head = nn.LayerList(
            [CSRA(in_channels, num_classes, t, lam) for t in self.temperatures]
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        logit = self.multi_head[0](x)
        for head in self.multi_head[1:]:
            logit = logit + head(x)
        return logit


class CSRAModel(nn.Layer):
    """Adds the CSRA classifier to a backbone class: ``class ResNetCSRA(CSRAModel, ResNet)``.

    The backbone class (next in the MRO) builds its layers in ``__init__`` (taking the
    positional and remaining keyword arguments), sets ``feature_channels`` and defines
    ``forward_features(x [B,3,H,W]) -> [B, feature_channels, H/s, W/s]`` (s = the spec's ``stride``). Its parameters stay
    at the top level of the state dict (the original checkpoints' names) and the classifier is
    created after them, under ``classifier.multi_head.{h}.head.weight``.

    ``forward(x [B,3,H,W]) -> logits [B, num_classes]``.
    """

    feature_channels: int

    def __init__(self, *args: Any, num_classes: int, num_heads: int = 1, lam: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.classifier = MultiHeadCSRA(self.feature_channels, num_classes, num_heads, lam)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(self.forward_features(x))
