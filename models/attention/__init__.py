"""Attention blocks placed inside the ResNet residual blocks, and their registry.

``ATTENTIONS`` maps a name to an ``AttentionSpec``: the block class, its kind
(``recalibrator``: on the residual branch after the last BN, before the add; ``mixer``:
replaces a bottleneck's 3x3 conv), its default stages and (recalibrators) the attribute
name it is stored under in a residual block, which is the key prefix of the original
checkpoints. Adding a block = one class (subclass of ``Recalibrator`` or ``Mixer``) plus one
``_register`` line below; ``build_model`` only talks to the registry.

| name | kind | default stages | key | origin |
| --- | --- | --- | --- | --- |
| se | recalibrator | 1-4 | rclb | squeeze-and-excitation |
| srm | recalibrator | 1-4 | rclb | style-based recalibration (no weight decay) |
| ge | recalibrator | 1-4 | rclb | gather-excite, global depthwise kernel sized from img_size |
| ab (meanrew) | recalibrator | 1-4 | rclb | attention bias, identity at init |
| multise | recalibrator | 1-4 | rclb | multi-style SE (3 branches) |
| eca | recalibrator | 1-4 | rclb | efficient channel attention |
| prm | recalibrator | 1-4 | prm | position-aware recalibration |
| at | mixer | 4 | conv2 | AT kernel |
| emod | mixer | 3, 4 | conv2 | EfficientMod modulation |
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from paddle import nn

from models.attention.at_kernel import ATKernel
from models.attention.base import (
    ALL_STAGES,
    MIXER,
    RECALIBRATOR,
    AttentionBlock,
    AttentionSpec,
    BlockContext,
    Mixer,
    Recalibrator,
    stage_resolution,
)
from models.attention.channel import ABLayer, ECALayer, GELayer, MultiSELayer, SELayer, SRMLayer
from models.attention.emod import EfficientModMixer
from models.attention.prm import PRMLayer
from models.registry import Registry
from utils.errors import UserError

__all__ = [
    "ATTENTIONS", "AttentionBlock", "AttentionSpec", "BlockContext", "Mixer", "Recalibrator", "MIXER", "RECALIBRATOR",
    "attention_factories", "attention_blocks", "get_attention", "parse_stages", "resolve_stages", "stage_resolution",
    "validate_attention",
]

ATTENTIONS: Registry[AttentionSpec] = Registry("attention block")


def _register(spec: AttentionSpec, aliases: tuple[str, ...] = ()) -> None:
    ATTENTIONS.register(spec.name, aliases)(spec)


# name, class, kind, default stages, checkpoint key (recalibrators) -- one line per block.
_register(AttentionSpec("se", SELayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="squeeze-and-excitation"))
_register(AttentionSpec("srm", SRMLayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="style-based recalibration"))
_register(AttentionSpec("ge", GELayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="gather-excite (global depthwise conv)"))
_register(AttentionSpec("ab", ABLayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="attention bias"), aliases=("meanrew",))
_register(AttentionSpec("multise", MultiSELayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="multi-style SE"))
_register(AttentionSpec("eca", ECALayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="efficient channel attention"))
_register(AttentionSpec("prm", PRMLayer, RECALIBRATOR, ALL_STAGES, "prm", summary="position-aware recalibration"))
_register(AttentionSpec("at", ATKernel, MIXER, (4,), bottleneck_only=True, summary="AT kernel"))
_register(AttentionSpec("emod", EfficientModMixer, MIXER, (3, 4), bottleneck_only=True, summary="EfficientMod modulation"))


def validate_attention(name: str | None) -> str | None:
    """Return the canonical attention name (None or 'none' -> None); UserError listing the choices if unknown."""
    if name is None or str(name).lower() in ("", "none", "null"):
        return None
    return ATTENTIONS.canonical(str(name))


def get_attention(name: str) -> AttentionSpec:
    """The registry entry of ``name`` (or an alias)."""
    return ATTENTIONS.get(name)


def parse_stages(value: Any) -> tuple[int, ...] | None:
    """Stages as a sorted tuple of distinct ints in 1..4.

    Accepts None (-> None), an int, a sequence of ints, or a string such as ``"3,4"``
    (commas and/or spaces). UserError for anything else.
    """
    if value is None:
        return None
    items: Iterable[Any]
    if isinstance(value, str):
        items = [p for p in value.replace(",", " ").split()]
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise UserError(f"attention stages must be ints 1..4 such as '3,4', got {value!r}")
    stages = []
    for item in items:
        try:
            if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
                raise ValueError
            stage = int(item)
        except (TypeError, ValueError):
            raise UserError(f"attention stages must be ints 1..4 such as '3,4', got {value!r}") from None
        if stage not in ALL_STAGES:
            raise UserError(f"attention stage {stage} does not exist: a ResNet has stages 1, 2, 3 and 4")
        if stage in stages:
            raise UserError(f"attention stage {stage} is given twice in {value!r}")
        stages.append(stage)
    if not stages:
        raise UserError("attention stages: give at least one of 1, 2, 3, 4 (or leave them unset for the block's default)")
    return tuple(sorted(stages))


def resolve_stages(name: str, stages: Any = None) -> tuple[int, ...]:
    """The stages ``name`` goes into: ``stages`` when given, else the block's default."""
    parsed = parse_stages(stages)
    return parsed if parsed is not None else get_attention(name).default_stages


def attention_factories(name: str, stages: Iterable[int], img_size: int) -> dict[str, Callable[..., nn.Layer | None]]:
    """The ``recalibrator_factory`` / ``mixer_factory`` keyword for ``models.resnet.ResNet``.

    Args:
        name: a registered attention block.
        stages: stages (1..4) that receive it.
        img_size: configured square input side (sizes GE's kernel).
    """
    spec = get_attention(name)
    chosen = frozenset(stages)
    if spec.kind == RECALIBRATOR:
        def recalibrator_factory(channels: int, stage: int) -> nn.Layer | None:
            if stage not in chosen:
                return None
            return spec.build(BlockContext(stage=stage, img_size=img_size, channels=channels))

        return {"recalibrator_factory": recalibrator_factory}

    def mixer_factory(in_channels: int, out_channels: int, stride: int, stage: int) -> nn.Layer | None:
        if stage not in chosen:
            return None
        return spec.build(BlockContext(stage=stage, img_size=img_size, in_channels=in_channels,
                                       out_channels=out_channels, stride=stride))

    return {"mixer_factory": mixer_factory}


def attention_blocks(model: nn.Layer) -> list[tuple[str, AttentionBlock]]:
    """(state-dict prefix, block) of every attention block in ``model``, e.g. ``('layer1.0.rclb.', SELayer)``."""
    return [(f"{name}.", layer) for name, layer in model.named_sublayers() if isinstance(layer, AttentionBlock)]
