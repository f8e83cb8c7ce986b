"""The spec protocol: backbone families and attention blocks carry their knowledge.

A family registered here (a tiny backbone + its spec, nothing else edited) is built by
``build_model``, hosts a recalibrator, refuses a mixer, and its checkpoints are detected and
converted; an attention block registered here is recognised by the converter from its key
signature alone. The Paddle-free name lists of ``models.spec`` equal the registries.
"""
from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import paddle
import pytest
from paddle import nn

import models.spec as spec_mod
from models import build_model
from models.attention import (
    ATTENTIONS,
    RECALIBRATOR,
    AttentionSpec,
    CheckpointKeys,
    KeyRule,
    Recalibrator,
    attention_blocks,
    stage_resolution,
)
from models.attention.base import constant_attr
from models.convert import _has_attention_keys, convert_torch_state, detect_format, infer_attention
from models.csra import HEAD_TEMPERATURES, CSRAModel
from models.family import FAMILIES, MODELS, BackboneFamily, ModelSpec, register_family
from models.weights import load_state
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- a fake family, defined here only
class TinyBlock(nn.Layer):
    """conv 2x2/2 + BN, and an optional recalibrator on its output stored under its checkpoint key."""

    def __init__(self, cin: int, cout: int, recalibrator: nn.Layer | None) -> None:
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, 2, stride=2, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout)
        self.key = getattr(recalibrator, "checkpoint_key", None)
        if recalibrator is not None:
            setattr(self, self.key, recalibrator)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.bn(self.conv(x))
        return getattr(self, self.key)(out) if self.key else out


class TinyBackbone(nn.Layer):
    """Stem (4x4/4 conv) then ``block2..block4`` (stride 2 each): [B,3,H,W] -> [B, width, H/32, W/32]."""

    def __init__(self, width: int, recalibrator_factory: Any = None) -> None:
        super().__init__()
        self.stem = nn.Conv2D(3, 16, 4, stride=4)
        chans = {2: 16, 3: 16, 4: width}
        cin = 16
        for stage, cout in chans.items():
            recal = recalibrator_factory(cout, stage) if recalibrator_factory else None
            setattr(self, f"block{stage}", TinyBlock(cin, cout, recal))
            cin = cout
        self.feature_channels = width

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.block4(self.block3(self.block2(self.stem(x))))


class TinyCSRA(CSRAModel, TinyBackbone):
    """The fake family's model: the tiny backbone + the CSRA head."""


FAKE_FAMILY = BackboneFamily(
    name="fake",
    build=lambda spec, **kw: TinyCSRA(spec.feature_channels, **kw),
    signature=lambda keys: "stem.weight" in keys or "stem_conv.weight" in keys,
    key_hint="'stem.weight' or 'stem_conv.weight'",
    torch_format="fake-torch",
    head_keys=("head.weight", "head.bias"),
    rename=lambda key: key.replace("stem_conv.", "stem."),  # its torch checkpoints call the stem stem_conv
    block_pattern=r"block(?P<stage>[2-4])\.",
)
FAKE_MODELS = [ModelSpec("fake_x", "fake", preset="x", block="tiny", feature_channels=32,
                         attention_kinds=frozenset({RECALIBRATOR}))]


@pytest.fixture
def fake_family() -> Iterator[None]:
    register_family(FAKE_FAMILY, FAKE_MODELS)
    yield
    for spec in FAKE_MODELS:
        MODELS.unregister(spec.name)
    FAMILIES.unregister(FAKE_FAMILY.name)


