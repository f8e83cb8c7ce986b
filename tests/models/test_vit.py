"""The ViT family: the forward against a NumPy statement, position-embedding resampling, presets,
checkpoint layouts (timm .pth / .safetensors, PaddleClas .pdparams, the reference's CSRA .pth),
training settings and one training step.

Small models are built from the family's class with small widths (``ViTCSRA(ViTPreset(...))``)
or, where ``build_model`` / ``load_pretrained`` need a name, under a model spec registered by a
fixture of this file only (``vit_tiny_t``); the product registers ``vit_b16`` and ``vit_l16``.
"""
from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numpy as np
import paddle
import pytest

from models import MODELS, build_model
from models.convert import checkpoint_img_size, convert_torch_state, detect_format
from models.family import ModelSpec
from models.spec import MODEL_ALIASES, canonical_model
from models.vit import (FORMAT_TIMM_VIT, DropPath, ViTCSRA, ViTPreset, fit_position_embedding, resample_grid, resample_matrix)
from models.weights import known_weights, load_pretrained
from utils.errors import UserError
from utils.pth_io import save_pth

ROOT = Path(__file__).resolve().parents[2]
TINY = ViTPreset(dim=32, depth=2, heads=4, mlp_ratio=2.0)
TINY_NAME = "vit_tiny_t"


@pytest.fixture
def tiny_spec() -> Iterator[str]:
    """A ViT model spec with small widths, registered for one test (build_model/load_pretrained need a name)."""
    spec = ModelSpec(TINY_NAME, "vit", preset=TINY, block="transformer", feature_channels=TINY.dim, stride=16)
    MODELS.register(spec.name)(spec)
    yield spec.name
    MODELS.unregister(spec.name)


def tiny(img_size: int = 64, seed: int = 0, **kw) -> ViTCSRA:
    """A 2-block, width-32 ViT + CSRA with LayerNorms moved away from 1/0 (so that eps and affine show)."""
    paddle.seed(seed)
    kw = {"num_classes": 5, "num_heads": 8, "lam": 0.3, **kw}
    model = ViTCSRA(TINY, img_size=img_size, **kw)
    rng = np.random.default_rng(seed)
    for key, value in model.state_dict().items():
        if "norm" in key:
            value.set_value(rng.normal(1.0 if key.endswith("weight") else 0.0, 0.3, value.shape).astype(np.float32))
    model.eval()
    return model


def run(model: paddle.nn.Layer, x: np.ndarray, features: bool = True) -> np.ndarray:
    model.eval()
    with paddle.no_grad():
        t = paddle.to_tensor(x)
        return (model.forward_features(t) if features else model(t)).numpy()


def images(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ----------------------------------------------------------------------------- the forward, as NumPy statements
def np_layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased variance
    return (x - mean) / np.sqrt(var + 1e-6) * w + b  # eps 1e-6


def np_gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))  # exact (erf), not the tanh form


def np_block(x: np.ndarray, p: dict[str, np.ndarray], heads: int) -> np.ndarray:
    """One pre-norm block on tokens [B, N, D]; Linear weights as Paddle stores them ([in, out])."""
    b, n, d = x.shape
    dh = d // heads
    y = np_layer_norm(x, p["norm1.weight"], p["norm1.bias"])
    qkv = y @ p["attn.qkv.weight"] + p["attn.qkv.bias"]  # [B, N, 3D]; channel s*D + h*dh + j
    q, k, v = (qkv[..., s * d:(s + 1) * d].reshape(b, n, heads, dh).transpose(0, 2, 1, 3) for s in range(3))
    logits = q @ k.transpose(0, 1, 3, 2) * dh ** -0.5
    att = np.exp(logits - logits.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    out = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, d)  # heads concatenated in order
    x = x + out @ p["attn.proj.weight"] + p["attn.proj.bias"]
    y = np_layer_norm(x, p["norm2.weight"], p["norm2.bias"])
    return x + np_gelu(y @ p["mlp.fc1.weight"] + p["mlp.fc1.bias"]) @ p["mlp.fc2.weight"] + p["mlp.fc2.bias"]


