"""Attention blocks (issue 7): NumPy references of the spec's formulas, parameter counts,
placement and validation, training, static export + paddle.inference, weight loading."""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import paddle
import pytest

from models import build_model
from models.attention import ATTENTIONS, MIXER, RECALIBRATOR, attention_blocks, get_attention, parse_stages, stage_resolution
from models.attention.at_kernel import ATKernel
from models.attention.channel import ABLayer, ECALayer, GELayer, MultiSELayer, SELayer, SRMLayer
from models.attention.emod import EfficientModMixer
from models.attention.prm import PRMLayer
from models.weights import load_pretrained
from utils.errors import UserError

RECALIBRATORS = ["se", "srm", "ge", "ab", "multise", "eca", "prm"]
MIXERS = ["at", "emod"]
EPS = 1e-5


# ----------------------------------------------------------------------------- helpers
def randomize(layer: paddle.nn.Layer, seed: int) -> dict[str, np.ndarray]:
    """Set every tensor of ``layer`` (parameters and BN statistics) to fixed random values;
    return them as float64 NumPy arrays by state-dict name."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, tensor in layer.state_dict().items():
        shape = tuple(tensor.shape)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "_variance" or name in ("scale",):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "theta":
            value = rng.uniform(0.2, 1.0, shape)
        elif leaf == "weight" and len(shape) == 1:  # BN / GN scale
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        tensor.set_value(value.astype(np.float32))
        out[name] = value.astype(np.float32).astype(np.float64)
    return out


def run(layer: paddle.nn.Layer, x: np.ndarray, train: bool) -> np.ndarray:
    layer.train() if train else layer.eval()
    with paddle.no_grad():
        return layer(paddle.to_tensor(x.astype(np.float32))).numpy()


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def bn_np(x: np.ndarray, p: dict, prefix: str, train: bool) -> np.ndarray:
    """BatchNorm over axis 1 of [B, C, ...] (batch statistics in train mode, biased variance)."""
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = [1, -1] + [1] * (x.ndim - 2)
    if train:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = p[prefix + "_mean"], p[prefix + "_variance"]
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + EPS) * p[prefix + "weight"].reshape(shape) + p[prefix + "bias"].reshape(shape)


def gn_np(x: np.ndarray, groups: int, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    b, c = x.shape[:2]
    xg = x.reshape(b, groups, -1)
    xg = (xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + EPS)
    shape = [1, -1] + [1] * (x.ndim - 2)
    return xg.reshape(x.shape) * weight.reshape(shape) + bias.reshape(shape)


def conv1x1_np(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    out = np.einsum("oi,bi...->bo...", w[:, :, 0, 0], x)
    if b is not None:
        out = out + b.reshape([1, -1] + [1] * (x.ndim - 2))
    return out


def unfold_np(x: np.ndarray, k: int) -> np.ndarray:
    """[B, C, H, W] -> [B, C, k*k, H, W]: the k x k neighbourhoods (zero padding), row-major offsets."""
    b, c, h, w = x.shape
    pad = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return np.stack([xp[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k)], axis=2)


def erf_np(v: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(v)


# ----------------------------------------------------------------------------- NumPy references (spec formulas)
def se_np(x, p, train):
    y = x.mean(axis=(2, 3))
    h = np.maximum(y @ p["fc.0.weight"][:, :, 0, 0].T + p["fc.0.bias"], 0)  # weights [out, in, 1, 1]
    g = sigmoid(h @ p["fc.2.weight"][:, :, 0, 0].T + p["fc.2.bias"])
    return x * g[:, :, None, None]


def srm_np(x, p, train):
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    t0, t1 = flat.mean(axis=2), flat.std(axis=2, ddof=1)
    z = p["cfc"][:, 0] * t0 + p["cfc"][:, 1] * t1
    return x * sigmoid(bn_np(z[:, :, None, None], p, "bn.", train))


def ge_np(x, p, train):
    z = (x * p["conv.0.weight"][:, 0][None]).sum(axis=(2, 3)) + p["conv.0.bias"]
    return x * sigmoid(bn_np(z[:, :, None, None], p, "conv.1.", train))


def ab_np(x, p, train):
    return x + p["cfc"][None, :, None, None] * x.mean(axis=(2, 3), keepdims=True)


def multise_np(x, p, train, reduction=16):
    """The grouped-conv form exactly as the reference: y tiled 3 times, groups of 3."""
    b, c = x.shape[:2]
    y = x.mean(axis=(2, 3))
    logits = y @ p["style_assigner.weight"][:, :, 0, 0].T
    a = np.exp(logits - logits.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    tiled = np.tile(y, (1, 3))  # [B, 3C]
    hg = 3 * c // reduction // 3
    z = np.zeros((b, 3 * c))
    w0, w2 = p["fc.0.weight"][:, :, 0, 0], p["fc.2.weight"][:, :, 0, 0]
    for i in range(3):
        hid = np.maximum(tiled[:, i * c:(i + 1) * c] @ w0[i * hg:(i + 1) * hg].T + p["fc.0.bias"][i * hg:(i + 1) * hg], 0)
        z[:, i * c:(i + 1) * c] = hid @ w2[i * c:(i + 1) * c].T + p["fc.2.bias"][i * c:(i + 1) * c]
    z = (z.reshape(b, 3, c) * a[:, :, None]).sum(axis=1)
    return x * sigmoid(z)[:, :, None, None]


def multise3_np(y, branches, style_w):
    """Three separate SE MLPs (torch layouts [out, in]) mixed by the style softmax -> gate [B, C]."""
    logits = y @ style_w.T
    a = np.exp(logits - logits.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    z = 0
    for i, (w1, b1, w2, b2) in enumerate(branches):
        z = z + a[:, i:i + 1] * (np.maximum(y @ w1.T + b1, 0) @ w2.T + b2)
    return sigmoid(z)


def eca_np(x, p, train):
    y = x.mean(axis=(2, 3))
    w = p["conv.weight"].reshape(3)
    yp = np.pad(y, ((0, 0), (1, 1)))
    z = w[0] * yp[:, :-2] + w[1] * yp[:, 1:-1] + w[2] * yp[:, 2:]
    return x * sigmoid(z)[:, :, None, None]


def prm_np(x, p, train, groups=64):
    b, c, h, w = x.shape
    cg = c // groups
    xs = x.reshape(b * groups, cg, h * w)
    idx = xs.sum(axis=1).argmax(axis=1)
    row, col = idx // w, idx % w
    q = xs[np.arange(b * groups), :, idx]
    sim_max = np.einsum("nc,ncp->np", q, xs)
    sim_gap = np.einsum("nc,ncp->np", xs.mean(axis=2), xs)
    ii, jj = np.divmod(np.arange(h * w), w)
    sigma = p["scale"][0]
    gauss = lambda v: np.exp(-v ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))  # noqa: E731
    theta = p["theta"].reshape(2)
    d = (gauss(theta[0] * np.abs(ii[None] - row[:, None])) + gauss(theta[1] * np.abs(jj[None] - col[:, None]))) / 2
    sim = p["zero"] * (d * sim_max).reshape(b, groups, h * w) + p["one"] * sim_gap.reshape(b, groups, h * w)
    ctx = (sim - sim.mean(axis=2, keepdims=True)) / (sim.std(axis=2, ddof=1, keepdims=True) + 1e-5)
    att = p["weight"] * ctx.reshape(b, groups, h, w) + p["bias"]
    return (x.reshape(b, groups, cg, h, w) * sigmoid(att)[:, :, None]).reshape(x.shape)


def at_np(x, p, train, out_channels, stride=1, k=3, g=4):
    if stride > 1:  # even sides here: plain s x s average pooling
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // stride, stride, w // stride, stride).mean(axis=(3, 5))
    b, c, h, w = x.shape
    kk = k * k
    q = np.repeat(x[:, :, None], kk, axis=2)
    emb_k = np.maximum(bn_np(conv1x1_np(x, p["emb_K.0.weight"]), p, "emb_K.1.", train), 0)
    key = unfold_np(emb_k, k)
    qk = np.concatenate([q, key], axis=1).reshape(b, 2 * c, kk * h, w)
    a = conv1x1_np(qk, p["MLP.0.weight"], p["MLP.0.bias"])
    a = np.maximum(bn_np(a, p, "MLP.1.", train), 0)
    a = conv1x1_np(a, p["MLP.3.weight"], p["MLP.3.bias"])
    a = gn_np(a, out_channels, p["MLP.4.weight"], p["MLP.4.bias"]).reshape(b, out_channels, g, kk, h, w)
    v = unfold_np(bn_np(conv1x1_np(x, p["emb_V.0.weight"]), p, "emb_V.1.", train), k).reshape(b, out_channels, g, kk, h, w)
    return (a * v).sum(axis=(2, 3))


def emod_np(x, p, train, stride=1, k=7):
    if stride > 1:
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // stride, stride, w // stride, stride).mean(axis=(3, 5))
    f = conv1x1_np(x, p["context_layer.f.weight"], p["context_layer.f.bias"])
    b, c, h, w = f.shape
    pad = k // 2
    fp = np.pad(f, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dw = p["context_layer.context_list.0.weight"][:, 0]
    conv = sum(fp[:, :, i:i + h, j:j + w] * dw[None, :, i, j, None, None] for i in range(k) for j in range(k))
    conv = conv + p["context_layer.context_list.0.bias"][None, :, None, None]
    gelu = 0.5 * conv * (1 + erf_np(conv / np.sqrt(2)))
    ctx = conv1x1_np(gelu, p["context_layer.g.weight"], p["context_layer.g.bias"])
    v = conv1x1_np(x, p["fc1.weight"], p["fc1.bias"])
    return conv1x1_np(v * ctx, p["fc2.weight"], p["fc2.bias"])


def _x(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.3, 1.0, shape).astype(np.float32).astype(np.float64)


# (factory, reference, input shape, has BN)
CASES = {
    "se": (lambda: SELayer(32), se_np, (3, 32, 5, 4), False),
    "srm": (lambda: SRMLayer(16), srm_np, (4, 16, 5, 6), True),
    "ge": (lambda: GELayer(16, 5), ge_np, (4, 16, 5, 5), True),
    "ab": (lambda: ABLayer(16), ab_np, (2, 16, 3, 7), False),
    "multise": (lambda: MultiSELayer(32), multise_np, (3, 32, 4, 4), False),
    "eca": (lambda: ECALayer(16), eca_np, (2, 16, 5, 3), False),
    "prm": (lambda: PRMLayer(128), prm_np, (2, 128, 4, 6), False),
    "at": (lambda: ATKernel(16, 16), lambda x, p, t: at_np(x, p, t, 16), (2, 16, 5, 6), True),
    "at_stride2": (lambda: ATKernel(16, 16, stride=2), lambda x, p, t: at_np(x, p, t, 16, stride=2), (2, 16, 8, 6), True),
    "emod": (lambda: EfficientModMixer(16, 16), emod_np, (2, 16, 6, 5), False),
    "emod_stride2": (lambda: EfficientModMixer(16, 16, stride=2), lambda x, p, t: emod_np(x, p, t, stride=2), (2, 16, 8, 10), False),
}


@pytest.mark.parametrize("case, train", [(c, False) for c in CASES] + [(c, True) for c in CASES if CASES[c][3]])
def test_block_matches_numpy(case: str, train: bool) -> None:
    """Eval mode for every block; train mode (batch statistics) where a BatchNorm is inside."""
    factory, reference, shape, _ = CASES[case]
    layer = factory()
    params = randomize(layer, seed=len(case))
    x = _x(shape, seed=7)
    got = run(layer, x, train)
    want = reference(x, params, train)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * max(1.0, float(np.abs(want).max())))


def test_prm_query_positions_differ_between_samples() -> None:
    """The arg-max is per sample and group (a wrong broadcast would still pass a 1-sample test)."""
    x = _x((2, 128, 4, 6), seed=7)
    idx = x.reshape(2 * 64, 2, 24).sum(axis=1).argmax(axis=1)
    assert len(set(idx.tolist())) > 10


# ----------------------------------------------------------------------------- initialisation
def test_initialisation_follows_the_originals() -> None:
    paddle.seed(0)
    assert np.all(ABLayer(64).cfc.numpy() == 0)
    srm = SRMLayer(64)
    assert np.all(srm.cfc.numpy() == 0) and np.all(srm.bn.weight.numpy() == 1) and np.all(srm.bn.bias.numpy() == 0)
    se = SELayer(256)  # torch Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
    for i, fan_in in ((0, 256), (2, 16)):
        for t in (se.fc[i].weight.numpy(), se.fc[i].bias.numpy()):
            assert np.abs(t).max() <= 1 / math.sqrt(fan_in) and np.abs(t).max() > 0.8 / math.sqrt(fan_in)
    eca = ECALayer(64).conv.weight.numpy()
    assert eca.shape == (1, 1, 3) and np.abs(eca).max() <= 1 / math.sqrt(3)
    ge = GELayer(256, 14)  # re-initialised conv: N(0, sqrt(2 / (k*k*out)))
    assert abs(ge.conv[0].weight.numpy().std() - math.sqrt(2 / (14 * 14 * 256))) < 0.05 * math.sqrt(2 / (14 * 14 * 256))
    mse = MultiSELayer(512)
    assert abs(mse.fc[0].weight.numpy().std() - math.sqrt(2 / 96)) < 0.05 * math.sqrt(2 / 96)
    assert abs(mse.fc[2].weight.numpy().std() - math.sqrt(2 / 1536)) < 0.05 * math.sqrt(2 / 1536)
    assert mse.style_assigner.weight.shape == [3, 512, 1, 1] and np.abs(mse.style_assigner.weight.numpy()).max() <= 1 / math.sqrt(512)
    prm = PRMLayer(256)
    assert (prm.weight.numpy() == 0).all() and (prm.bias.numpy() == 1).all() and (prm.one.numpy() == 1).all()
    assert (prm.zero.numpy() == 0).all() and (prm.scale.numpy() == 1).all()
    theta = prm.theta.numpy()
    assert theta.shape == (1, 2, 1, 1) and ((theta >= 0) & (theta < 1)).all()
    at = ATKernel(512, 512)
    assert (at.MLP[4].weight.numpy() == 1).all() and (at.MLP[4].bias.numpy() == 0).all()
    assert abs(at.emb_V[0].weight.numpy().std() - math.sqrt(2 / 2048)) < 0.05 * math.sqrt(2 / 2048)


def test_prm_is_a_constant_gate_at_init() -> None:
    x = _x((2, 128, 4, 4), seed=1)
    np.testing.assert_allclose(run(PRMLayer(128), x, False), x * sigmoid(1.0), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- parameter counts
def _trainable(model: paddle.nn.Layer) -> int:
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)


@pytest.fixture(scope="module")
def r50_params() -> int:
    return _trainable(build_model("resnet50", 20))


@pytest.mark.parametrize("name, delta", [
    ("se", 2_530_992), ("srm", 60_416), ("ge", 5_564_672), ("ab", 15_104), ("multise", 7_638_288), ("eca", 48), ("prm", 4_144),
])
def test_resnet50_parameter_deltas(name: str, delta: int, r50_params: int) -> None:
    model = build_model("resnet50", 20, attention=name, img_size=224)
    assert _trainable(model) - r50_params == delta


def test_at_backbone_parameter_count() -> None:
    model = build_model("resnet50", 20, attention="at")
    backbone = sum(int(np.prod(p.shape)) for n, p in model.named_parameters() if not p.stop_gradient and not n.startswith("classifier."))
    assert backbone == 21_576_896
    assert model.config["attention_stages"] == [4]
    assert [type(b.conv2).__name__ for b in model.layer4] == ["ATKernel"] * 3
    assert type(model.layer3[0].conv2).__name__ == "Conv2D"


# ----------------------------------------------------------------------------- placement, config, validation
def test_recalibrator_placement_and_keys() -> None:
    model = build_model("resnet18", 3, attention="se", attention_stages="3,4")
    assert model.config["attention"] == "se" and model.config["attention_stages"] == [3, 4]
    prefixes = [p for p, _ in attention_blocks(model)]
    assert prefixes == ["layer3.0.rclb.", "layer3.1.rclb.", "layer4.0.rclb.", "layer4.1.rclb."]
    assert "layer3.0.rclb.fc.0.weight" in model.state_dict()
    prm = build_model("resnet50", 3, attention="prm", attention_stages=[2])
    assert [p for p, _ in attention_blocks(prm)][:1] == ["layer2.0.prm."] and len(attention_blocks(prm)) == 4
    assert build_model("resnet18", 3, attention="meanrew").config["attention"] == "ab"


def test_recalibrator_sits_on_the_residual_branch() -> None:
    """A gate of 0 on the branch (SE with a large negative bias) leaves relu(identity)."""
    model = build_model("resnet50", 3, attention="se", attention_stages=[4])
    model.eval()
    block = model.layer4[1]
    block.rclb.fc[2].bias.set_value(paddle.full_like(block.rclb.fc[2].bias, -1e4))
    x = paddle.rand([1, 2048, 2, 2]) - 0.5
    with paddle.no_grad():
        np.testing.assert_allclose(block(x).numpy(), paddle.nn.functional.relu(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("name", ["se", "eca", "multise", "ab", "srm"])
def test_inference_tail_matches_the_block_formula(name: str) -> None:
    """Eval mode takes the channel means from conv3's input (bn3 and the 1x1 conv3 are affine
    then) and moves additive terms into the identity branch; same function as training's path."""
    paddle.seed(4)
    model = build_model("resnet50", 3, attention=name, attention_stages=[2])
    block = model.layer2[0]  # with a downsample branch
    randomize(block, seed=9)
    block.eval()
    x = paddle.to_tensor(np.random.default_rng(2).normal(size=(2, 256, 12, 10)).astype(np.float32))
    with paddle.no_grad():
        h = block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))
        want = paddle.nn.functional.relu(block.rclb(block.bn3(block.conv3(h))) + block.downsample(x)).numpy()
        got = block(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-5 * float(np.abs(want).max()))


