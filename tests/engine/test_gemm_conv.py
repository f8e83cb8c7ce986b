"""engine.gemm_conv: small-map training convolutions as one GEMM over the batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from engine import gemm_conv
from engine.config import TrainConfig
from engine.gemm_conv import conv2d_as_gemm, use_gemm_convs, uses_gemm
from engine.trainer import Trainer
from models.spec import ModelSettings

CLASSES = ("a", "b", "c")
SIZE, BATCH = 64, 8  # ResNet-18's last maps are 2 x 2: BatchNorm over 32 values per channel stays well conditioned


class Images(paddle.io.Dataset):
    """``n`` fixed random images [3, 64, 64] with 0/1 targets [3]."""

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(0)
        self.x = rng.random((n, 3, SIZE, SIZE), dtype=np.float32)
        self.y = (rng.random((n, len(CLASSES))) > 0.5).astype(np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.x[i], self.y[i]

CASES = [  # (in, out, kernel, stride, padding, dilation, bias, side)
    (4, 6, 3, 1, 1, 1, False, 5),
    (4, 6, 3, 2, 1, 1, True, 8),
    (4, 6, 1, 2, 0, 1, False, 7),
    (3, 5, 7, 2, 3, 1, False, 9),
    (4, 6, 3, 1, 2, 2, True, 6),
    (4, 6, 1, 1, 0, 1, True, 4),
]


@pytest.mark.parametrize("cin, cout, k, stride, pad, dil, bias, side", CASES)
def test_gemm_convolution_and_its_gradients_equal_conv2d(cin, cout, k, stride, pad, dil, bias, side) -> None:
    paddle.seed(0)
    layer = paddle.nn.Conv2D(cin, cout, k, stride=stride, padding=pad, dilation=dil, bias_attr=None if bias else False)
    x_np = np.random.default_rng(1).standard_normal((3, cin, side, side)).astype(np.float32)
    grads = []
    for fn in (lambda x: F.conv2d(x, layer.weight, layer.bias, stride, pad, dil), lambda x: conv2d_as_gemm(layer, x)):
        x = paddle.to_tensor(x_np, stop_gradient=False)
        y = fn(x)
        (y * paddle.arange(y.numel(), dtype="float32").reshape(y.shape) / y.numel()).sum().backward()
        grads.append([y.numpy(), x.grad.numpy(), layer.weight.grad.numpy()] + ([layer.bias.grad.numpy()] if bias else []))
        layer.clear_gradients()
    for native, gemm in zip(*grads):
        assert native.shape == gemm.shape
        np.testing.assert_allclose(gemm, native, rtol=1e-5, atol=1e-5 * float(np.abs(native).max()))


def test_only_training_on_small_maps_takes_the_gemm_path(monkeypatch) -> None:
    paddle.seed(0)
    model = ModelSettings("resnet18", 3, img_size=SIZE).build()
    twin = ModelSettings("resnet18", 3, img_size=SIZE).build()
    twin.set_state_dict(model.state_dict())
    convs = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.Conv2D)]
    assert use_gemm_convs(model, 8) == len(convs) and all(uses_gemm(c) for c in convs)
    calls: list[tuple[int, int]] = []
    real = gemm_conv.conv2d_as_gemm
    monkeypatch.setattr(gemm_conv, "conv2d_as_gemm", lambda layer, x: calls.append(tuple(x.shape[2:])) or real(layer, x))
    x = paddle.rand([BATCH, 3, SIZE, SIZE])
    model.eval(), twin.eval()
    np.testing.assert_array_equal(model(x).numpy(), twin(x).numpy())  # evaluation: the native kernel, bit for bit
    assert calls == []
    model.train(), twin.train()
    got, want = model(x).numpy(), twin(x).numpy()
    assert calls and all(h <= 8 and w <= 8 for h, w in calls)  # 64 px: the 8, 4 and 2 px maps
    assert len(calls) < len(convs)  # the stem, the 16 px stage and the first conv of the next stay native
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _train(tmp_path: Path, name: str, side: int, steps: int) -> dict[str, np.ndarray]:
    cfg = TrainConfig(model=ModelSettings("resnet18", len(CLASSES), img_size=SIZE), dataset="demo", train_json="unused.json",
                      test_json="unused.json", classes=CLASSES, save_dir=str(tmp_path / name), epochs=1, batch_size=BATCH,
                      lr=0.01, warmup_epochs=0, lr_step=1, print_freq=0, gemm_conv_side=side)
    paddle.seed(3)
    model = cfg.model.build()
    trainer = Trainer(cfg, model=model, train_loader=paddle.io.DataLoader(Images(steps * BATCH), batch_size=BATCH, shuffle=False),
                      test_loader=None)
    try:
        trainer.run()
    finally:
        trainer.close()
    assert any(uses_gemm(layer) for layer in model.sublayers()) == (side > 0)
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_the_trainer_with_gemm_convs_gives_the_plain_weights_to_float_tolerance(tmp_path: Path) -> None:
    """One step of the Trainer: the same update to float rounding (about 1e-6 of each tensor's
    scale). Over more steps from a random start on random labels the two paths drift apart as
    any two roundings do (about 4e-3 after two steps here), so runs compare within one path:
    deterministic, and resumed runs equal uninterrupted ones (tests/e2e/test_train_cli.py)."""
    plain, gemm = _train(tmp_path, "plain", 0, 1), _train(tmp_path, "gemm", 8, 1)
    assert any(not np.array_equal(plain[k], gemm[k]) for k in plain)  # the other path really ran
    for key in plain:
        scale = max(float(np.abs(plain[key]).max()), 1e-3)
        np.testing.assert_allclose(gemm[key], plain[key], rtol=0, atol=1e-5 * scale, err_msg=key)
    first, second = _train(tmp_path, "two_a", 8, 2), _train(tmp_path, "two_b", 8, 2)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)  # deterministic


def test_the_trainer_keeps_freed_heap_memory(tmp_path: Path, monkeypatch) -> None:
    """Each step re-allocates the same activations; the Trainer asks glibc to keep freed pages
    (utils.memory, tested there) before its first step, as a ResNet-50 step otherwise re-faults ~50k pages."""
    import engine.trainer

    calls: list[bool] = []
    monkeypatch.setattr(engine.trainer, "retain_freed_memory", lambda: calls.append(True) or True)
    _train(tmp_path, "kept", 8, 1)
    assert calls == [True]