def np_vit_features(x: np.ndarray, state: dict[str, np.ndarray], heads: int, pos: np.ndarray) -> np.ndarray:
    """Patch conv 16/16 -> row-major tokens, class token first, + pos, blocks, norm, drop class token -> [B, D, gh, gw]."""
    b, _, h, w = x.shape
    gh, gw = h // 16, w // 16
    patches = x.reshape(b, 3, gh, 16, gw, 16).transpose(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, 3 * 256)
    weight = state["patch_embed.proj.weight"]
    tokens = patches @ weight.reshape(weight.shape[0], -1).T + state["patch_embed.proj.bias"]
    tokens = np.concatenate([np.repeat(state["cls_token"], b, 0), tokens], 1) + pos
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        prefix = f"blocks.{i}."
        tokens = np_block(tokens, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, heads)
    tokens = np_layer_norm(tokens, state["norm.weight"], state["norm.bias"])
    return tokens[:, 1:].transpose(0, 2, 1).reshape(b, -1, gh, gw)


def test_forward_matches_a_numpy_statement() -> None:
    model = tiny(img_size=64)
    state = {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}
    x = images(2, 3, 64, 48)  # not square: rows and columns must not be swapped
    pos = np.concatenate([state["pos_embed"][:, :1], resample_grid(state["pos_embed"][0, 1:], (4, 4), (4, 3))[None]], 1)
    want = np_vit_features(x.astype(np.float64), state, TINY.heads, pos)
    got = run(model, x)
    assert got.shape == (2, TINY.dim, 4, 3)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    x = images(2, 3, 64, 64, seed=2)
    np.testing.assert_allclose(run(model, x), np_vit_features(x.astype(np.float64), state, TINY.heads, state["pos_embed"]),
                               rtol=0, atol=2e-5 * np.abs(want).max())


def test_train_and_eval_forward_agree_without_dropout() -> None:
    model = tiny()
    x = paddle.to_tensor(images(2, 3, 32, 32))
    model.train()
    with paddle.no_grad():
        train_out = model(x).numpy()
    model.eval()
    with paddle.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), train_out)


def test_inputs_must_be_multiples_of_16() -> None:
    with pytest.raises(UserError, match="multiples of 16, got 40 x 64"):
        run(tiny(), images(1, 3, 40, 64))
    with pytest.raises(UserError, match="--img_size 100: a ViT needs a multiple of 16"):
        ViTCSRA(TINY, img_size=100, num_classes=2)


# ----------------------------------------------------------------------------- position-embedding resampling
def test_resample_matrix_is_antialiased_bicubic() -> None:
    # Values of torch.nn.functional.interpolate(mode="bicubic", antialias=True, align_corners=False)
    # applied to unit vectors (measured with torch 2.x): 3 -> 5 (enlarging) and 5 -> 2 (shrinking).
    up = [[1.075471698113208, -0.075471698113208, 0.0],
          [0.649253731343284, 0.395522388059702, -0.044776119402985],
          [0.0, 1.0, 0.0],
          [-0.044776119402985, 0.395522388059701, 0.649253731343284],
          [0.0, -0.075471698113208, 1.075471698113208]]
    down = [[0.347095126622686, 0.415620344754203, 0.239412640987444, 0.02915513939136, -0.031283251755693],
            [-0.031283251755693, 0.02915513939136, 0.239412640987444, 0.415620344754203, 0.347095126622686]]
    np.testing.assert_allclose(resample_matrix(3, 5), up, rtol=0, atol=1e-14)
    np.testing.assert_allclose(resample_matrix(5, 2), down, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(resample_matrix(14, 14), np.eye(14))
    np.testing.assert_allclose(resample_matrix(14, 28).sum(1), 1.0, atol=1e-15)
    tokens = images(16, 8)
    assert resample_grid(tokens, (4, 4), (4, 4)) is tokens


def test_same_grid_is_untouched_and_a_larger_input_gets_the_resampled_grid(tiny_spec: str) -> None:
    small = tiny(img_size=64)  # the "224" of this test: its own grid, 4 x 4
    state = {k: v.numpy() for k, v in small.state_dict().items()}
    same = build_model(tiny_spec, 5, 8, 0.3, img_size=64)
    same.set_state_dict(state)
    report = load_pretrained(same, _save_pdparams(state, "same"))
    assert report.notes == []
    np.testing.assert_array_equal(same.pos_embed.numpy(), state["pos_embed"])  # bit-identical, no resampling call
    x = images(2, 3, 64, 64)
    np.testing.assert_array_equal(run(same, x, features=False), run(small, x, features=False))

    large = build_model(tiny_spec, 5, 8, 0.3, img_size=128)  # the "448": 8 x 8
    report = load_pretrained(large, _save_pdparams(state, "large"))
    assert report.notes == ["pos_embed resampled from a 4x4 grid to the model's 8x8 (input 128 px)"]
    assert large.pos_embed.shape == [1, 1 + 64, TINY.dim]
    np.testing.assert_allclose(large.pos_embed.numpy(), fit_position_embedding(state["pos_embed"], (8, 8)), atol=1e-7)
    np.testing.assert_array_equal(large.pos_embed.numpy()[:, 0], state["pos_embed"][:, 0])  # class-token entry kept
    x = images(2, 3, 128, 128)
    assert run(large, x).shape == (2, TINY.dim, 8, 8)
    # Built for 128 from the 64 weights == the 64 model resampling on the fly for a 128 input.
    np.testing.assert_allclose(run(large, x), run(small, x), rtol=0, atol=1e-5)


def _save_pdparams(state: dict[str, np.ndarray], name: str) -> str:
    import tempfile

    path = Path(tempfile.mkdtemp()) / f"{name}.pdparams"
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, str(path))
    return str(path)