def test_defaults_and_config_round_trip_through_json() -> None:
    for name in ATTENTIONS.names():
        spec = get_attention(name)
        assert spec.default_stages == ((1, 2, 3, 4) if spec.kind == RECALIBRATOR else {"at": (4,), "emod": (3, 4)}[name])
    model = build_model("resnet50", 4, attention="emod")
    assert model.config["attention_stages"] == [3, 4]
    config = json.loads(json.dumps(model.config))
    again = build_model(config["model"], config["num_classes"], config["num_heads"], config["lam"],
                        attention=config["attention"], attention_stages=config["attention_stages"])
    assert again.config == model.config
    assert set(again.state_dict()) == set(model.state_dict())
    plain = build_model("resnet18", 4)
    assert plain.config["attention"] is None and plain.config["attention_stages"] is None


@pytest.mark.parametrize("kwargs, message", [
    ({"attention": "nonsense"}, "unknown attention block 'nonsense'; choose one of: se, srm, ge, ab, multise, eca, prm, at, emod"),
    ({"attention": "at"}, "--attention at is a mixer (it replaces a block's 3x3 conv) and needs one of resnet50, resnet101, "
                          "resnet152; --model resnet18 has basic blocks"),
    ({"attention": "emod"}, "needs one of resnet50, resnet101, resnet152"),
    ({"attention": "se", "attention_stages": "0"}, "--attention_stages '0': stage 0 does not exist"),
    ({"attention": "se", "attention_stages": [5]}, "stage 5 does not exist"),
    ({"attention": "se", "attention_stages": "3,3"}, "stage 3 is given twice"),
    ({"attention": "se", "attention_stages": "x"}, "'x' is not a stage number"),
    ({"attention": "se", "attention_stages": []}, "no stage is given"),
    ({"attention_stages": "3,4"}, "without an attention block"),
    ({"attention": "ge", "img_size": 0}, "img_size must be a positive integer"),
])
def test_invalid_arguments_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        build_model("resnet18", num_classes=3, **kwargs)


