"""Converter round trips for the attention repositories' checkpoint formats.

The tests write PyTorch-format files with ``utils.pth_io.save_pth`` (torch names and
layouts: ``running_mean``, Linear weights [out, in], ``num_batches_tracked``, the original
prefixes), convert them and compare values and features with the model they came from.
"""
from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import paddle
import pytest

from models import build_model
from models.attention import attention_blocks
from models.attention import get_attention
from models.convert import _linear_weight_names, convert_torch_state, detect_format, infer_attention
from models.weights import load_state
from utils.errors import UserError
from utils.pth_io import save_pth

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_attention import multise3_np, randomize  # noqa: E402


# The attention repositories' format names (user-visible: printed by the converter), carried by the specs.
FORMAT_CHANNEL_ATTENTION = "channel-attention"
FORMAT_PRM = "prm-resnet"
FORMAT_AT_MMCLS = "at-kernel-mmcls"


def test_specs_carry_the_format_names() -> None:
    for name in ("se", "srm", "ge", "ab", "multise", "eca"):
        assert get_attention(name).checkpoint.source_format == FORMAT_CHANNEL_ATTENTION
    assert get_attention("prm").checkpoint.source_format == FORMAT_PRM
    assert get_attention("at").checkpoint.source_format == FORMAT_AT_MMCLS
    assert get_attention("emod").checkpoint.source_format is None


# Weights that are nn.Linear in the originals but 1x1 convs here ([out, in] vs [out, in, 1, 1]).
TORCH_LINEAR_AS_CONV = {"se": (".rclb.fc.0.weight", ".rclb.fc.2.weight"), "multise": (".rclb.style_assigner.weight",)}


def torch_state(model: paddle.nn.Layer, prefix: str = "", imagenet_fc: bool = True) -> "OrderedDict[str, np.ndarray]":
    """A Paddle model's backbone (classifier excluded) as the PyTorch original would store it."""
    linear = _linear_weight_names(model)
    as_conv = TORCH_LINEAR_AS_CONV.get(model.config["attention"], ())
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, value in model.state_dict().items():
        if key.startswith("classifier."):
            continue
        array = value.numpy()
        if key in linear:
            array = np.ascontiguousarray(array.T)
        elif key.endswith(as_conv):
            array = array[:, :, 0, 0]
        key = key.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        out[prefix + key] = array
        if key.endswith("running_var"):
            out[prefix + key.replace("running_var", "num_batches_tracked")] = np.array(11, dtype=np.int64)
    if imagenet_fc:
        out[prefix + "fc.weight"] = np.zeros((1000, model.feature_channels), np.float32)
        out[prefix + "fc.bias"] = np.zeros((1000,), np.float32)
    return out


def source_model(arch: str, attention: str | None, img_size: int = 64, seed: int = 0) -> paddle.nn.Layer:
    """A model with non-trivial weights everywhere (attention blocks and BN statistics)."""
    paddle.seed(seed)
    model = build_model(arch, 4, attention=attention, img_size=img_size)
    rng = np.random.default_rng(seed)
    for name, tensor in model.state_dict().items():
        if name.endswith("._mean"):
            tensor.set_value(rng.uniform(-0.2, 0.2, tensor.shape).astype(np.float32))
        elif name.endswith("._variance"):
            tensor.set_value(rng.uniform(0.5, 1.5, tensor.shape).astype(np.float32))
    for i, (_, block) in enumerate(attention_blocks(model)):
        randomize(block, seed=100 + i)
        for sub in block.sublayers(include_self=True):
            if isinstance(sub, (paddle.nn.BatchNorm2D, paddle.nn.GroupNorm)):
                sub.weight.set_value(paddle.uniform(sub.weight.shape, min=0.2, max=0.4))
    model.eval()
    return model


def features(model: paddle.nn.Layer, size: int = 64) -> np.ndarray:
    x = paddle.to_tensor(np.random.default_rng(1).random((2, 3, size, size), dtype=np.float32))
    model.eval()
    with paddle.no_grad():
        return model.forward_features(x).numpy()


def assert_same_backbone(model: paddle.nn.Layer, source: paddle.nn.Layer) -> None:
    got = model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("classifier."):
            np.testing.assert_array_equal(got[key].numpy(), value.numpy(), err_msg=key)
    np.testing.assert_allclose(features(model), features(source), rtol=1e-6, atol=1e-6)


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/convert_torch_weights.py", *args], cwd=ROOT, capture_output=True, text=True)