# ----------------------------------------------------------------------------- presets, names, settings
def test_vit_b16_has_the_reference_parameter_count_and_keys() -> None:
    model = build_model("vit_B16_224", 14, 1, 0.3, img_size=224)
    assert model.config["model"] == "vit_b16"
    state = model.state_dict()
    assert len(state) == 151
    assert sum(int(np.prod(v.shape)) for v in state.values()) == 85_809_408  # WIDER: 1 head x 14 classes
    assert state["pos_embed"].shape == [1, 197, 768] and state["blocks.11.attn.qkv.weight"].shape == [768, 2304]
    assert {k.split(".")[0] for k in state} == {"cls_token", "pos_embed", "patch_embed", "blocks", "norm", "classifier"}
    del model, state
    big = build_model("vit_b16", 14, 1, 0.3, img_size=448)
    assert big.pos_embed.shape == [1, 785, 768]
    assert sum(int(np.prod(p.shape)) for p in big.parameters()) == 85_809_408 + 451_584
    with paddle.no_grad():
        assert big.forward_features(paddle.zeros([1, 3, 448, 448])).shape == [1, 768, 28, 28]


def test_names_aliases_and_weights() -> None:
    assert MODELS.get("vit_L16_224").name == "vit_l16" and MODELS.get("vit_b16").stride == 16
    assert MODELS.get("resnet50").stride == 32
    assert canonical_model("vit_B16_224") == "vit_b16" and MODEL_ALIASES == MODELS.aliases()
    assert MODELS.get("vit_l16").feature_channels == 1024 and MODELS.get("vit_l16").preset == "L16"
    assert known_weights("vit_b16")["imagenet"].url.endswith("jx_vit_base_p16_224-80ecf9dd.pth")
    assert known_weights("vit_l16")["imagenet"].url.endswith("jx_vit_large_p16_224-4ee7a4dc.pth")


def test_classifier_parameters_are_the_csra_heads_only() -> None:
    from engine.trainer import split_parameters

    model = tiny()
    backbone, classifier, no_decay = split_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in classifier) == [f"classifier.multi_head.{h}.head.weight" for h in range(8)]
    backbone_names = {names[id(p)] for p in backbone}
    assert {"cls_token", "pos_embed", "norm.weight", "blocks.0.norm1.bias"} <= backbone_names  # decayed, as the reference
    assert no_decay == []


def test_drop_rates_are_options_of_the_vit_family_only(tiny_spec: str) -> None:
    model = build_model(tiny_spec, 3, img_size=32, drop_rate=0.2, drop_path_rate=0.3)
    layers = [type(layer).__name__ for layer in model.sublayers()]
    assert layers.count("Dropout") == 1 + 2 * 2 and layers.count("DropPath") == 1  # block 0's rate is 0
    assert model.blocks[1].drop_path.rate == pytest.approx(0.3)
    plain = build_model(tiny_spec, 3, img_size=32)
    assert "Dropout" not in [type(layer).__name__ for layer in plain.sublayers()]
    with pytest.raises(UserError, match="--drop_path_rate 0.1: resnet18 .* has no such setting.*families with it: vit"):
        build_model("resnet18", 3, drop_path_rate=0.1)
    with pytest.raises(UserError, match="vit_b16 hosts no attention block|--attention se"):
        build_model("vit_b16", 3, attention="se")