def test_prm_needs_channels_divisible_by_64() -> None:
    with pytest.raises(UserError, match="divisible by 64"):
        PRMLayer(96)


def test_parse_stages() -> None:
    assert parse_stages(None) is None
    assert parse_stages("4, 3") == [3, 4] and parse_stages([2, 1]) == [1, 2] and parse_stages(4) == [4]
    assert parse_stages("3,4,") == [3, 4] and parse_stages((4.0,)) == [4]
    for bad, cause in [("3 4", "'3 4' is not a stage number"), ("2.5", "'2.5' is not a stage number"),
                       ([True], "True is not a stage number"), ({3}, "expected text such as '3,4'"), (" , ", "no stage")]:
        with pytest.raises(UserError, match=cause) as info:
            parse_stages(bad)
        assert "give distinct stages from 1, 2, 3, 4 separated by commas, e.g. 3,4" in str(info.value)


def test_ge_kernel_follows_img_size_and_refuses_other_resolutions() -> None:
    assert [stage_resolution(448, s) for s in (1, 2, 3, 4)] == [112, 56, 28, 14]
    assert [stage_resolution(224, s) for s in (1, 2, 3, 4)] == [56, 28, 14, 7]
    model = build_model("resnet18", 3, attention="ge", img_size=64)
    assert [layer[0].rclb.kernel_size for layer in (model.layer1, model.layer2, model.layer3, model.layer4)] == [16, 8, 4, 2]
    model.eval()
    with pytest.raises(UserError, match="GE block built for 16x16 feature maps got 8x8"):
        model(paddle.rand([1, 3, 32, 32]))