# ----------------------------------------------------------------------------- a fake attention block
class Gate(Recalibrator):
    """``x * (1 + alpha_c)``; ``alpha`` [C] starts at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = self.create_parameter([channels], attr=constant_attr(0.0))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x * (1 + self.alpha.reshape([1, -1, 1, 1]))

    def flops(self, in_shape: list[int]) -> int:
        return int(np.prod(in_shape))


GATE = AttentionSpec("gate", Gate, RECALIBRATOR, (4,), "gate", summary="test gate",
                     checkpoint=CheckpointKeys("gate-repo", (KeyRule("alpha", ndim=1),)))


@pytest.fixture
def gate_block() -> Iterator[None]:
    ATTENTIONS.register(GATE.name)(GATE)
    yield
    ATTENTIONS.unregister(GATE.name)


# ----------------------------------------------------------------------------- helpers
def torch_names(model: nn.Layer, extra: dict[str, np.ndarray] | None = None) -> "OrderedDict[str, np.ndarray]":
    """A model's weights (classifier excluded, random BN statistics and attention tensors) as torch would name them."""
    rng = np.random.default_rng(0)
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, value in model.state_dict().items():
        if key.startswith("classifier."):
            continue
        if key.endswith("._variance"):
            value.set_value(rng.uniform(0.5, 1.5, value.shape).astype(np.float32))
        elif key.endswith(("._mean", "alpha")) or ".rclb." in key:
            value.set_value(rng.normal(0, 0.3, value.shape).astype(np.float32))
        out[key.replace("._mean", ".running_mean").replace("._variance", ".running_var")] = value.numpy()
    out.update(extra or {})
    return out


def features(model: nn.Layer) -> np.ndarray:
    model.eval()
    with paddle.no_grad():
        return model.forward_features(paddle.to_tensor(np.random.default_rng(1).random((2, 3, 64, 64), dtype=np.float32))).numpy()


# ----------------------------------------------------------------------------- the family protocol
def test_a_registered_family_builds_through_build_model(fake_family) -> None:
    model = build_model("fake_x", 3, num_heads=2, lam=0.2)
    assert isinstance(model, TinyCSRA)
    assert model.config == {"model": "fake_x", "num_classes": 3, "num_heads": 2, "lam": 0.2, "attention": None,
                            "attention_stages": None}
    assert sorted(model.state_dict())[:2] == ["block2.bn._mean", "block2.bn._variance"]  # backbone keys at the top level
    assert [k for k in model.state_dict() if k.startswith("classifier.")] == [
        "classifier.multi_head.0.head.weight", "classifier.multi_head.1.head.weight"]
    model.eval()
    x = paddle.rand([2, 3, 64, 64])
    with paddle.no_grad():
        assert model.forward_features(x).shape == [2, 32, 2, 2]
        assert model(x).shape == [2, 3]
    with pytest.raises(UserError, match="no ImageNet weights are known for the model 'fake_x'"):
        build_model("fake_x", 3, pretrained="imagenet")


def test_a_registered_family_hosts_the_attention_kinds_its_spec_lists(fake_family) -> None:
    model = build_model("fake_x", 3, attention="se", attention_stages=[3, 4])
    assert [p for p, _ in attention_blocks(model)] == ["block3.rclb.", "block4.rclb."]
    with pytest.raises(UserError, match="--attention at is a mixer .* --model fake_x has tiny blocks"):
        build_model("fake_x", 3, attention="at")


def test_a_registered_family_converts_its_own_checkpoints(fake_family) -> None:
    source = build_model("fake_x", 3, attention="se", attention_stages=[4])
    state = torch_names(source, {"head.weight": np.zeros((1000, 32), np.float32), "head.bias": np.zeros(1000, np.float32)})
    state = OrderedDict((k.replace("stem.", "stem_conv.") if k.startswith("stem.") else k, v) for k, v in state.items())
    state["block4.rclb.fc.0.weight"] = state["block4.rclb.fc.0.weight"][:, :, 0, 0]  # torch Linear [out, in]
    state["block4.rclb.fc.2.weight"] = state["block4.rclb.fc.2.weight"][:, :, 0, 0]
    assert infer_attention(state) == {"attention": "se", "attention_stages": [4]}
    assert detect_format(list(state)) == "channel-attention"
    model = build_model("fake_x", 3, attention="se", attention_stages=[4])
    conv = convert_torch_state(state, model)
    assert ("stem_conv.weight", "stem.weight") in conv.renamed
    assert {k for k, _ in conv.skipped} == {"head.weight", "head.bias"}
    load_state(model, conv.state, "test")
    np.testing.assert_array_equal(features(model), features(source))
    plain = {k: v for k, v in state.items() if ".rclb." not in k}
    assert detect_format(list(plain)) == "fake-torch"
    with pytest.raises(UserError, match="unrecognised checkpoint.*fake: 'stem.weight'"):
        detect_format(["encoder.weight"])