# ----------------------------------------------------------------------------- channel-attention ResNets
@pytest.mark.parametrize("name", ["se", "srm", "ge", "ab", "multise", "eca"])
def test_channel_attention_checkpoint_converts(name: str, tmp_path: Path) -> None:
    source = source_model("resnet18", name)
    state = torch_state(source, prefix="module.")
    assert detect_format([k[len("module."):] for k in state]) == FORMAT_CHANNEL_ATTENTION
    if name == "se":
        assert state["module.layer2.0.rclb.fc.0.weight"].shape == (8, 128)  # torch Linear [out, in]
    implied = infer_attention(state)
    assert implied["attention"] == name and implied["attention_stages"] == [1, 2, 3, 4]
    if name == "ge":
        assert implied["img_size"] == 64  # from the stage-1 kernel (16)
    model = build_model("resnet18", 4, attention=name, img_size=64)
    conv = convert_torch_state(state, model)
    assert conv.format == FORMAT_CHANNEL_ATTENTION and conv.prefix_stripped == "module."
    assert not conv.missing_attention and len(conv.missing_ok) == 1  # the CSRA head only
    load_state(model, conv.state, "test")
    assert_same_backbone(model, source)


@pytest.mark.parametrize("name", ["se", "ge"])
def test_converter_cli_takes_the_attention_from_the_keys(name: str, tmp_path: Path) -> None:
    source = source_model("resnet18", name)
    save_pth({"state_dict": torch_state(source, prefix="module."), "epoch": 90}, tmp_path / "src.pth")
    result = _tool("--src", str(tmp_path / "src.pth"), "--dst", str(tmp_path / "out.pdparams"), "--model", "resnet18", "--num_cls", "4")
    assert result.returncode == 0, result.stderr
    assert "source format: channel-attention (prefix 'module.' stripped)" in result.stdout
    assert f"attention from the checkpoint: {name} in stage(s) 1,2,3,4" in result.stdout
    assert "ImageNet classifier, replaced by the CSRA head" in result.stdout
    model = build_model("resnet18", 4, attention=name, img_size=64, pretrained=str(tmp_path / "out.pdparams"))
    assert_same_backbone(model, source)