@pytest.mark.parametrize("name", ["srm", "prm"])
def test_std_based_blocks_refuse_1x1_maps(name: str) -> None:
    model = build_model("resnet18", 3, attention=name)
    model.eval()
    with pytest.raises(UserError, match="larger than 1x1"):
        model(paddle.rand([1, 3, 32, 32]))


@pytest.mark.parametrize("name", MIXERS)
def test_mixers_work_at_sizes_not_multiple_of_32(name: str) -> None:
    """Ceil-mode pooling keeps the mixer's output aligned with the strided shortcut (72 px: 5x5 -> 3x3)."""
    model = build_model("resnet50", 3, attention=name)
    model.eval()
    with paddle.no_grad():
        assert model.forward_features(paddle.rand([1, 3, 72, 72])).shape == [1, 2048, 3, 3]


# ----------------------------------------------------------------------------- 224 / 448, training, export
def _arch(name: str) -> str:
    return "resnet50" if get_attention(name).kind == MIXER else "resnet18"


@pytest.mark.parametrize("name", RECALIBRATORS + MIXERS)
def test_forward_at_224_and_448(name: str) -> None:
    for size in (224, 448):
        model = build_model(_arch(name), 20, attention=name, img_size=size)
        model.eval()
        with paddle.no_grad():
            out = model(paddle.rand([1, 3, size, size]))
        assert out.shape == [1, 20] and np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("name", RECALIBRATORS + MIXERS)