def test_a_registered_attention_block_is_found_by_its_key_signature(gate_block) -> None:
    source = build_model("resnet18", 3, attention="gate")
    assert source.config["attention_stages"] == [4] and "layer4.1.gate.alpha" in source.state_dict()
    state = torch_names(source, {"fc.weight": np.zeros((1000, 512), np.float32), "fc.bias": np.zeros(1000, np.float32)})
    assert detect_format(list(state)) == "gate-repo"
    assert _has_attention_keys(state)
    assert infer_attention({f"module.{k}": v for k, v in state.items()}) == {"attention": "gate", "attention_stages": [4]}
    model = build_model("resnet18", 3, attention="gate")
    load_state(model, convert_torch_state(state, model).state, "test")
    np.testing.assert_array_equal(features(model), features(source))
    with pytest.raises(UserError, match="use --attention gate --attention_stages 4"):
        convert_torch_state(state, build_model("resnet18", 3))


# ----------------------------------------------------------------------------- the Paddle-free names
def test_spec_names_equal_the_registries() -> None:
    # registry order follows the import order of the family modules; the names must match
    assert sorted(spec_mod.MODEL_NAMES) == sorted(MODELS.names()) and len(set(spec_mod.MODEL_NAMES)) == len(spec_mod.MODEL_NAMES)
    assert spec_mod.ATTENTION_NAMES == tuple(ATTENTIONS.names())
    assert spec_mod.ATTENTION_ALIASES == ATTENTIONS.aliases()
    assert sorted(spec_mod.BACKBONE_FAMILIES) == sorted(FAMILIES.names())
    assert {MODELS.get(name).family for name in MODELS.names()} == set(FAMILIES.names())
    assert spec_mod.DEFAULT_MODEL in MODELS
    assert HEAD_TEMPERATURES is spec_mod.HEAD_TEMPERATURES and spec_mod.SUPPORTED_HEADS == (1, 2, 4, 6, 8)
    assert all(len(HEAD_TEMPERATURES[n]) == n for n in spec_mod.SUPPORTED_HEADS)


def test_build_model_defaults_to_the_spec_img_size() -> None:
    assert spec_mod.DEFAULT_IMG_SIZE == 448
    model = build_model("resnet18", 3, attention="ge", attention_stages=[4])
    assert model.layer4[0].rclb.kernel_size == stage_resolution(spec_mod.DEFAULT_IMG_SIZE, 4) == 14


def test_spec_and_family_modules_import_no_paddle() -> None:
    code = ("import sys, models.spec, models.family; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('paddle', 'numpy')); "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_cli_stage_flag_and_head_choices_come_from_models() -> None:
    import argparse

    from cli.args import add_model_args, stage_list
    from models.spec import parse_stages

    assert stage_list("4, 3") == parse_stages("4,3") == [3, 4]
    with pytest.raises(UserError) as want:
        parse_stages("3,3")
    with pytest.raises(argparse.ArgumentTypeError) as got:
        stage_list("3,3")
    assert f"--attention_stages {got.value}" == str(want.value)  # the same message; argparse prefixes the flag
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    heads = next(a for a in parser._actions if a.dest == "num_heads")
    assert list(heads.choices) == list(spec_mod.SUPPORTED_HEADS)
