"""CSRA class maps (models.csra: ClassMaps, score_map, logit_and_contribution, class_maps,
forward_with_maps) against a NumPy statement of the head, on heads and on whole models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import pytest

from models.csra import CSRA, HEAD_TEMPERATURES, ClassMaps, MultiHeadCSRA
from models.model import MODELS, build_model


def head_numpy(x: np.ndarray, m: np.ndarray, temperature: float, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One head in float64: x [B,d,H,W], m [C,d] -> (score [B,C,H,W], logit [B,C], contribution [B,C,H,W])."""
    b, d, h, w = x.shape
    feats = x.reshape(b, d, h * w).astype(np.float64)
    m = m.astype(np.float64)
    s = np.einsum("cd,bdp->bcp", m, feats) / np.linalg.norm(m, axis=1)[None, :, None]
    if temperature == 99:
        att_w = np.zeros_like(s)
        idx = s.argmax(axis=2)  # NumPy also takes the first position on ties
        np.put_along_axis(att_w, idx[..., None], 1.0, axis=2)
        att = s.max(axis=2)
    else:
        z = temperature * s
        att_w = np.exp(z - z.max(axis=2, keepdims=True))
        att_w /= att_w.sum(axis=2, keepdims=True)
        att = (s * att_w).sum(axis=2)
    logit = s.mean(axis=2) + lam * att
    contrib = s / (h * w) + lam * s * att_w
    return s.reshape(b, -1, h, w), logit, contrib.reshape(b, -1, h, w)