def test_one_training_step_moves_every_parameter() -> None:
    from engine.trainer import build_optimizer, train_step

    model = tiny(img_size=32, num_heads=2)
    model.train()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    optimizer, scheduler = build_optimizer(model, lr=0.1, momentum=0.9, weight_decay=1e-4, iters_per_epoch=1,
                                           warmup_epochs=0, step_epochs=5)
    targets = paddle.to_tensor((np.arange(10).reshape(2, 5) % 3 == 0).astype(np.float32))
    loss = train_step(model, optimizer, scheduler, paddle.to_tensor(images(2, 3, 32, 32)), targets)
    assert np.isfinite(float(loss))
    unchanged = [k for k, v in model.state_dict().items() if np.array_equal(v.numpy(), before[k])]
    assert unchanged == []


# ----------------------------------------------------------------------------- checkpoint layouts
def torch_layout(model: paddle.nn.Layer, classifier: bool, head: int | None = 1000, prefix: str = "") -> OrderedDict:
    """A Paddle ViT's weights as a PyTorch (timm / reference) state dict: Linear weights [out, in]."""
    linear = {f"{name}.weight" for name, layer in model.named_sublayers() if isinstance(layer, paddle.nn.Linear)}
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, value in model.state_dict().items():
        if key.startswith("classifier.") and not classifier:
            continue
        array = value.numpy()
        out[prefix + key] = np.ascontiguousarray(array.T) if key in linear else array
    if head:
        out[prefix + "head.weight"] = np.full((head, model.feature_channels), 0.5, np.float32)
        out[prefix + "head.bias"] = np.zeros(head, np.float32)
    return out


def test_timm_pth_loads_with_head_dropped(tiny_spec: str, tmp_path: Path) -> None:
    source = tiny()
    state = torch_layout(source, classifier=False)
    state["pre_logits.fc.weight"] = np.zeros((TINY.dim, TINY.dim), np.float32)  # old 21k files: dropped too
    state["pre_logits.fc.bias"] = np.zeros(TINY.dim, np.float32)
    assert detect_format(list(state)) == FORMAT_TIMM_VIT and checkpoint_img_size(state) == 64
    save_pth(state, tmp_path / "jx_vit.pth")
    model = build_model(tiny_spec, 5, 8, 0.3, img_size=64, pretrained=str(tmp_path / "jx_vit.pth"))
    x = images(2, 3, 64, 64)
    np.testing.assert_array_equal(run(model, x), run(source, x))
    conversion = convert_torch_state(state, model)
    assert {k for k, _ in conversion.skipped} == {"head.weight", "head.bias", "pre_logits.fc.weight", "pre_logits.fc.bias"}
    assert len(conversion.missing_ok) == 8  # the CSRA heads start fresh


