"""Backbone families and model specs: what a model is, where its weights are, how its checkpoints look.

A *backbone family* (ResNet, later ViT, EfficientMod...) is one module that registers a
``BackboneFamily`` and its ``ModelSpec``s with ``register_family``; ``build_model``, the
weight loader and the checkpoint converter only talk to these registries:

- ``ModelSpec``: one model name (``resnet50``): its family, depth/preset, block kind, output
  width, the attention kinds its blocks can host and its pretrained weights (URL + md5);
- ``BackboneFamily``: how to build a model of a spec (``build``; the model has
  ``forward_features(x [B,3,H,W]) -> [B, C, H/s, W/s]``, ``feature_channels = C`` and a
  CSRA ``classifier``; ``models.csra.CSRAModel`` adds the classifier to a backbone class;
  the map's stride is the spec's ``stride``, 32 for ResNets, 16 for ViTs) and
  its checkpoint knowledge: how its keys look (``signature``, for format detection), the name
  of its plain PyTorch checkpoints' format, the ImageNet classifier keys to drop, a torch ->
  Paddle key mapping, and where attention blocks sit in its state dict (``block_pattern``,
  ``mixer_slot``).

The family modules are listed in ``models.spec.BACKBONE_FAMILIES`` and imported by
``load_families``. This module imports no Paddle.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable

from models.registry import Registry
from models.spec import BACKBONE_FAMILIES

if TYPE_CHECKING:  # pragma: no cover
    from paddle import nn

__all__ = ["BackboneFamily", "FAMILIES", "MODELS", "ModelSpec", "WeightsSource", "family_of", "family_of_name", "load_families",
           "register_family"]


@dataclass(frozen=True)
class WeightsSource:
    """A downloadable weights file: its http(s) URL, md5 and/or the start of its sha256 (None = not checked).

    ``sha256_prefix`` serves releases that publish no md5 but name each file after the first
    hex digits of its sha256 (``name-80ecf9dd.pth``, the PyTorch hub convention).
    """

    url: str
    md5: str | None = None
    sha256_prefix: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Attributes:
        name: the registered name, e.g. ``resnet50``.
        family: the ``BackboneFamily`` name, e.g. ``resnet``.
        preset: the family's size parameter (ResNet depth 50, a ViT preset name...).
        block: the kind of its blocks, for messages (``basic``, ``bottleneck``...).
        feature_channels: width C of ``forward_features`` ([B, C, H/stride, W/stride]).
        attention_kinds: the attention kinds (``recalibrator``, ``mixer``) its blocks can host.
        weights: tag (``--pretrained imagenet``) -> ``WeightsSource``.
        summary: one line for listings.
        stride: output stride s of ``forward_features`` (32: ResNet; 16: ViT's patches).
        aliases: other accepted names (e.g. the reference's ``vit_B16_224``).
    """

    name: str
    family: str
    preset: Any
    block: str
    feature_channels: int
    attention_kinds: frozenset[str] = frozenset()
    weights: dict[str, WeightsSource] = field(default_factory=dict, hash=False, compare=False)
    summary: str = ""
    stride: int = 32
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackboneFamily:
    """One backbone family: how to build its models and how its checkpoints look.

    Attributes:
        name: e.g. ``resnet``.
        build: ``build(spec, *, num_classes, num_heads, lam, **kw) -> model`` where ``kw`` holds
            the attention hooks (``recalibrator_factory`` / ``mixer_factory``, see
            ``models.attention.attention_factories``) when an attention block is chosen. The model
            has ``forward(x [B,3,H,W]) -> logits [B, num_classes]``, ``forward_features(x) ->
            [B, spec.feature_channels, H/spec.stride, W/spec.stride]`` and the CSRA head under
            ``classifier.``. ``kw`` also holds those of ``build_options`` the family declares.
        signature: ``signature(keys) -> bool``: whether a checkpoint's keys (prefix-stripped,
            torch or Paddle names) are this family's.
        key_hint: how its keys look, for the "unrecognised checkpoint" message.
        torch_format: name of the format of its plain PyTorch checkpoints (ImageNet backbones).
        head_keys: the ImageNet classifier keys of those checkpoints (dropped; CSRA has its own).
        rename: torch key -> Paddle key for names that differ beyond BatchNorm's statistics
            (``running_mean`` -> ``_mean`` is done for every family); None = same names.
        block_pattern: regex matching the state-dict prefix of one block that hosts attention
            blocks, with a group ``stage`` (1..4), e.g. ``layer(?P<stage>[1-4])\\.\\d+\\.``.
            None: the family hosts no attention block.
        mixer_slot: name, inside such a block, of the layer a mixer replaces (``conv2``).
        build_options: the optional ``build_model`` settings ``build`` takes as keywords
            (``img_size``: the input side, for parameters shaped by it such as ViT's position
            embedding; ``drop_rate``, ``drop_path_rate``). A non-default value of an option the
            family does not take is a UserError.
        fit_state: ``fit_state(state, model) -> notes``: adapts a checkpoint (Paddle names,
            edited in place) to the model before its shapes are checked, e.g. resamples ViT's
            position embedding to the model's grid; returns one note per change. None: nothing.
        checkpoint_img_size: ``checkpoint_img_size(state) -> int | None``: the input side a
            checkpoint's tensors were made for, when they tell (ViT: its position-embedding
            grid); the converter builds the target at that size so nothing is resampled.
        cpu_fp32_backends: the order in which ``infer.py --backend auto`` tries the inference
            backends for this family's exports on the CPU in fp32 (names of
            ``deploy.backends.REGISTRY``); None: the default order. A backend that cannot run
            the export (e.g. no ``model.onnx``) is skipped.
    """

    name: str
    build: Callable[..., "nn.Layer"]
    signature: Callable[[Collection[str]], bool]
    key_hint: str
    torch_format: str
    head_keys: tuple[str, ...] = ()
    rename: Callable[[str], str] | None = None
    block_pattern: str | None = None
    mixer_slot: str | None = None
    build_options: frozenset[str] = frozenset()
    fit_state: Callable[[dict[str, Any], "nn.Layer"], list[str]] | None = None
    checkpoint_img_size: Callable[[dict[str, Any]], int | None] | None = None
    cpu_fp32_backends: tuple[str, ...] | None = None

    def locate(self, key: str) -> tuple[int, str] | None:
        """``(stage, rest)`` when ``key`` lies inside an attention-hosting block, else None.

        e.g. ``layer3.1.rclb.cfc`` -> ``(3, "rclb.cfc")`` for ResNet.
        """
        if self.block_pattern is None:
            return None
        match = re.match(self.block_pattern, key)
        if match is None:
            return None
        return int(match.group("stage")), key[match.end():]