def test_training_step_reaches_block_parameters(name: str) -> None:
    from engine.trainer import build_optimizer

    paddle.seed(1)
    model = build_model(_arch(name), 4, attention=name, img_size=64)
    blocks = attention_blocks(model)
    for i, (_, block) in enumerate(blocks):
        randomize(block, seed=i)  # away from the init, where e.g. PRM's theta has no gradient
    model.train()
    optimizer, _ = build_optimizer(model, lr=0.1, momentum=0.9, weight_decay=1e-4, iters_per_epoch=10, warmup_epochs=0, step_epochs=4)
    before = {n: p.numpy().copy() for prefix, b in blocks for n, p in b.named_parameters(prefix.rstrip(".")) if not p.stop_gradient}
    target = paddle.to_tensor(np.random.default_rng(0).integers(0, 2, (2, 4)).astype(np.float32))
    loss = paddle.nn.functional.binary_cross_entropy_with_logits(model(paddle.rand([2, 3, 64, 64])), target)
    loss.backward()
    params = dict(model.named_parameters())
    no_grad = [n for n in before if params[n].grad is None or not np.any(params[n].grad.numpy())]
    assert not no_grad, f"no gradient reached {no_grad[:5]}"
    optimizer.step()
    unchanged = [n for n in before if np.array_equal(params[n].numpy(), before[n])]
    assert not unchanged