def test_multise3_checkpoint_converts_exactly_into_multise(tmp_path: Path) -> None:
    source = source_model("resnet18", "multise")
    state = torch_state(source)
    # Rewrite every multise block as the TensorRT variant: three SE MLPs + style assigner.
    branches_of_block = {}
    for prefix, block in attention_blocks(source):
        c, h = block.channels, block.hidden
        w0, b0 = block.fc[0].weight.numpy()[:, :, 0, 0], block.fc[0].bias.numpy()
        w2, b2 = block.fc[2].weight.numpy()[:, :, 0, 0], block.fc[2].bias.numpy()
        for key in ("fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"):
            del state[prefix + key]
        branches = []
        for i in range(3):
            branch = (w0[i * h:(i + 1) * h], b0[i * h:(i + 1) * h], w2[i * c:(i + 1) * c], b2[i * c:(i + 1) * c])
            for layer, (w, b) in (("0", branch[:2]), ("2", branch[2:])):
                state[f"{prefix}fc{i + 1}.{layer}.weight"] = np.ascontiguousarray(w)  # Linear [out, in]
                state[f"{prefix}fc{i + 1}.{layer}.bias"] = b
            branches.append(branch)
        branches_of_block[prefix] = branches
    assert state["layer1.0.rclb.style_assigner.weight"].shape == (3, 64)  # torch Linear layout
    save_pth(state, tmp_path / "multise3.pth")
    result = _tool("--src", str(tmp_path / "multise3.pth"), "--dst", str(tmp_path / "out.pdparams"), "--model", "resnet18", "--num_cls", "4")
    assert result.returncode == 0, result.stderr
    assert "multise3: 8 block(s) of three SE MLPs merged into multise's grouped convs (exact)" in result.stdout
    assert "attention from the checkpoint: multise in stage(s) 1,2,3,4" in result.stdout
    model = build_model("resnet18", 4, attention="multise", pretrained=str(tmp_path / "out.pdparams"))
    assert_same_backbone(model, source)
    # Independently of the multise code path: the converted block's gate equals the
    # three-MLP formula evaluated with the branch weights as written to the file.
    prefix, block = attention_blocks(model)[5]
    x = np.random.default_rng(3).uniform(0.5, 1.5, (2, block.channels, 3, 3)).astype(np.float32)
    with paddle.no_grad():
        gate = (block(paddle.to_tensor(x)).numpy() / x)[:, :, 0, 0]
    style_w = state[prefix + "style_assigner.weight"].astype(np.float64)
    want = multise3_np(x.astype(np.float64).mean(axis=(2, 3)), [tuple(a.astype(np.float64) for a in b) for b in branches_of_block[prefix]], style_w)
    np.testing.assert_allclose(gate, want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- PRM and AT
def test_prm_checkpoint_converts() -> None:
    source = source_model("resnet18", "prm")
    state = torch_state(source, prefix="module.")
    assert any(".prm.theta" in k for k in state)
    model = build_model("resnet18", 4, attention="prm")
    conv = convert_torch_state(state, model)
    assert conv.format == FORMAT_PRM
    load_state(model, conv.state, "test")
    assert_same_backbone(model, source)


def test_at_kernel_mmcls_backbone_converts(tmp_path: Path) -> None:
    source = source_model("resnet50", "at")
    state = torch_state(source, prefix="backbone.", imagenet_fc=False)
    state["head.fc.weight"] = np.zeros((1000, 2048), np.float32)
    state["head.fc.bias"] = np.zeros((1000,), np.float32)
    assert "backbone.layer4.2.conv2.MLP.4.weight" in state and "backbone.layer4.0.conv2.emb_K.1.running_var" in state
    save_pth({"meta": {"epoch": 100}, "state_dict": state}, tmp_path / "at.pth")
    result = _tool("--src", str(tmp_path / "at.pth"), "--dst", str(tmp_path / "at.pdparams"), "--model", "resnet50", "--num_cls", "4")
    assert result.returncode == 0, result.stderr
    assert f"source format: {FORMAT_AT_MMCLS} (prefix 'backbone.' stripped)" in result.stdout
    assert "skipped 2: mmcls classification head, replaced by the CSRA head (head.fc.weight, head.fc.bias)" in result.stdout
    assert "attention from the checkpoint: at in stage(s) 4" in result.stdout
    model = build_model("resnet50", 4, attention="at", pretrained=str(tmp_path / "at.pdparams"))
    assert_same_backbone(model, source)


# ----------------------------------------------------------------------------- backbone-only sources, errors
def test_torchvision_imagenet_into_mixer_model_leaves_blocks_fresh(tmp_path: Path) -> None:
    plain = source_model("resnet50", None)
    save_pth(torch_state(plain), tmp_path / "r50.pth")
    result = _tool("--src", str(tmp_path / "r50.pth"), "--dst", str(tmp_path / "r50_at.pdparams"),
                   "--model", "resnet50", "--num_cls", "4", "--attention", "at")
    assert result.returncode == 0, result.stderr
    assert "skipped 3: 3x3 conv replaced by the attention mixer (which starts fresh) (layer4.0.conv2.weight" in result.stdout
    assert "attention-block tensor(s) (at), initialised fresh" in result.stdout
    model = build_model("resnet50", 4, attention="at", pretrained=str(tmp_path / "r50_at.pdparams"))
    np.testing.assert_array_equal(model.layer4[2].conv3.weight.numpy(), plain.layer4[2].conv3.weight.numpy())
    np.testing.assert_array_equal(model.layer3[1].conv2.weight.numpy(), plain.layer3[1].conv2.weight.numpy())


def test_wrong_attention_flags_get_a_hint() -> None:
    state = torch_state(source_model("resnet18", "se"))
    with pytest.raises(UserError, match="use --attention se --attention_stages 1,2,3,4"):
        convert_torch_state(state, build_model("resnet18", 4, attention="srm"))
    with pytest.raises(UserError, match="use --attention se"):
        convert_torch_state(state, build_model("resnet18", 4))
    ge_state = torch_state(source_model("resnet18", "ge", img_size=64))
    with pytest.raises(UserError, match="--img_size 64"):
        convert_torch_state(ge_state, build_model("resnet18", 4, attention="ge", img_size=224))


def test_infer_attention_from_keys() -> None:
    assert infer_attention({"conv1.weight": np.zeros((64, 3, 7, 7))}) == {}
    keys = {"layer3.0.rclb.cfc": np.zeros((1024, 2)), "layer4.1.rclb.cfc": np.zeros((2048, 2))}
    assert infer_attention(keys) == {"attention": "srm", "attention_stages": [3, 4]}
    assert infer_attention({"module.layer1.0.rclb.cfc": np.zeros(256)})["attention"] == "ab"
    assert infer_attention({"layer2.0.rclb.conv.weight": np.zeros((1, 1, 3))})["attention"] == "eca"
    assert infer_attention({"backbone.layer4.0.conv2.emb_K.0.weight": np.zeros(1), "head.fc.bias": np.zeros(1)}) == {
        "attention": "at", "attention_stages": [4]}
    assert infer_attention({"layer2.0.rclb.conv.0.weight": np.zeros((512, 1, 56, 56))})["img_size"] == 448
    with pytest.raises(UserError, match="mixes several attention blocks"):
        infer_attention({"layer1.0.rclb.cfc": np.zeros(256), "layer1.0.prm.theta": np.zeros((1, 2, 1, 1))})