FAMILIES: Registry[BackboneFamily] = Registry("backbone family")
MODELS: Registry[ModelSpec] = Registry("model")


def register_family(family: BackboneFamily, specs: Iterable[ModelSpec]) -> None:
    """Register ``family`` and its model ``specs`` (each ``spec.family`` must be ``family.name``).

    A family module calls this once at import; tests may register a temporary family and
    remove it with ``FAMILIES.unregister`` / ``MODELS.unregister``.
    """
    specs = list(specs)
    for spec in specs:
        if spec.family != family.name:
            raise ValueError(f"model '{spec.name}' says family '{spec.family}' but is registered with '{family.name}'")
    FAMILIES.register(family.name)(family)
    for spec in specs:
        MODELS.register(spec.name, aliases=spec.aliases)(spec)


def load_families() -> None:
    """Import every family module of ``models.spec.BACKBONE_FAMILIES`` (registers them; imports Paddle)."""
    for module in BACKBONE_FAMILIES.values():
        importlib.import_module(module)


def family_of_name(name: str) -> BackboneFamily | None:
    """The family of the registered model ``name`` (or alias), or None for an unknown name.

    Loads the family modules (``load_families``) first.
    """
    load_families()
    if not name or name not in MODELS:
        return None
    return FAMILIES.get(MODELS.get(name).family)


def family_of(model: Any) -> BackboneFamily | None:
    """The family of a model built by ``build_model`` (from ``model.config['model']``), or None.

    Loads the family modules (``load_families``) first.
    """
    return family_of_name(getattr(model, "config", {}).get("model"))