def test_srm_parameters_train_without_weight_decay() -> None:
    from engine.trainer import build_optimizer, split_parameters

    model = build_model("resnet18", 3, attention="srm")
    backbone, classifier, no_decay = split_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in no_decay)[:3] == ["layer1.0.rclb.bn.bias", "layer1.0.rclb.bn.weight", "layer1.0.rclb.cfc"]
    assert len(no_decay) == 8 * 3 and all(".rclb." not in names[id(p)] for p in backbone)
    assert split_parameters(build_model("resnet18", 3, attention="ab"))[2] == []
    optimizer, _ = build_optimizer(model, lr=0.1, momentum=0.0, weight_decay=0.5, iters_per_epoch=1, warmup_epochs=0, step_epochs=4)
    model.layer1[0].rclb.cfc.set_value(paddle.full([64, 2], 0.5))
    before = {n: p.numpy().copy() for n, p in model.named_parameters() if not p.stop_gradient}
    (model(paddle.rand([2, 3, 64, 64])) * 0).sum().backward()  # zero gradients: only the decay moves weights
    optimizer.step()
    after = dict(model.named_parameters())
    for name in ("layer1.0.rclb.cfc", "layer1.0.rclb.bn.weight", "layer4.1.rclb.bn.bias"):
        np.testing.assert_array_equal(after[name].numpy(), before[name], err_msg=name)
    np.testing.assert_allclose(after["layer1.0.conv1.weight"].numpy(), before["layer1.0.conv1.weight"] * (1 - 0.1 * 0.5), rtol=1e-6)
    head = "classifier.multi_head.0.head.weight"  # 10x lr kept
    np.testing.assert_allclose(after[head].numpy(), before[head] * (1 - 1.0 * 0.5), rtol=1e-6)


