"""Attention blocks placed inside the ResNet residual blocks, and their registry.

``ATTENTIONS`` maps a name to an ``AttentionSpec``: the block class, its kind
(``recalibrator``: on the residual branch after the last BN, before the add; ``mixer``:
replaces a bottleneck's 3x3 conv), its default stages and (recalibrators) the attribute
name it is stored under in a residual block, which is the key prefix of the original
checkpoints, and its checkpoint key signature (``CheckpointKeys``: the format name of its
reference checkpoints, the keys that identify it, optional img_size / rewrite hooks).
Adding a block = one class (subclass of ``Recalibrator`` or ``Mixer``) plus one ``_register``
entry below (and its name in ``models.spec.ATTENTION_NAMES``, the Paddle-free list for
``--help``); ``build_model`` and ``models.convert`` only talk to the registry.

| name | kind | default stages | key | identified by | origin |
| --- | --- | --- | --- | --- | --- |
| se | recalibrator | 1-4 | rclb | ``fc.0.weight`` 2-D (torch Linear) | squeeze-and-excitation |
| srm | recalibrator | 1-4 | rclb | ``cfc`` [C, 2] | style-based recalibration (no weight decay) |
| ge | recalibrator | 1-4 | rclb | ``conv.0.weight`` (kernel -> img_size) | gather-excite, global depthwise kernel sized from img_size |
| ab (meanrew) | recalibrator | 1-4 | rclb | ``cfc`` [C] | attention bias, identity at init |
| multise | recalibrator | 1-4 | rclb | ``style_assigner``, ``fc1`` (multise3), 4-D ``fc.0.weight`` | multi-style SE (3 branches) |
| eca | recalibrator | 1-4 | rclb | ``conv.weight`` | efficient channel attention |
| prm | recalibrator | 1-4 | prm | anything under ``prm.`` | position-aware recalibration |
| at | mixer | 4 | conv2 | ``emb_K.*`` (owns ``emb_K``, ``emb_V``, ``MLP``) | AT kernel |
| emod | mixer | 3, 4 | conv2 | ``context_layer.*`` (owns ``fc1``, ``fc2``, ``context_layer``) | EfficientMod modulation |

The first six come as ``channel-attention`` checkpoints, ``prm`` as ``prm-resnet``, ``at`` as
``at-kernel-mmcls``; these format names are what ``models.convert.detect_format`` reports.
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
    CheckpointKeys,
    KeyRule,
    Mixer,
    Recalibrator,
    stage_resolution,
)
from models.attention.channel import (
    ABLayer,
    ECALayer,
    GELayer,
    MultiSELayer,
    SELayer,
    SRMLayer,
    ge_img_size,
    rewrite_multise3,
)
from models.attention.emod import EfficientModMixer
from models.attention.prm import PRMLayer
from models.registry import Registry
from models.spec import parse_stages

__all__ = [
    "ATTENTIONS", "AttentionBlock", "AttentionSpec", "BlockContext", "CheckpointKeys", "KeyRule", "Mixer", "Recalibrator",
    "MIXER", "RECALIBRATOR", "attention_factories", "attention_blocks", "get_attention", "parse_stages", "resolve_stages",
    "stage_resolution", "validate_attention",
]

ATTENTIONS: Registry[AttentionSpec] = Registry("attention block")


def _register(spec: AttentionSpec, aliases: tuple[str, ...] = ()) -> None:
    ATTENTIONS.register(spec.name, aliases)(spec)


CHANNEL_ATTENTION = "channel-attention"  # SanderKlomp/channel-attention ResNets: layerX.Y.rclb.*


def _keys(source_format: str | None, *rules: str | tuple[str, int], **hooks: Any) -> CheckpointKeys:
    """``CheckpointKeys`` from compact rules: a leaf regex, or (leaf regex, tensor rank)."""
    parsed = tuple(KeyRule(r) if isinstance(r, str) else KeyRule(*r) for r in rules)
    return CheckpointKeys(source_format, parsed, **hooks)


# name, class, kind, default stages, checkpoint key (recalibrators), checkpoint signature -- one entry per block.
_register(AttentionSpec("se", SELayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="squeeze-and-excitation",
                        checkpoint=_keys(CHANNEL_ATTENTION, (r"fc\.0\.weight", 2))))
_register(AttentionSpec("srm", SRMLayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="style-based recalibration",
                        checkpoint=_keys(CHANNEL_ATTENTION, ("cfc", 2))))
_register(AttentionSpec("ge", GELayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="gather-excite (global depthwise conv)",
                        checkpoint=_keys(CHANNEL_ATTENTION, r"conv\.0\.weight", img_size=ge_img_size)))
_register(AttentionSpec("ab", ABLayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="attention bias",
                        checkpoint=_keys(CHANNEL_ATTENTION, ("cfc", 1))), aliases=("meanrew",))
_register(AttentionSpec("multise", MultiSELayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="multi-style SE",
                        checkpoint=_keys(CHANNEL_ATTENTION, r"(fc1|style_assigner)\..*", (r"fc\.0\.weight", 4),
                                         rewrite=rewrite_multise3)))
_register(AttentionSpec("eca", ECALayer, RECALIBRATOR, ALL_STAGES, "rclb", summary="efficient channel attention",
                        checkpoint=_keys(CHANNEL_ATTENTION, r"conv\.weight")))
_register(AttentionSpec("prm", PRMLayer, RECALIBRATOR, ALL_STAGES, "prm", summary="position-aware recalibration",
                        checkpoint=_keys("prm-resnet", ".*")))  # 13952522076/PRM ResNets: layerX.Y.prm.*
_register(AttentionSpec("at", ATKernel, MIXER, (4,), summary="AT kernel",  # mmcls backbone: backbone.layerX.Y.conv2.*
                        checkpoint=_keys("at-kernel-mmcls", r"emb_K\..*", owns=("emb_K.", "emb_V.", "MLP."))))
_register(AttentionSpec("emod", EfficientModMixer, MIXER, (3, 4), summary="EfficientMod modulation",
                        checkpoint=_keys(None, r"context_layer\..*", owns=("fc1.", "fc2.", "context_layer."))))


def validate_attention(name: str | None) -> str | None:
    """Return the canonical attention name (None or 'none' -> None); UserError listing the choices if unknown."""
    if name is None or str(name).lower() in ("", "none", "null"):
        return None
    return ATTENTIONS.canonical(str(name))


def get_attention(name: str) -> AttentionSpec:
    """The registry entry of ``name`` (or an alias)."""
    return ATTENTIONS.get(name)


def resolve_stages(name: str, stages: Any = None) -> list[int]:
    """The stages block ``name`` goes into: ``stages`` parsed by ``parse_stages`` (the one stages
    parser, from ``models.spec``) when given, else the block's default; a sorted list of ints."""
    parsed = parse_stages(stages)
    return parsed if parsed is not None else list(get_attention(name).default_stages)


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