def _features(batch: int, d: int, h: int, w: int, seed: int) -> np.ndarray:
    """Random features with a strong peak at a different position in every sample."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, d, h, w)).astype(np.float32)
    for i in range(batch):
        x[i, :, (i * 2) % h, (i * 3 + 1) % w] += 4.0
    return x


@pytest.mark.parametrize("num_heads", [1, 2, 4])
@pytest.mark.parametrize("hw", [(1, 1), (3, 3), (4, 6), (7, 2), (1, 5)])
def test_class_maps_match_numpy(num_heads: int, hw: tuple[int, int]) -> None:
    """Logits, per-head score maps and the combined map equal the NumPy head; sums and forward agree."""
    paddle.seed(num_heads)
    b, d, c, lam = 3, 12, 5, 0.3
    h, w = hw
    x = _features(b, d, h, w, seed=10 * h + w)
    head = MultiHeadCSRA(d, c, num_heads=num_heads, lam=lam)
    head.eval()
    with paddle.no_grad():
        xt = paddle.to_tensor(x)
        maps = head.class_maps(xt)
        forward = head(xt).numpy()
    assert isinstance(maps, ClassMaps)
    assert len(maps.head_scores) == num_heads
    want_logit = np.zeros((b, c))
    want_combined = np.zeros((b, c, h, w))
    for layer, temperature, got_score in zip(head.multi_head, HEAD_TEMPERATURES[num_heads], maps.head_scores):
        s, logit, contrib = head_numpy(x, layer.head.weight.numpy().reshape(c, d), temperature, lam)
        assert tuple(got_score.shape) == (b, c, h, w)
        np.testing.assert_allclose(got_score.numpy(), s, rtol=1e-5, atol=1e-5)
        want_logit += logit
        want_combined += contrib
    logits, combined = maps.logits.numpy(), maps.combined.numpy()
    assert logits.shape == (b, c) and combined.shape == (b, c, h, w)
    np.testing.assert_allclose(logits, want_logit, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(combined, want_combined, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(combined.sum(axis=(2, 3)), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, forward, rtol=1e-6, atol=1e-6)


def test_max_head_contribution_is_per_sample() -> None:
    """The T=99 head's attention term sits at each sample's own arg-max, and sums to its logit."""
    paddle.seed(7)
    d, c, lam, h, w = 8, 3, 1.0, 4, 5
    head = CSRA(d, c, temperature=99, lam=lam)
    x = _features(3, d, h, w, seed=3)
    with paddle.no_grad():
        xt = paddle.to_tensor(x)
        score = head.score_map(xt).numpy()
        logit, contrib = (t.numpy() for t in head.logit_and_contribution(xt))
        forward = head(xt).numpy()
    attention_term = (contrib - score / (h * w)).reshape(3, c, -1)  # lam * s at the arg-max, 0 elsewhere
    flat = score.reshape(3, c, -1)
    argmax = flat.argmax(axis=2)
    assert len(set(argmax[:, 0].tolist())) == 3  # the samples really differ
    for b in range(3):
        for k in range(c):
            p = argmax[b, k]
            assert attention_term[b, k, p] == pytest.approx(lam * flat[b, k, p], rel=1e-5, abs=1e-6)
            assert np.count_nonzero(np.abs(attention_term[b, k]) > 1e-6) == 1
    np.testing.assert_allclose(contrib.sum(axis=(2, 3)), logit, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(logit, forward)


def test_max_head_ties_take_first_position() -> None:
    """Equal scores everywhere: the one-hot goes to position 0 only (not spread over the ties)."""
    d, c, lam, h, w = 4, 2, 0.5, 3, 3
    head = CSRA(d, c, temperature=99, lam=lam)
    x = paddle.ones([2, d, h, w])
    with paddle.no_grad():
        score = head.score_map(x).numpy()
        logit, contrib = (t.numpy() for t in head.logit_and_contribution(x))
    s = score[:, :, 0, 0]
    assert np.all(np.abs(s) > 1e-3)
    want = np.repeat((s / (h * w))[..., None], h * w, axis=2)
    want[:, :, 0] += lam * s
    np.testing.assert_allclose(contrib.reshape(2, c, -1), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(contrib.sum(axis=(2, 3)), logit, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name, img_size, kw",
    [
        ("resnet18", 64, {}),
        ("resnet50", 64, {"attention": "se"}),
        ("vit_b16", 32, {}),  # the smallest registered ViT; 32 px = a 2 x 2 patch grid
        ("efficientmod_xxs", 96, {}),
    ],
)
def test_model_class_maps(name: str, img_size: int, kw: dict) -> None:
    """Every family: maps [B, C, S/stride, S/stride], logits == forward, combined sums to the logits."""
    paddle.seed(0)
    c = 5
    model = build_model(name, num_classes=c, num_heads=2, img_size=img_size, **kw)
    model.eval()
    side = -(-img_size // MODELS.get(name).stride)
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 3, img_size, img_size)).astype(np.float32))
    with paddle.no_grad():
        maps = model.class_maps(x)
        forward = model(x).numpy()
        pair = model.forward_with_maps(x)
    logits, combined = maps.logits.numpy(), maps.combined.numpy()
    assert combined.shape == (2, c, side, side)
    assert [tuple(s.shape) for s in maps.head_scores] == [(2, c, side, side)] * 2
    np.testing.assert_allclose(logits, forward, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(combined.sum(axis=(2, 3)), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pair[0].numpy(), logits)
    np.testing.assert_array_equal(pair[1].numpy(), combined)


class _WithMaps(paddle.nn.Layer):
    """What an export wraps: forward(x) -> (logits, combined)."""

    def __init__(self, model: paddle.nn.Layer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        return self.model.forward_with_maps(x)


def test_forward_with_maps_exports(tmp_path: Path) -> None:
    """paddle.jit.save traces forward_with_maps (incl. the max head's one-hot); the loaded program matches dygraph."""
    paddle.seed(1)
    model = build_model("resnet18", num_classes=5, num_heads=2, img_size=64)  # heads T = 1 and 99
    model.eval()
    wrapper = _WithMaps(model)
    wrapper.eval()
    x = paddle.to_tensor(np.random.default_rng(1).normal(size=(3, 3, 64, 64)).astype(np.float32))
    with paddle.no_grad():
        want_logits, want_maps = (t.numpy() for t in model.forward_with_maps(x))
    prefix = str(tmp_path / "with_maps")
    paddle.jit.save(wrapper, prefix, input_spec=[paddle.static.InputSpec([None, 3, 64, 64], "float32", "x")])
    loaded = paddle.jit.load(prefix)
    loaded.eval()
    with paddle.no_grad():
        got_logits, got_maps = (t.numpy() for t in loaded(x))
    assert got_maps.shape == (3, 5, 2, 2)
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_maps, want_maps, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_maps.sum(axis=(2, 3)), got_logits, rtol=1e-4, atol=1e-4)
