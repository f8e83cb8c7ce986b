"""The CSRA classifier: class-specific residual attention heads (Zhu and Wu, ICCV 2021).

One head with temperature T and weight lam, on features x [B, d, H, W]:
    s[b, c, p] = (x[b, :, p] . m[c]) / ||m[c]||_2            (1x1 conv, no bias)
    base = mean_p s;   att = max_p s (T == 99)  or  sum_p s * softmax_p(T * s)
    out  = base + lam * att                                   [B, C]
Several heads are summed. The max is taken per sample (the earlier Paddle port broadcast
sample 0's maxima onto the whole batch; that bug is not repeated here).

Class maps (heatmaps) come from the same ops as the logits, without a second forward pass
or gradients. Each head's logit is a sum over positions p of its *contribution*
    contrib[b, c, p] = s[b, c, p] / (H*W) + lam * s[b, c, p] * w[b, c, p]
with w = softmax_p(T * s), or for the max head (T == 99) a one-hot at the per-sample arg-max
of s (the first position on ties). ``ClassMaps.combined`` sums the heads' contributions, so
``combined.sum((2, 3)) == logits`` up to float rounding; ``ClassMaps.head_scores`` holds each
head's score map s. See ``CSRAModel.class_maps`` and ``CSRAModel.forward_with_maps``.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import paddle
import paddle.nn.functional as F
from paddle import nn

from models.spec import HEAD_TEMPERATURES, MAX_POOL_TEMPERATURE, SUPPORTED_HEADS
from utils.errors import UserError

# The head-count -> temperatures table lives in the Paddle-free ``models.spec`` (the CLI's
# --num_heads choices are ``SUPPORTED_HEADS``); re-exported here.
__all__ = ["CSRA", "CSRAModel", "ClassMaps", "HEAD_TEMPERATURES", "MAX_POOL_TEMPERATURE", "MultiHeadCSRA",
           "SUPPORTED_HEADS", "head_temperatures"]


class ClassMaps(NamedTuple):
    """Per-class maps of one classifier pass on features [B, d, h, w] (C classes).

    Attributes:
        logits: [B, C], equal to the classifier's ``forward`` (same ops).
        head_scores: one [B, C, h, w] per head: its normalised 1x1-conv scores s.
        combined: [B, C, h, w], the sum over heads of their contributions
            ``s / (h*w) + lam * s * w`` (see the module docstring); ``combined.sum((2, 3))``
            equals ``logits`` up to float rounding.
    """

    logits: paddle.Tensor
    head_scores: list[paddle.Tensor]
    combined: paddle.Tensor


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

    def score_map(self, x: paddle.Tensor) -> paddle.Tensor:
        """Features x [B, d, H, W] -> scores s [B, C, H, W]: the 1x1 conv divided by each class's ||m_c||_2."""
        weight_norm = paddle.linalg.norm(self.head.weight, p=2, axis=1, keepdim=True)  # [C,1,1,1]
        return self.head(x) / weight_norm.reshape([1, -1, 1, 1])  # [B, C, H, W]

    def _pool(self, score: paddle.Tensor, attention_weights: bool = False) -> tuple[paddle.Tensor, paddle.Tensor | None]:
        """Flat scores [B, C, P] -> (logit [B, C], attention weights w [B, C, P] or None).

        ``w`` is computed for the max head only when ``attention_weights`` is set, so that
        ``forward`` runs exactly the ops it always ran.
        """
        base_logit = score.mean(axis=2)
        weights = None
        if self.temperature == MAX_POOL_TEMPERATURE:
            att_logit = score.max(axis=2)  # per sample
            if attention_weights:
                # argmax takes the first position on ties; one_hot is traceable by paddle.jit
                # (it needs a static P = H*W, which exports with a fixed input side have).
                weights = F.one_hot(score.argmax(axis=2), score.shape[2]).astype(score.dtype)
        else:
            weights = F.softmax(score * self.temperature, axis=2)
            att_logit = (score * weights).sum(axis=2)
        return base_logit + self.lam * att_logit, weights

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Features x [B, d, H, W] -> logits [B, C]."""
        return self._pool(self.score_map(x).flatten(2))[0]  # [B, C, H*W] -> [B, C]

    def contribution(self, score: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Scores s [B, C, H, W] (``score_map``) -> (logit [B, C], contribution [B, C, H, W]).

        contribution = s / (H*W) + lam * s * w, with w = softmax over positions of T * s, or
        for the max head a one-hot at each sample's arg-max of s (first position on ties);
        its sum over (H, W) equals the logit up to float rounding. The logit is computed by
        the same ops as ``forward``.
        """
        flat = score.flatten(2)  # [B, C, P]
        logit, weights = self._pool(flat, attention_weights=True)
        contrib = flat / flat.shape[2] + self.lam * flat * weights
        return logit, contrib.reshape(score.shape)

    def logit_and_contribution(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Features x [B, d, H, W] -> (logit [B, C], contribution [B, C, H, W]); see ``contribution``."""
        return self.contribution(self.score_map(x))


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

    def class_maps(self, features: paddle.Tensor) -> ClassMaps:
        """Features [B, d, h, w] -> ``ClassMaps``: logits [B, C] (equal to ``forward``), each head's
        score map s [B, C, h, w] and ``combined`` [B, C, h, w] = sum over heads of
        ``s / (h*w) + lam * s * w`` (w: softmax_p(T * s), or a one-hot at the per-sample arg-max
        for T == 99), whose sum over (h, w) is the logits.
        """
        scores: list[paddle.Tensor] = []
        logit = combined = None
        for head in self.multi_head:
            score = head.score_map(features)
            head_logit, contrib = head.contribution(score)
            scores.append(score)
            # Summed in forward's order so that the logits are the same floats.
            logit = head_logit if logit is None else logit + head_logit
            combined = contrib if combined is None else combined + contrib
        return ClassMaps(logit, scores, combined)


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

    def class_maps(self, x: paddle.Tensor) -> ClassMaps:
        """Images x [B, 3, S, S] -> ``ClassMaps`` with maps [B, C, S/s, S/s] (s = the spec's stride).

        One ``forward_features`` pass; ``logits`` equal ``forward(x)`` and
        ``combined.sum((2, 3)) == logits`` (see ``MultiHeadCSRA.class_maps``).
        """
        return self.classifier.class_maps(self.forward_features(x))

    def forward_with_maps(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Images x [B, 3, S, S] -> (logits [B, C], combined map [B, C, S/s, S/s]); tensors only, for export.

        ``paddle.jit.to_static`` / ``paddle.jit.save`` can trace a layer calling it (with a
        fixed input side: the max head's one-hot needs a static number of positions).
        """
        maps = self.class_maps(x)
        return maps.logits, maps.combined
