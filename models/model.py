"""``build_model``: a registered model (backbone family + CSRA classifier), with an optional attention block.

``MODELS`` holds one ``ModelSpec`` per model name and ``FAMILIES`` one ``BackboneFamily`` per
family (see ``models.family``); importing this module imports every family module listed in
``models.spec.BACKBONE_FAMILIES``. ``build_model`` dispatches on the spec's family.
"""
from __future__ import annotations

from typing import Any

from paddle import nn

from models.attention import ATTENTIONS, MIXER, AttentionSpec, attention_factories, get_attention, resolve_stages, validate_attention
from models.family import FAMILIES, MODELS, ModelSpec, load_families
from models.spec import DEFAULT_IMG_SIZE  # the one default input side (448) of build_model and the scripts
from utils.errors import UserError

__all__ = ["FAMILIES", "MODELS", "build_model", "check_attention_fits"]

load_families()


def check_attention_fits(spec: ModelSpec, attention: AttentionSpec) -> None:
    """The one check that a model's blocks can host an attention block (e.g. mixers need bottlenecks).

    Args:
        spec: the model's spec (its ``attention_kinds``).
        attention: the attention block's spec (its ``kind``).
    Raises:
        UserError naming the block, the model, why it does not fit and the models that would.
    """
    if attention.kind in spec.attention_kinds:
        return
    hosts = [name for name in MODELS.names() if attention.kind in MODELS.get(name).attention_kinds]
    what = "replaces a block's 3x3 conv" if attention.kind == MIXER else "acts on a residual branch"
    others = [name for name in ATTENTIONS.names() if get_attention(name).kind in spec.attention_kinds]
    fix = "choose one of those models" if hosts else "no registered model can host it"
    if others:
        fix += f", or an attention block that {spec.name} can host ({', '.join(others)})"
    raise UserError(
        f"--attention {attention.name} is a {attention.kind} (it {what}) and needs one of "
        f"{', '.join(hosts) or '(none)'}; --model {spec.name} has {spec.block} blocks: {fix}"
    )


def build_model(
    name: str,
    num_classes: int,
    num_heads: int = 1,
    lam: float = 0.1,
    attention: str | None = None,
    pretrained: str | None = None,
    attention_stages: Any = None,
    img_size: int | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    **kw: Any,
) -> nn.Layer:
    """Build a CSRA model by name.

    Args:
        name: a registered model, e.g. ``resnet101`` (see ``MODELS.names()``); its spec's family
            builds it (``BackboneFamily.build``).
        num_classes: number of labels C.
        num_heads: CSRA heads (``models.spec.SUPPORTED_HEADS``: 1, 2, 4, 6 or 8).
        lam: weight of the attention logit (> 0).
        attention: name of an attention block placed in the residual blocks (see
            ``models.attention.ATTENTIONS``), or None. The model must host its kind
            (``ModelSpec.attention_kinds``; mixers need bottleneck ResNets).
        pretrained: None, a local ``.pdparams``/``.pth`` file, an http(s) URL, or a weights tag
            of the model's spec (``imagenet``). A backbone-only source (ImageNet) leaves the
            classifier and any attention block at their initialisation.
        attention_stages: stages (1..4) receiving the attention block, as a list/tuple of ints
            or comma-separated text such as ``"3,4"`` (``models.spec.parse_stages``); None = the
            block's default (recalibrators 1-4, ``at`` 4, ``emod`` 3 and 4). Only valid with ``attention``.
        img_size: the square input side S the model will run at (default
            ``models.spec.DEFAULT_IMG_SIZE``, 448). Only blocks whose shape depends on it use
            it: GE's depthwise kernel covers each stage's whole feature map (S/4, /8, /16, /32),
            and families that declare it in ``build_options`` get it (ViT: its position-embedding grid).
        drop_rate, drop_path_rate: dropout and stochastic-depth rates, for families that declare
            them in ``build_options`` (ViT); a non-zero rate for any other family is a UserError.
        kw: passed to the family's ``build``.
    Returns:
        a ``paddle.nn.Layer``: ``forward(x [B,3,S,S]) -> logits [B, C]``,
        ``forward_features(x) -> [B, d, S/s, S/s]`` (d, s = the spec's ``feature_channels``, ``stride``); its
        ``config`` dict records the arguments (``attention_stages`` as a list of ints, None
        without attention).
    """
    spec = MODELS.get(name)
    family = FAMILIES.get(spec.family)
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
        check_attention_fits(spec, get_attention(attention))
        stages = resolve_stages(attention, attention_stages)
        kw.update(attention_factories(attention, stages, img_size))
    options = {"img_size": img_size, "drop_rate": float(drop_rate), "drop_path_rate": float(drop_path_rate)}
    for option, value in options.items():
        if option in family.build_options:
            kw[option] = value
        elif option != "img_size" and value:
            raise UserError(f"--{option} {value}: {spec.name} ({family.name} family) has no such setting; "
                            f"drop it (families with it: {', '.join(n for n in FAMILIES.names() if option in FAMILIES.get(n).build_options) or 'none'})")
    model = family.build(spec, num_classes=num_classes, num_heads=num_heads, lam=lam, **kw)
    if model.feature_channels != spec.feature_channels:  # a family/spec inconsistency, not a user error
        raise ValueError(f"{spec.name}: the model has {model.feature_channels} feature channels, its spec says {spec.feature_channels}")
    model.config = {
        "model": spec.name,
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