def test_timm_safetensors_loads_through_the_numpy_api(tiny_spec: str, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    source = tiny(seed=4)
    path = tmp_path / "model.safetensors"
    save_file(dict(torch_layout(source, classifier=False, head=21843 // 100)), str(path))
    model = build_model(tiny_spec, 5, 8, 0.3, img_size=128, pretrained=str(path))  # also resampled 4x4 -> 8x8
    x = images(1, 3, 128, 128)
    np.testing.assert_allclose(run(model, x), run(source, x), rtol=0, atol=1e-5)


def test_safetensors_bfloat16_is_widened_exactly(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from utils.safetensors_io import load_safetensors

    values = np.array([1.0, -2.5, 3.140625, 1e-3], np.float32)
    upper = (values.view(np.uint32) >> 16).astype("<u2")  # bfloat16 = the upper half of a float32
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (-len(header) % 8)
    (tmp_path / "bf16.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + upper.tobytes())
    save_file({"f": values}, str(tmp_path / "f32.safetensors"))
    np.testing.assert_array_equal(load_safetensors(tmp_path / "f32.safetensors")["f"], values)
    got = load_safetensors(tmp_path / "bf16.safetensors")["w"].ravel()
    np.testing.assert_array_equal(got, (values.view(np.uint32) & 0xFFFF0000).view(np.float32))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_safetensors(tmp_path / "bad.safetensors")


def test_paddleclas_pdparams_load_without_transposing(tiny_spec: str, tmp_path: Path) -> None:
    source = tiny(seed=5)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
    state["head.weight"] = paddle.zeros([TINY.dim, 1000])  # PaddleClas: Linear weights already [in, out]
    state["head.bias"] = paddle.zeros([1000])
    paddle.save(state, str(tmp_path / "ViT_tiny_pretrained.pdparams"))
    model = build_model(tiny_spec, 5, 8, 0.3, img_size=64)
    report = load_pretrained(model, str(tmp_path / "ViT_tiny_pretrained.pdparams"))
    assert report.dropped == ["head.weight", "head.bias"] and len(report.fresh) == 8
    x = images(2, 3, 64, 64)
    np.testing.assert_array_equal(run(model, x), run(source, x))


@pytest.mark.parametrize("keys, needle", [
    ({"reg_token": (1, 4, 32)}, "register tokens"),
    ({"blocks.0.ls1.gamma": (32,)}, "layer scale"),
    ({"fc_norm.weight": (32,)}, "average-pooled"),
    ({"blocks.1.attn.q_norm.weight": (8,)}, "q/k normalisation"),
])
def test_unsupported_vit_variants_are_refused(tiny_spec: str, keys: dict, needle: str) -> None:
    state = torch_layout(tiny(), classifier=False)
    state.update({k: np.zeros(shape, np.float32) for k, shape in keys.items()})
    with pytest.raises(UserError, match=f"variant that vit_b16/vit_l16 do not implement: {needle}"):
        convert_torch_state(state, build_model(tiny_spec, 5, 8, 0.3, img_size=64))
    no_bias = torch_layout(tiny(), classifier=False)
    no_bias.pop("patch_embed.proj.bias")
    with pytest.raises(UserError, match="a patch convolution without bias"):
        convert_torch_state(no_bias, build_model(tiny_spec, 5, 8, 0.3, img_size=64))


def test_a_resnet_checkpoint_into_a_vit_is_a_shape_error(tiny_spec: str, tmp_path: Path) -> None:
    r18 = build_model("resnet18", 5)
    paddle.save(r18.state_dict(), str(tmp_path / "r18.pdparams"))
    with pytest.raises(UserError, match=f"does not fit the model {TINY_NAME}"):
        build_model(tiny_spec, 5, img_size=64, pretrained=str(tmp_path / "r18.pdparams"))


def test_converter_tool_on_a_reference_vit_csra_checkpoint(tmp_path: Path) -> None:
    """The reference's WIDER ViT-B/16 checkpoint layout (DataParallel prefix, CSRA head) through the tool."""
    paddle.seed(7)
    source = build_model("vit_b16", 14, 1, 0.3, img_size=224)
    save_pth(torch_layout(source, classifier=True, head=None, prefix="module."), tmp_path / "wider_vit.pth")
    dst = tmp_path / "wider_vit.pdparams"
    result = subprocess.run([sys.executable, "tools/convert_torch_weights.py", "--src", str(tmp_path / "wider_vit.pth"),
                             "--dst", str(dst), "--model", "vit_B16_224", "--num_heads", "1", "--lam", "0.3",
                             "--num_cls", "14"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "source format: csra-reference (prefix 'module.' stripped)" in result.stdout
    assert "input size of the checkpoint: 224 px" in result.stdout and "converted 151 tensors" in result.stdout
    model = build_model("vit_b16", 14, 1, 0.3, img_size=224, pretrained=str(dst))
    x = images(1, 3, 224, 224)
    np.testing.assert_array_equal(run(model, x, features=False), run(source, x, features=False))
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key].numpy(), value.numpy(), err_msg=key)


def test_drop_path_drops_whole_samples_of_the_token_rows() -> None:
    """Blocks see the tokens as rows [B * N, D]: a dropped sample loses all N of its rows, a kept one is scaled by 1/keep."""
    paddle.seed(4)
    layer = DropPath(0.5)
    rows = paddle.ones([16 * 3, 4])  # 16 samples of 3 tokens
    layer.train()
    out = layer(rows, 3).numpy().reshape(16, 3, 4)
    per_sample = out.reshape(16, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0} and 0 < (per_sample[:, 0] == 0).sum() < 16
    assert all(len(set(sample)) == 1 for sample in per_sample)  # never part of a sample
    layer.eval()
    np.testing.assert_array_equal(layer(rows, 3).numpy(), rows.numpy())