@pytest.mark.parametrize("name", RECALIBRATORS + MIXERS)
def test_static_export_runs_in_the_predictor(name: str, tmp_path: Path) -> None:
    from paddle import inference

    paddle.seed(2)
    size = 64
    model = build_model(_arch(name), 5, attention=name, img_size=size)
    for i, (_, block) in enumerate(attention_blocks(model)):
        randomize(block, seed=i)
        for sub in block.sublayers(include_self=True):
            if isinstance(sub, (paddle.nn.BatchNorm2D, paddle.nn.GroupNorm)):
                sub.weight.set_value(paddle.uniform(sub.weight.shape, min=0.2, max=0.4))  # keep the logits moderate
    model.eval()
    x = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    with paddle.no_grad():
        want = model(paddle.to_tensor(x)).numpy()
    prefix = str(tmp_path / "model")
    paddle.jit.save(model, prefix, input_spec=[paddle.static.InputSpec([None, 3, size, size], "float32", "image")])
    model_file = prefix + ".json" if os.path.exists(prefix + ".json") else prefix + ".pdmodel"
    config = inference.Config(model_file, prefix + ".pdiparams")
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(2)
    predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.copy_from_cpu(x)
    predictor.run()
    got = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


# ----------------------------------------------------------------------------- weight loading
def _imagenet_state(model: paddle.nn.Layer, torch_names: bool = False) -> dict[str, np.ndarray]:
    """A plain model's backbone as an ImageNet checkpoint (with a 1000-class fc)."""
    state = {k: v.numpy() for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    if torch_names:
        state = {k.replace("._mean", ".running_mean").replace("._variance", ".running_var"): v for k, v in state.items()}
        state["fc.weight"] = np.zeros((1000, model.feature_channels), np.float32)
    else:
        state["fc.weight"] = np.zeros((model.feature_channels, 1000), np.float32)
    state["fc.bias"] = np.zeros((1000,), np.float32)
    return state


@pytest.fixture(scope="module")
def plain_r18() -> paddle.nn.Layer:
    paddle.seed(5)
    model = build_model("resnet18", 4)
    rng = np.random.default_rng(5)
    for name, tensor in model.state_dict().items():  # non-trivial BN statistics
        if name.endswith("._mean"):
            tensor.set_value(rng.uniform(-0.2, 0.2, tensor.shape).astype(np.float32))
        elif name.endswith("._variance"):
            tensor.set_value(rng.uniform(0.5, 1.5, tensor.shape).astype(np.float32))
    model.eval()
    return model


@pytest.mark.parametrize("suffix", [".pdparams", ".pth"])
def test_ab_reproduces_the_plain_resnet_after_loading_backbone_weights(plain_r18, tmp_path: Path, suffix: str, caplog) -> None:
    from utils.pth_io import save_pth

    path = tmp_path / f"imagenet{suffix}"
    if suffix == ".pth":
        save_pth(_imagenet_state(plain_r18, torch_names=True), path)
    else:
        paddle.save({k: paddle.to_tensor(v) for k, v in _imagenet_state(plain_r18).items()}, str(path))
    plain = build_model("resnet18", 4, pretrained=str(path))
    with caplog.at_level(logging.INFO):
        ab = build_model("resnet18", 4, attention="ab", pretrained=str(path))
    assert "the ab blocks are not in" in caplog.text and "start from their initialisation" in caplog.text
    plain.eval(), ab.eval()
    x = paddle.rand([2, 3, 64, 64])
    with paddle.no_grad():
        np.testing.assert_array_equal(ab.forward_features(x).numpy(), plain.forward_features(x).numpy())
        np.testing.assert_array_equal(ab.forward_features(x).numpy(), plain_r18.forward_features(x).numpy())


def test_backbone_weights_into_blocks_report_fresh_and_replaced(plain_r18, tmp_path: Path) -> None:
    paddle.seed(3)
    r50 = build_model("resnet50", 4)
    path = tmp_path / "r50.pdparams"
    paddle.save({k: paddle.to_tensor(v) for k, v in _imagenet_state(r50).items()}, str(path))
    model = build_model("resnet50", 4, attention="at")
    report = load_pretrained(model, str(path))
    assert report.replaced == ["layer4.0.conv2.weight", "layer4.1.conv2.weight", "layer4.2.conv2.weight"]
    assert report.fresh_attention and all(k.startswith("layer4.") and ".conv2." in k for k in report.fresh_attention)
    np.testing.assert_array_equal(model.layer4[0].conv3.weight.numpy(), r50.layer4[0].conv3.weight.numpy())
    # A checkpoint that has attention blocks must fit exactly: no silent partial loads.
    se_path = tmp_path / "se.pdparams"
    se = build_model("resnet18", 4, attention="se")
    state = {k: v for k, v in se.state_dict().items() if k != "layer1.0.rclb.fc.0.bias"}
    paddle.save(state, str(se_path))
    with pytest.raises(UserError, match="layer1.0.rclb.fc.0.bias"):
        load_pretrained(build_model("resnet18", 4, attention="se"), str(se_path))
    with pytest.raises(UserError, match="--attention"):
        load_pretrained(build_model("resnet18", 4), str(tmp_path / "se.pdparams"))
