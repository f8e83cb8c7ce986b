"""CSRA models: a backbone followed by the multi-head CSRA classifier, and ``build_model``."""
from __future__ import annotations

from typing import Any, Callable

import paddle
from paddle import nn

from models.attention import attention_factories, get_attention, resolve_stages, validate_attention
from models.csra import MultiHeadCSRA
from models.registry import Registry
from models.resnet import RESNET_SPECS, BottleneckBlock, ResNet
from utils.errors import UserError

MODELS: Registry[Callable[..., nn.Layer]] = Registry("model")
DEFAULT_IMG_SIZE = 224  # the input side attention blocks are sized for unless img_size is given


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
    factory.bottleneck = RESNET_SPECS[depth][0] is BottleneckBlock  # type: ignore[attr-defined]
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
    attention_stages: Any = None,
    img_size: int | None = None,
    **kw: Any,
) -> nn.Layer:
    """Build a CSRA model by name.

    Args:
        name: a registered model, e.g. ``resnet101`` (see ``MODELS.names()``).
        num_classes: number of labels C.
        num_heads: CSRA heads (1, 2, 4, 6 or 8).
        lam: weight of the attention logit (> 0).
        attention: name of an attention block placed in the residual blocks (see
            ``models.attention.ATTENTIONS``), or None.
        pretrained: None, a local ``.pdparams``/``.pth`` file, an http(s) URL, or ``imagenet``.
            A backbone-only source (ImageNet) leaves the classifier and any attention block
            at their initialisation.
        attention_stages: stages (1..4) receiving the attention block, as a list/tuple of ints
            or a string such as ``"3,4"``; None = the block's default (recalibrators 1-4,
            ``at`` 4, ``emod`` 3 and 4). Only valid with ``attention``.
        img_size: the square input side the model will run at (default 224). Only blocks
            whose shape depends on it use it: GE's depthwise kernel covers each stage's whole
            feature map (img_size/4, /8, /16, /32).
        kw: passed to the model class.
    Returns:
        a ``paddle.nn.Layer``: ``forward(x [B,3,H,W]) -> logits [B, C]``,
        ``forward_features(x) -> [B, d, H/32, W/32]``; its ``config`` dict records the arguments
        (``attention_stages`` as a list of ints, None without attention).
    """
    factory = MODELS.get(name)
    attention = validate_attention(attention)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    if img_size is None:
        img_size = DEFAULT_IMG_SIZE
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise UserError(f"img_size must be a positive integer, got {img_size!r}")
    stages: list[int] | None = None
    if attention is None:
        if attention_stages not in (None, "", (), []):
            raise UserError(f"attention stages {attention_stages!r} were given without an attention block (--attention)")
    else:
        spec = get_attention(attention)
        stages = list(resolve_stages(attention, attention_stages))
        if spec.bottleneck_only and not getattr(factory, "bottleneck", True):
            raise UserError(
                f"attention '{attention}' replaces the bottleneck's 3x3 conv and needs resnet50/101/152; "
                f"{MODELS.canonical(name)} has basic blocks"
            )
        kw.update(attention_factories(attention, stages, img_size))
    model = factory(num_classes=num_classes, num_heads=num_heads, lam=lam, **kw)
    model.config = {
        "model": MODELS.canonical(name),
        "num_classes": num_classes,
        "num_heads": num_heads,
        "lam": lam,
        "attention": attention,
        "attention_stages": stages,
    }
    if pretrained:
        from models.weights import load_pretrained

        load_pretrained(model, pretrained)
    return model
