"""The EfficientMod family: each block against a NumPy statement, the presets' sizes and names.

The NumPy statements are written in EfficientMod's own form: channels-last maps ``[B, H, W, C]``
and Linear weights in torch's ``[out, in]`` layout, so they also check the channels-first
rewrite used here (1x1 convs, LayerNorm on the transposed view, layer scale folded into fc2,
the context's tiling folded into g).
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import pytest

from models import MODELS, build_model
from models.attention.emod import EfficientModMixer, Modulation
from models.efficientmod import (
    EFFICIENTMOD_PRESETS,
    ConvEmbed,
    EfficientModConfig,
    EfficientModCSRA,
    ModulationBlock,
    SelfAttentionBlock,
    drop_path,
    imagenet_head_logits,
)
from models.family import FAMILIES

# ----------------------------------------------------------------------------- NumPy statements
_erf = np.vectorize(math.erf)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU: x * Phi(x)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """LayerNorm over the last axis (biased variance)."""
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """torch Linear: w is [out, in]."""
    y = x @ w.T
    return y if b is None else y + b


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int, groups: int = 1) -> np.ndarray:
    """NCHW convolution (cross-correlation), OIHW weight, zero padding, output side floor((H + 2p - k) / s) + 1."""
    bsz, cin, h, wd = x.shape
    cout, cin_g, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((bsz, cout, ho, wo))
    per_group = cout // groups
    for o in range(cout):
        g = o // per_group
        for i in range(k):
            for j in range(k):
                patch = xp[:, g * cin_g:(g + 1) * cin_g, i:i + stride * ho:stride, j:j + stride * wo:stride]
                out[:, o] += np.einsum("bchw,c->bhw", patch, w[o, :, i, j])
    return out + b[None, :, None, None]


def torch_params(layer: paddle.nn.Layer) -> dict[str, np.ndarray]:
    """The layer's parameters in torch's layout: 1x1 convs and Paddle Linears as [out, in]."""
    out = {}
    linears = {f"{n}.weight" for n, m in layer.named_sublayers() if isinstance(m, paddle.nn.Linear)}
    for name, value in layer.state_dict().items():
        arr = value.numpy().astype(np.float64)
        if name in linears:
            arr = arr.T
        elif arr.ndim == 4 and arr.shape[2:] == (1, 1):
            arr = arr[:, :, 0, 0]
        out[name] = arr
    return out


def modulation_np(y: np.ndarray, p: dict[str, np.ndarray], ratio: int, prefix: str = "", k: int = 7) -> np.ndarray:
    """EfficientMod's modulation on channels-last y [B, H, W, C] (``prefix`` of its parameters)."""
    q = lambda n: p[prefix + n]  # noqa: E731
    c = y.shape[-1]
    f = linear(y, q("context_layer.f.weight"), q("context_layer.f.bias")).transpose(0, 3, 1, 2)
    dw = conv2d(f, q("context_layer.context_list.0.weight"), q("context_layer.context_list.0.bias"), 1, k // 2, groups=c)
    ctx = linear(gelu(dw).transpose(0, 2, 3, 1), q("context_layer.g.weight"), q("context_layer.g.bias"))
    v = linear(y, q("fc1.weight"), q("fc1.bias"))
    if ratio > 1:
        v = gelu(v)
        ctx = np.concatenate([ctx] * ratio, axis=-1)  # hidden channel j uses context channel j mod C
    return linear(v * ctx, q("fc2.weight"), q("fc2.bias"))


def modulation_block_np(x: np.ndarray, p: dict[str, np.ndarray], ratio: int, k: int = 7) -> np.ndarray:
    """x [B, H, W, C] + gamma_1 * modulation(LN(x))."""
    y = layer_norm(x, p["norm.weight"], p["norm.bias"])
    return x + p["gamma_1"] * modulation_np(y, p, ratio, "mlp.", k)


def attention_block_np(x: np.ndarray, p: dict[str, np.ndarray], heads: int, d: int) -> np.ndarray:
    """x [B, H, W, C]: pre-norm softmax attention (bias-free qkv, channel s*heads*d + h*d + j) + MLP."""
    b, hh, ww, c = x.shape
    t = x.reshape(b, hh * ww, c)
    qkv = linear(layer_norm(t, p["norm1.weight"], p["norm1.bias"]), p["attn.qkv.weight"])
    qkv = qkv.reshape(b, hh * ww, 3, heads, d).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(b, hh * ww, heads * d)
    t = t + linear(o, p["attn.proj.weight"], p["attn.proj.bias"])
    m = gelu(linear(layer_norm(t, p["norm2.weight"], p["norm2.bias"]), p["mlp.fc1.weight"], p["mlp.fc1.bias"]))
    t = t + linear(m, p["mlp.fc2.weight"], p["mlp.fc2.bias"])
    return t.reshape(b, hh, ww, c)


def embed_np(x: np.ndarray, p: dict[str, np.ndarray], stride: int, pad: int) -> np.ndarray:
    """NCHW conv -> LayerNorm over channels, returned channels-last."""
    y = conv2d(x, p["proj.weight"], p["proj.bias"], stride, pad).transpose(0, 2, 3, 1)
    return layer_norm(y, p["norm.weight"], p["norm.bias"])


def perturb(layer: paddle.nn.Layer, seed: int) -> None:
    """Non-trivial LayerNorm affines, layer scales and biases (at init they hide errors)."""
    rng = np.random.default_rng(seed)
    for name, param in layer.named_parameters():
        if name.endswith("gamma_1"):
            param.set_value(rng.uniform(0.0, 0.5, param.shape).astype("float32"))
        elif name.endswith(".bias") or "norm" in name:
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            param.set_value((base + 0.2 * rng.standard_normal(param.shape)).astype("float32"))


def nchw(x: np.ndarray) -> paddle.Tensor:
    """channels-last NumPy -> the NCHW float32 tensor the Paddle layers take."""
    return paddle.to_tensor(x.transpose(0, 3, 1, 2).astype("float32"))


def close(ours: paddle.Tensor, ref_nhwc: np.ndarray) -> None:
    np.testing.assert_allclose(ours.numpy().transpose(0, 2, 3, 1), ref_nhwc, rtol=2e-4, atol=2e-5)


# ----------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("ratio", [1, 3])
@pytest.mark.parametrize("train", [False, True])
def test_modulation_block_matches_numpy(ratio: int, train: bool) -> None:
    paddle.seed(0)
    block = ModulationBlock(8, ratio, kernel_size=7)
    perturb(block, 1)
    block.train() if train else block.eval()  # rate 0: training changes nothing
    x = np.random.default_rng(2).standard_normal((2, 5, 6, 8))
    ref = modulation_block_np(x, torch_params(block), ratio)
    close(block(nchw(x)), ref)


def test_modulation_layer_is_shared_with_the_resnet_mixer() -> None:
    """--attention emod is the same Modulation layer (r = 1), and its plain forward is the statement."""
    assert issubclass(EfficientModMixer, Modulation)
    paddle.seed(3)
    layer = Modulation(6, ratio=2, kernel_size=3)
    perturb(layer, 4)
    x = np.random.default_rng(5).standard_normal((1, 4, 3, 6))
    close(layer(nchw(x)), modulation_np(x, torch_params(layer), 2, k=3))
    scale = np.random.default_rng(6).uniform(0.1, 1.0, 6)
    close(layer.modulate(nchw(x), out_scale=paddle.to_tensor(scale.astype("float32"))),
          modulation_np(x, torch_params(layer), 2, k=3) * scale)


@pytest.mark.parametrize("channels, d", [(16, 4), (12, 6)])
def test_attention_block_matches_numpy(channels: int, d: int) -> None:
    """Head width max(C // 8, floor): with (16, floor 4) the inner width 8 * 4 = 32 exceeds C = 16."""
    paddle.seed(7)
    block = SelfAttentionBlock(channels, mlp_ratio=2, num_heads=8, min_head_width=d if channels == 16 else 1)
    width = max(channels // 8, d if channels == 16 else 1)
    assert block.attn.head_width == width and block.attn.qkv.bias is None
    assert list(block.attn.qkv.weight.shape) == [channels, 3 * 8 * width]
    perturb(block, 8)
    block.eval()
    x = np.random.default_rng(9).standard_normal((2, 3, 5, channels))
    close(block(nchw(x)), attention_block_np(x, torch_params(block), 8, width))


@pytest.mark.parametrize("kernel, stride, pad, side", [(7, 4, 3, 13), (3, 2, 1, 7)])
def test_stem_and_downsample_match_numpy(kernel: int, stride: int, pad: int, side: int) -> None:
    paddle.seed(10)
    layer = ConvEmbed(3, 8, kernel, stride, pad)
    perturb(layer, 11)
    x = np.random.default_rng(12).standard_normal((2, 3, side, side))
    out = layer(paddle.to_tensor(x.astype("float32")))
    assert list(out.shape) == [2, 8, -(-side // stride), -(-side // stride)]  # sides round up
    close(out, embed_np(x, torch_params(layer), stride, pad))


TINY = EfficientModConfig(widths=(8, 8, 16, 16), depths=(1, 2, 1, 1), attention_depths=(0, 0, 1, 1), ratio=2,
                          attention_ratios=(2, 2, 2, 3), kernel_size=3, num_heads=2, min_head_width=4)


def tiny_model(num_classes: int = 3, **kw) -> EfficientModCSRA:
    """A reduced EfficientMod (built from the family's class, not a registered preset)."""
    return EfficientModCSRA(TINY, num_classes=num_classes, num_heads=1, lam=0.1, **kw)


def test_tiny_network_matches_numpy_composition() -> None:
    """Stem, stages (modulation then attention blocks, downsample), final norm: the whole trunk."""
    paddle.seed(13)
    model = tiny_model()
    perturb(model, 14)
    model.eval()
    p = torch_params(model)
    sub = lambda prefix: {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}  # noqa: E731
    x = np.random.default_rng(15).standard_normal((2, 3, 70, 45))
    h = embed_np(x, sub("patch_embed."), 4, 3)
    for i, width in enumerate(TINY.widths):
        for j in range(TINY.depths[i]):
            h = modulation_block_np(h, sub(f"layers.{i}.blocks.{j}."), 1 if j % 2 == 0 else TINY.ratio, TINY.kernel_size)
        for j in range(TINY.depths[i], TINY.depths[i] + TINY.attention_depths[i]):
            h = attention_block_np(h, sub(f"layers.{i}.blocks.{j}."), 2, max(width // 2, 4))
        if i < 3:
            h = embed_np(h.transpose(0, 3, 1, 2), sub(f"layers.{i}.downsample."), 2, 1)
    h = layer_norm(h, p["norm.weight"], p["norm.bias"])
    feats = model.forward_features(paddle.to_tensor(x.astype("float32")))
    assert list(feats.shape) == [2, 16, 3, 2]  # ceil(70/32), ceil(45/32)
    close(feats, h)
    w, b = np.random.default_rng(16).standard_normal((16, 5)), np.random.default_rng(17).standard_normal(5)
    logits = imagenet_head_logits(feats, paddle.to_tensor(w.astype("float32")), paddle.to_tensor(b.astype("float32")))
    np.testing.assert_allclose(logits.numpy(), h.mean(axis=(1, 2)) @ w + b, rtol=2e-4, atol=2e-5)


def test_drop_path_rates_and_behaviour() -> None:
    cfg = EFFICIENTMOD_PRESETS["s"]
    rates = cfg.block_rates()
    assert len(rates) == 4 + 4 + 12 + 8 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.02)
    np.testing.assert_allclose(np.diff(rates), 0.02 / (len(rates) - 1))
    model = EfficientModCSRA(cfg, num_classes=2)
    block_rates = [blk.drop_rate for stage in model.layers for blk in stage.blocks]
    assert block_rates == pytest.approx(rates)  # network order: modulation blocks, then attention blocks
    x = paddle.ones([4000, 1])
    np.testing.assert_array_equal(drop_path(x, 0.3, training=False).numpy(), x.numpy())
    out = drop_path(x, 0.3, training=True).numpy()
    assert np.allclose(np.unique(out), [0.0, 1 / 0.7]) and abs(out.mean() - 1.0) < 0.05


def test_init_follows_the_original() -> None:
    paddle.seed(18)
    model = tiny_model()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    np.testing.assert_array_equal(sd["layers.0.blocks.0.gamma_1"], np.full(8, 1e-4, "float32"))
    assert np.all(sd["layers.0.blocks.0.mlp.fc1.bias"] == 0) and np.all(sd["layers.2.blocks.1.attn.proj.bias"] == 0)
    assert np.all(sd["norm.weight"] == 1) and np.all(sd["norm.bias"] == 0)
    assert np.abs(sd["patch_embed.proj.weight"]).max() <= 1 / math.sqrt(147)  # torch's default conv init
    assert np.abs(sd["patch_embed.proj.bias"]).max() <= 1 / math.sqrt(147)
    assert np.abs(sd["layers.0.blocks.0.mlp.context_layer.context_list.0.weight"]).max() <= 1 / 3  # fan_in 9
    big = EfficientModCSRA(EFFICIENTMOD_PRESETS["s_conv"], num_classes=2).state_dict()["layers.3.blocks.1.mlp.fc1.weight"].numpy()
    assert abs(big.std() - 0.02) < 0.001 and 0.06 < np.abs(big).max() < 2  # N(0, 0.02^2) cut at +-2 (absolute), as the original


# ----------------------------------------------------------------------------- presets
# (backbone parameters, 1000-class ImageNet model parameters, state-dict keys with the head)
PRESET_SIZES = {
    "efficientmod_xxs": (4_479_264, 4_736_264, 209),
    "efficientmod_xs": (6_338_544, 6_627_544, 242),
    "efficientmod_s": (12_584_184, 12_897_184, 368),
    "efficientmod_s_conv": (12_527_336, 12_872_336, 384),
}


@pytest.mark.parametrize("name", list(PRESET_SIZES))
def test_preset_parameter_counts_equal_the_original(name: str) -> None:
    backbone, imagenet, keys = PRESET_SIZES[name]
    spec = MODELS.get(name)
    model = build_model(name, num_classes=20)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    c4 = spec.feature_channels
    assert sum(int(np.prod(v.shape)) for v in state.values()) == backbone
    assert backbone + c4 * 1000 + 1000 == imagenet  # + the original's Linear(C4, 1000) head
    assert len(state) + 2 == keys
    assert spec.family == "efficientmod" and spec.attention_kinds == frozenset() and spec.stride == 32


def test_xxs_names_and_shapes_are_the_originals() -> None:
    """A sample of the original key layout (torch shapes; Linear weights [out, in])."""
    state = {k: tuple(v.shape) for k, v in build_model("efficientmod_xxs", num_classes=4).state_dict().items()}
    expected = {
        "patch_embed.proj.weight": (32, 3, 7, 7), "patch_embed.norm.weight": (32,),
        "layers.0.blocks.0.gamma_1": (32,), "layers.0.blocks.0.mlp.fc1.weight": (32, 32, 1, 1),
        "layers.0.blocks.1.mlp.fc1.weight": (192, 32, 1, 1), "layers.0.blocks.1.mlp.fc2.weight": (32, 192, 1, 1),
        "layers.0.blocks.1.mlp.context_layer.f.weight": (32, 32, 1, 1),
        "layers.0.blocks.1.mlp.context_layer.context_list.0.weight": (32, 1, 7, 7),
        "layers.0.downsample.proj.weight": (64, 32, 3, 3), "layers.0.downsample.norm.weight": (64,),
        "layers.2.blocks.6.norm1.weight": (128,), "layers.2.blocks.6.attn.qkv.weight": (128, 768),
        "layers.2.blocks.6.attn.proj.weight": (256, 128), "layers.2.blocks.6.mlp.fc1.weight": (128, 512),
        "layers.3.blocks.3.mlp.fc2.bias": (256,), "norm.weight": (256,),
    }
    assert {k: state[k] for k in expected} == expected
    assert "layers.2.blocks.6.attn.qkv.bias" not in state and "layers.3.downsample.proj.weight" not in state
    assert not any(k.startswith("head.") for k in state)


def test_head_widths_of_the_presets() -> None:
    widths = {}
    for name in ("xxs", "xs", "s"):
        model = EfficientModCSRA(EFFICIENTMOD_PRESETS[name], num_classes=2)
        widths[name] = sorted({blk.attn.head_width for stage in model.layers for blk in stage.blocks if hasattr(blk, "attn")})
    assert widths == {"xxs": [32], "xs": [32, 36], "s": [32, 39]}


@pytest.mark.parametrize("size, side", [(64, 2), (225, 8), (96, 3)])
def test_any_input_size_the_strides_allow(size: int, side: int) -> None:
    model = build_model("efficientmod_xxs", num_classes=5, num_heads=2, lam=0.2)
    model.eval()
    with paddle.no_grad():
        feats = model.forward_features(paddle.rand([1, 3, size, size]))
        logits = model(paddle.rand([2, 3, size, size + 32]))
    assert list(feats.shape) == [1, 256, side, side] and list(logits.shape) == [2, 5]


def test_family_is_registered_and_hosts_no_attention_block() -> None:
    family = FAMILIES.get("efficientmod")
    assert family.signature({"patch_embed.proj.weight", "layers.0.blocks.0.mlp.context_layer.f.weight"})
    assert not family.signature({"patch_embed.proj.weight", "blocks.0.attn.qkv.weight"})  # a ViT
    assert not family.signature({"conv1.weight", "layer1.0.conv1.weight"})
    from utils.errors import UserError

    with pytest.raises(UserError, match="needs one of resnet50"):
        build_model("efficientmod_xs", num_classes=3, attention="emod")
