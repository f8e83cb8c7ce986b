"""CSRA models: a backbone followed by the multi-head CSRA classifier, and ``build_model``."""
from __future__ import annotations

from typing import Any, Callable

import paddle
from paddle import nn

from models.attention import validate_attention
from models.csra import MultiHeadCSRA
from models.registry import Registry
from models.resnet import ResNet
from utils.errors import UserError

MODELS: Registry[Callable[..., nn.Layer]] = Registry("model")


class ResNetCSRA(ResNet):
    """ResNet trunk + CSRA classifier.

    Backbone parameters sit at the top level (``conv1``, ``layer1`` ...) and the classifier
    under ``classifier.multi_head.{h}.head.weight``: the key names of both Paddle's ImageNet
    ResNets and the reference CSRA checkpoints.

    ``forward(x [B,3,H,W]) -> logits [B, num_classes]``;
    ``forward_features(x) -> [B, feature_channels, H/32, W/32]``.
    """

    def __init__(self, depth: int, num_classes: int, num_heads: int = 1, lam: float = 0.1, **backbone_kw: Any) -> None:
        super().__init__(depth, **backbone_kw)
        self.classifier = MultiHeadCSRA(self.feature_channels, num_classes, num_heads, lam)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(self.forward_features(x))


def _register_resnet(depth: int) -> None:
    def factory(num_classes: int, num_heads: int = 1, lam: float = 0.1, **kw: Any) -> ResNetCSRA:
        return ResNetCSRA(depth, num_classes, num_heads, lam, **kw)

    factory.__name__ = f"resnet{depth}"
    factory.__doc__ = f"ResNet-{depth} + CSRA."
    MODELS.register(f"resnet{depth}")(factory)


for _depth in (18, 34, 50, 101, 152):
    _register_resnet(_depth)


def build_model(
    name: str,
    num_classes: int,
    num_heads: int = 1,
    lam: float = 0.1,
    attention: str | None = None,
    pretrained: str | None = None,
    **kw: Any,
) -> nn.Layer:
    """Build a CSRA model by name.

    Args:
        name: a registered model, e.g. ``resnet101`` (see ``MODELS.names()``).
        num_classes: number of labels C.
        num_heads: CSRA heads (1, 2, 4, 6 or 8).
        lam: weight of the attention logit (> 0).
        attention: name of an attention block placed in the residual blocks, or None.
        pretrained: None, a local ``.pdparams``/``.pth`` file, an http(s) URL, or ``imagenet``.
        kw: passed to the model class.
    Returns:
        a ``paddle.nn.Layer``: ``forward(x [B,3,H,W]) -> logits [B, C]``,
        ``forward_features(x) -> [B, d, H/32, W/32]``; its ``config`` dict records the arguments.
    """
    factory = MODELS.get(name)
    attention = validate_attention(attention)
    if attention is not None:
        raise UserError(f"attention block '{attention}' is not available yet")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = factory(num_classes=num_classes, num_heads=num_heads, lam=lam, **kw)
    model.config = {
        "model": MODELS.canonical(name),
        "num_classes": num_classes,
        "num_heads": num_heads,
        "lam": lam,
        "attention": attention,
    }
    if pretrained:
        from models.weights import load_pretrained

        load_pretrained(model, pretrained)
    return model
