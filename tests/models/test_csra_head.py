"""The CSRA head against a NumPy implementation of spec section 1."""
from __future__ import annotations

import math

import numpy as np
import paddle
import pytest

from models.csra import HEAD_TEMPERATURES, CSRA, MultiHeadCSRA
from utils.errors import UserError


def csra_numpy(x: np.ndarray, weights: list[np.ndarray], temps: tuple[int, ...], lam: float) -> np.ndarray:
    """x [B,d,H,W], weights [C,d] per head -> summed head logits [B,C] (float64)."""
    b, d, h, w = x.shape
    feats = x.reshape(b, d, h * w).astype(np.float64)
    total = np.zeros((b, weights[0].shape[0]))
    for m, t in zip(weights, temps):
        m = m.astype(np.float64)
        s = np.einsum("cd,bdp->bcp", m, feats) / np.linalg.norm(m, axis=1)[None, :, None]
        base = s.mean(axis=2)
        if t == 99:
            att = s.max(axis=2)
        else:
            z = t * s
            a = np.exp(z - z.max(axis=2, keepdims=True))
            a /= a.sum(axis=2, keepdims=True)
            att = (s * a).sum(axis=2)
        total += base + lam * att
    return total


def _features(batch: int, d: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, d, h, w)).astype(np.float32)
    # A strong peak at a different position in every sample, so per-sample max matters.
    for i in range(batch):
        x[i, :, i % h, (2 * i + 1) % w] += 4.0
    return x


@pytest.mark.parametrize("num_heads", [1, 2, 4, 6, 8])
@pytest.mark.parametrize("lam", [0.1, 0.5, 1.0])
def test_multihead_matches_numpy(num_heads: int, lam: float) -> None:
    paddle.seed(num_heads)
    b, d, h, w, c = 4, 16, 5, 6, 7
    x = _features(b, d, h, w, seed=num_heads)
    head = MultiHeadCSRA(d, c, num_heads=num_heads, lam=lam)
    weights = [layer.head.weight.numpy().reshape(c, d) for layer in head.multi_head]
    got = head(paddle.to_tensor(x)).numpy()
    want = csra_numpy(x, weights, HEAD_TEMPERATURES[num_heads], lam)
    assert got.shape == (b, c)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The per-sample arg-max location of the score differs between samples.
    flat = x.reshape(b, d, -1).sum(axis=1).argmax(axis=1)
    assert len(set(flat.tolist())) == b


def test_max_head_is_per_sample() -> None:
    """T=99 takes each sample's own maximum (the earlier Paddle port used sample 0's)."""
    d, c = 8, 3
    head = CSRA(d, c, temperature=99, lam=1.0)
    x = _features(3, d, 4, 4, seed=3)
    got = head(paddle.to_tensor(x)).numpy()
    m = head.head.weight.numpy().reshape(c, d)
    s = np.einsum("cd,bdp->bcp", m, x.reshape(3, d, -1)) / np.linalg.norm(m, axis=1)[None, :, None]
    np.testing.assert_allclose(got, s.mean(2) + s.max(2), rtol=1e-5, atol=1e-6)
    broadcast_bug = s.mean(2) + s.max(2)[0:1]
    assert not np.allclose(got, broadcast_bug, atol=1e-3)


def test_heads_are_summed_not_averaged() -> None:
    d, c = 8, 4
    head = MultiHeadCSRA(d, c, num_heads=2, lam=0.3)
    x = paddle.to_tensor(_features(2, d, 3, 3, seed=5))
    parts = [h(x).numpy() for h in head.multi_head]
    np.testing.assert_allclose(head(x).numpy(), parts[0] + parts[1], rtol=1e-6)


def test_score_invariant_to_weight_scale() -> None:
    d, c = 8, 4
    head = CSRA(d, c, temperature=1, lam=0.1)
    x = paddle.to_tensor(_features(2, d, 3, 3, seed=7))
    before = head(x).numpy()
    head.head.weight.set_value(head.head.weight * 3.0)
    np.testing.assert_allclose(head(x).numpy(), before, rtol=1e-5)


def test_head_init_matches_pytorch_default() -> None:
    """kaiming-uniform(a=sqrt(5)) over fan_in = d is U(-1/sqrt(d), 1/sqrt(d))."""
    paddle.seed(0)
    d, c = 256, 80
    w = CSRA(d, c, temperature=1, lam=0.1).head.weight.numpy()
    bound = 1.0 / math.sqrt(d)
    assert w.shape == (c, d, 1, 1)
    assert np.abs(w).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert np.abs(w).max() > 0.95 * bound


def test_parameter_names_match_reference_checkpoints() -> None:
    head = MultiHeadCSRA(8, 3, num_heads=4, lam=0.5)
    assert list(head.state_dict()) == [f"multi_head.{i}.head.weight" for i in range(4)]
    assert head.temperatures == (1, 2, 4, 99)


@pytest.mark.parametrize("num_heads", [0, 3, 5, 7, 9])
def test_bad_head_count_is_clear(num_heads: int) -> None:
    with pytest.raises(UserError, match="num_heads"):
        MultiHeadCSRA(8, 3, num_heads=num_heads)


@pytest.mark.parametrize("lam", [0.0, -0.1, float("nan")])
def test_bad_lam_is_clear(lam: float) -> None:
    with pytest.raises(UserError, match="lam"):
        MultiHeadCSRA(8, 3, num_heads=1, lam=lam)
