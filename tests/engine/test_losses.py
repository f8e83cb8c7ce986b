"""``engine.losses``: the reference BCE unchanged, the Asymmetric Loss against a NumPy statement,
label masking (``ignore_unknown``), the registry, and ``train_step``/``Trainer`` with ``loss_fn``."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from engine.config import TrainConfig
from engine.gemm_conv import use_gemm_convs
from engine.losses import ASL_EPS, LOSSES, UNKNOWN_VALUES, LossSettings, asymmetric_loss, build_loss
from engine.trainer import Trainer, build_optimizer, check_binary_targets, train_step
from models.spec import ModelSettings
from utils.errors import UserError

CLASSES = ("a", "b", "c")
SPEC = ModelSettings("resnet18", len(CLASSES), img_size=32)


# --------------------------------------------------------------------------- NumPy statement of ASL
def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def asl_numpy(x: np.ndarray, y: np.ndarray, gamma_neg: float, gamma_pos: float, clip: float,
              known: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(loss, d loss / d x with the focusing weight held constant), in float64."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    k = np.ones_like(x) if known is None else known.astype(np.float64)
    y = np.where(k > 0, y, 0.0)
    p = sigmoid(x)
    q = np.minimum(1.0 - p + clip, 1.0) if clip > 0 else 1.0 - p
    ce = y * np.log(np.maximum(p, ASL_EPS)) + (1 - y) * np.log(np.maximum(q, ASL_EPS))
    w = (1.0 - (p * y + q * (1 - y))) ** (gamma_pos * y + gamma_neg * (1 - y))
    loss = -(w * ce * k).sum()
    # d/dx log p = 1 - p; d/dx log(1 - p + clip) = -p (1 - p) / q, zero where the shift is capped at 1
    d_pos = (1 - p) * (p > ASL_EPS)
    d_neg = -p * (1 - p) / q * (q > ASL_EPS) * ((p >= clip) if clip > 0 else 1.0)
    grad = -w * (y * d_pos + (1 - y) * d_neg) * k
    return float(loss), grad


def logits_and_targets(seed: int = 0, shape: tuple[int, int] = (5, 7)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype("float32")  # wide enough to reach p < clip and p near 1
    y = (rng.random(shape) < 0.4).astype("float32")
    return x, y


def loss_and_grad(loss_fn, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    logits = paddle.to_tensor(x, stop_gradient=False)
    loss = loss_fn(logits, paddle.to_tensor(y))
    loss.backward()
    assert loss.dtype == paddle.float32 and loss.size == 1
    return float(loss), logits.grad.numpy()


def settings(name: str = "asl", ignore_unknown: bool = False, gamma_neg: float = 4.0, gamma_pos: float = 0.0,
             clip: float = 0.05) -> LossSettings:
    return LossSettings(name=name, ignore_unknown=ignore_unknown, asl_gamma_neg=gamma_neg, asl_gamma_pos=gamma_pos, asl_clip=clip)


@pytest.mark.parametrize("gamma_neg, gamma_pos, clip", [(4, 0, 0.05), (4, 1, 0.05), (2, 1, 0.0), (0, 0, 0.0), (1, 3, 0.2)])
def test_asl_matches_the_numpy_statement(gamma_neg: float, gamma_pos: float, clip: float) -> None:
    x, y = logits_and_targets()
    loss, grad = loss_and_grad(build_loss(settings(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)), x, y)
    want_loss, want_grad = asl_numpy(x, y, gamma_neg, gamma_pos, clip)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)
    if clip > 0:  # negatives below the shift add nothing and get no gradient
        easy = (y == 0) & (sigmoid(x.astype(np.float64)) < clip - 1e-3)
        assert easy.any() and np.all(grad[easy] == 0)


def test_asl_gradient_matches_finite_differences_without_focusing() -> None:
    """With gamma 0 the weight is 1: the gradient is the derivative of the loss itself."""
    x, y = logits_and_targets(seed=1, shape=(3, 4))
    p = sigmoid(x.astype(np.float64))
    x = np.where(np.abs(p - 0.05) < 1e-2, x + 0.5, x).astype("float32")  # keep off the shift's kink
    _, grad = loss_and_grad(build_loss(settings(gamma_neg=0, gamma_pos=0, clip=0.05)), x, y)
    h = 1e-5
    fd = np.zeros_like(grad, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        up, down = x.astype(np.float64), x.astype(np.float64)
        up[idx] += h
        down[idx] -= h
        fd[idx] = (asl_numpy(up, y, 0, 0, 0.05)[0] - asl_numpy(down, y, 0, 0, 0.05)[0]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=1e-5)


def test_asl_focusing_weight_carries_no_gradient() -> None:
    """The published default: the gradient holds the focusing weight constant, so it is not
    the finite-difference derivative of the loss (which also differentiates the weight)."""
    x, y = logits_and_targets(seed=2, shape=(3, 4))
    _, grad = loss_and_grad(build_loss(settings(gamma_neg=4, gamma_pos=1, clip=0.0)), x, y)
    h = 1e-5
    fd = np.zeros_like(grad, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        up, down = x.astype(np.float64), x.astype(np.float64)
        up[idx] += h
        down[idx] -= h
        fd[idx] = (asl_numpy(up, y, 4, 1, 0.0)[0] - asl_numpy(down, y, 4, 1, 0.0)[0]) / (2 * h)
    np.testing.assert_allclose(grad, asl_numpy(x, y, 4, 1, 0.0)[1], rtol=1e-4, atol=1e-6)
    assert np.abs(grad - fd).max() > 1e-2


def test_the_defaults_are_the_reference_bce_and_the_published_asl() -> None:
    config = TrainConfig(model=SPEC, dataset="demo", train_json="", test_json="", classes=CLASSES, save_dir="")
    assert (config.loss, config.ignore_unknown) == ("bce", False)
    assert (config.asl_gamma_neg, config.asl_gamma_pos, config.asl_clip, ASL_EPS) == (4.0, 0.0, 0.05, 1e-8)
    assert LOSSES.names() == ["bce", "asl"]
    assert LOSSES.get("bce").reduction == "mean" and LOSSES.get("asl").reduction == "sum"
    run = config.to_run_config()
    assert {k: run[k] for k in ("loss", "asl_gamma_neg", "asl_gamma_pos", "asl_clip", "ignore_unknown")} == {
        "loss": "bce", "asl_gamma_neg": 4.0, "asl_gamma_pos": 0.0, "asl_clip": 0.05, "ignore_unknown": False}
    # asymmetric_loss's own defaults are the published ones too
    x, y = logits_and_targets()
    expected = asymmetric_loss(paddle.to_tensor(x), paddle.to_tensor(y))
    assert float(build_loss(dataclasses.replace(config, loss="asl"))(paddle.to_tensor(x), paddle.to_tensor(y))) == float(expected)
    assert float(expected) == pytest.approx(asl_numpy(x, y, 4, 0, 0.05)[0], rel=1e-5)

    # the default loss is F.binary_cross_entropy_with_logits itself: same value and gradient, to the bit
    loss, grad = loss_and_grad(build_loss(config), x, y)
    want, want_grad = loss_and_grad(F.binary_cross_entropy_with_logits, x, y)
    assert loss == want
    np.testing.assert_array_equal(grad, want_grad)


def test_train_step_default_and_configured_bce_give_identical_weights() -> None:
    config = TrainConfig(model=SPEC, dataset="demo", train_json="", test_json="", classes=CLASSES, save_dir="")
    images = paddle.to_tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype("float32"))
    targets = paddle.to_tensor((np.random.default_rng(1).random((4, 3)) < 0.5).astype("float32"))
    states, losses = [], []
    for loss_fn in (None, build_loss(config)):
        paddle.seed(5)
        model = SPEC.build()
        model.train()
        optimizer, scheduler = build_optimizer(model, 0.05, 0.9, 1e-4, 1, 0, 1)
        losses.append([float(train_step(model, optimizer, scheduler, images, targets, loss_fn=loss_fn)) for _ in range(2)])
        states.append({k: v.numpy() for k, v in model.state_dict().items()})
    assert losses[0] == losses[1]
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=key)


# --------------------------------------------------------------------------- masking
def partial_targets() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = logits_and_targets(seed=3, shape=(4, 6))
    y[0, 1], y[1, 4], y[2, 0], y[3, 5], y[3, 2] = -1, 99, -1, 99, -1
    known = ~np.isin(y, UNKNOWN_VALUES)
    return x, y, known


@pytest.mark.parametrize("name", ["bce", "asl"])
def test_unknown_targets_add_no_loss_and_no_gradient(name: str) -> None:
    x, y, known = partial_targets()
    loss_fn = build_loss(settings(name, ignore_unknown=True))
    loss, grad = loss_and_grad(loss_fn, x, y)
    assert np.all(grad[~known] == 0)
    other = x.copy()
    other[~known] = np.where(other[~known] > 0, -40.0, 40.0)  # confidently wrong at every unknown entry
    loss2, grad2 = loss_and_grad(loss_fn, other, y)
    assert loss2 == loss
    np.testing.assert_array_equal(grad2, grad)
    if name == "asl":
        want_loss, want_grad = asl_numpy(x, y, 4, 0, 0.05, known)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)
    else:  # the mean over the known entries only
        p = sigmoid(x.astype(np.float64))
        per_entry = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        want_loss = per_entry[known].mean()
        np.testing.assert_allclose(grad[known], ((p - y) / known.sum())[known], rtol=1e-4, atol=1e-7)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    # without the flag the same targets are read as labels: another loss
    assert float(build_loss(settings(name))(paddle.to_tensor(x), paddle.to_tensor(y))) != pytest.approx(loss, rel=1e-3)


def test_masking_without_unknown_targets_is_the_plain_loss() -> None:
    x, y = logits_and_targets(seed=4)
    for name in ("bce", "asl"):
        plain, _ = loss_and_grad(build_loss(settings(name)), x, y)
        masked, _ = loss_and_grad(build_loss(settings(name, ignore_unknown=True)), x, y)
        assert masked == pytest.approx(plain, rel=1e-6), name
    all_unknown = np.full_like(y, -1.0)
    loss, grad = loss_and_grad(build_loss(settings("bce", ignore_unknown=True)), x, all_unknown)
    assert loss == 0.0 and not grad.any()


def test_check_binary_targets_accepts_unknown_labels_only_with_the_flag() -> None:
    split = SimpleNamespace(targets=np.array([[1, 0, -1], [0, 99, 1]], dtype="float32"), json_path=Path("train.json"))
    with pytest.raises(UserError) as exc:
        check_binary_targets(split)
    assert "[-1.0, 99.0]" in str(exc.value) and "--ignore_unknown" in str(exc.value) and "train.json" in str(exc.value)
    check_binary_targets(split, ignore_unknown=True)
    check_binary_targets(SimpleNamespace(targets=np.array([[1, 0]], dtype="float32"), json_path=Path("t.json")))
    odd = SimpleNamespace(targets=np.array([[1, 0.5, -1]], dtype="float32"), json_path=Path("train.json"))
    with pytest.raises(UserError, match=r"contain \[0\.5\]"):
        check_binary_targets(odd, ignore_unknown=True)
    with pytest.raises(UserError) as exc:
        check_binary_targets(odd)
    assert "pass --ignore_unknown" not in str(exc.value)  # 0.5 is no unknown label: the flag would not help


# --------------------------------------------------------------------------- registry and settings
def test_sum_losses_are_scaled_by_the_process_count() -> None:
    x, y = (paddle.to_tensor(a) for a in logits_and_targets())
    assert float(build_loss(settings("asl"), world_size=2)(x, y)) == pytest.approx(2 * float(build_loss(settings("asl"))(x, y)))
    assert float(build_loss(settings("bce"), world_size=2)(x, y)) == float(build_loss(settings("bce"))(x, y))


@pytest.mark.parametrize("bad, needle", [
    (settings("focal"), "unknown loss 'focal'; choose one of: bce, asl"),
    (settings(clip=1.0), "--asl_clip must be in [0, 1)"),
    (settings(clip=-0.1), "--asl_clip must be in [0, 1)"),
    (settings(gamma_neg=-1), "--asl_gamma_neg must be a finite number >= 0"),
    (settings(gamma_pos=float("inf")), "--asl_gamma_pos must be a finite number >= 0"),
])
def test_bad_loss_settings_are_user_errors(bad: LossSettings, needle: str) -> None:
    with pytest.raises(UserError) as exc:
        build_loss(bad)
    assert needle in str(exc.value)


# --------------------------------------------------------------------------- train_step and Trainer
class ArrayDataset(paddle.io.Dataset):
    """``n`` fixed random images [3, 32, 32] with targets [3]: 0/1, and -1/99 with ``unknown``."""

    def __init__(self, n: int = 12, unknown: bool = False) -> None:
        rng = np.random.default_rng(0)
        self.images = rng.standard_normal((n, 3, 32, 32)).astype("float32")
        self.targets = (rng.random((n, len(CLASSES))) < 0.4).astype("float32")
        if unknown:
            self.targets[::3, 0], self.targets[1::4, 2] = -1.0, 99.0

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[i], self.targets[i]

    def __len__(self) -> int:
        return len(self.images)


def test_train_step_with_asl_lowers_the_loss_of_a_batch() -> None:
    paddle.seed(0)
    model = SPEC.build()
    model.train()
    data = ArrayDataset(n=4, unknown=True)
    images, targets = paddle.to_tensor(data.images), paddle.to_tensor(data.targets)
    loss_fn = build_loss(settings("asl", ignore_unknown=True))
    # a sum over the batch: an lr far below the BCE recipe's (at 1e-3 negatives saturate and the loss stalls)
    optimizer, scheduler = build_optimizer(model, 1e-4, 0.9, 1e-4, 1, 0, 100)
    losses = [float(train_step(model, optimizer, scheduler, images, targets, loss_fn=loss_fn)) for _ in range(8)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.1 * losses[0], losses


def test_the_trainer_trains_with_the_configured_loss(tmp_path: Path) -> None:
    cfg = TrainConfig(model=SPEC, dataset="demo", train_json="unused.json", test_json="unused.json", classes=CLASSES,
                      save_dir=str(tmp_path / "run"), epochs=1, batch_size=4, lr=0.002, warmup_epochs=0, lr_step=1, print_freq=0,
                      loss="asl", asl_gamma_neg=2.0, asl_clip=0.1, ignore_unknown=True)

    def model() -> paddle.nn.Layer:
        paddle.seed(3)
        return SPEC.build()

    def loader() -> paddle.io.DataLoader:
        return paddle.io.DataLoader(ArrayDataset(unknown=True), batch_size=4, shuffle=False)

    by_trainer = model()
    trainer = Trainer(cfg, model=by_trainer, train_loader=loader(), test_loader=None)
    try:
        trainer.run()
    finally:
        trainer.close()

    def by_hand(loss_fn) -> tuple[paddle.nn.Layer, list[float]]:
        net = model()
        use_gemm_convs(net, cfg.gemm_conv_side)  # what the Trainer does on the CPU
        net.train()
        optimizer, scheduler = build_optimizer(net, cfg.lr, cfg.momentum, cfg.weight_decay, 3, cfg.warmup_epochs, cfg.lr_step)
        return net, [float(train_step(net, optimizer, scheduler, x, t, loss_fn=loss_fn)) for x, t in loader()]

    asl_net, asl_losses = by_hand(build_loss(cfg))
    bce_net, _ = by_hand(build_loss(dataclasses.replace(cfg, loss="bce")))
    head = "classifier.multi_head.0.head.weight"
    trained = by_trainer.state_dict()[head].numpy()
    np.testing.assert_array_equal(trained, asl_net.state_dict()[head].numpy())
    assert not np.array_equal(trained, bce_net.state_dict()[head].numpy())
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["loss"] == pytest.approx(np.mean(asl_losses), rel=1e-6)
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (written["loss"], written["asl_gamma_neg"], written["asl_clip"], written["ignore_unknown"]) == ("asl", 2.0, 0.1, True)
