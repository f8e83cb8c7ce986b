"""``engine.trainer.train_step`` is the Trainer's step: the same batches give the same weights.

The Trainer here is given its parts (the Python API: ``Trainer(config, model=..., train_loader=...)``),
not built from flags.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from engine import trainer as trainer_module
from engine.config import TrainConfig
from engine.gemm_conv import use_gemm_convs
from engine.trainer import Trainer, build_optimizer, train_step
from models.spec import ModelSettings

CLASSES = ("a", "b", "c")
SPEC = ModelSettings("resnet18", len(CLASSES), img_size=32)


class ArrayDataset(paddle.io.Dataset):
    """``n`` fixed random images [3, 32, 32] with 0/1 targets [3]."""

    def __init__(self, n: int = 12, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.images = rng.standard_normal((n, 3, 32, 32)).astype("float32")
        self.targets = (rng.random((n, len(CLASSES))) < 0.4).astype("float32")

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[i], self.targets[i]

    def __len__(self) -> int:
        return len(self.images)


def config(save_dir: Path, **kw) -> TrainConfig:
    settings = dict(model=SPEC, dataset="demo", train_json="unused.json", test_json="unused.json", classes=CLASSES,
                    save_dir=str(save_dir), epochs=2, batch_size=4, lr=0.05, warmup_epochs=0.5, lr_step=1, print_freq=0)
    return TrainConfig(**{**settings, **kw})


def twin_models() -> tuple[paddle.nn.Layer, paddle.nn.Layer]:
    paddle.seed(3)
    a = SPEC.build()
    b = SPEC.build()
    b.set_state_dict(a.state_dict())
    return a, b


def loader() -> paddle.io.DataLoader:
    return paddle.io.DataLoader(ArrayDataset(), batch_size=4, shuffle=False)


def assert_same_state(a: paddle.nn.Layer, b: paddle.nn.Layer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key].numpy(), sb[key].numpy(), err_msg=key)


def test_train_step_loop_equals_the_trainer(tmp_path: Path, monkeypatch) -> None:
    cfg = config(tmp_path / "run")
    by_trainer, by_hand = twin_models()
    calls = []
    real_step = trainer_module.train_step

    def counting_step(*args, **kwargs):
        calls.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", counting_step)  # the Trainer must go through train_step
    trainer = Trainer(cfg, model=by_trainer, train_loader=loader(), test_loader=None)
    use_gemm_convs(by_hand, cfg.gemm_conv_side)  # what the Trainer does on the CPU
    try:
        state = trainer.run()
    finally:
        trainer.close()
    assert state.epoch == 2 and len(calls) == 2 * 3

    optimizer, scheduler = build_optimizer(by_hand, cfg.lr, cfg.momentum, cfg.weight_decay, 3, cfg.warmup_epochs, cfg.lr_step)
    losses = []
    for _ in range(cfg.epochs):
        by_hand.train()
        for images, targets in loader():
            losses.append(float(train_step(by_hand, optimizer, scheduler, images, targets)))
    assert all(np.isfinite(losses))
    assert_same_state(by_trainer, by_hand)
    assert scheduler.last_epoch == trainer.scheduler.last_epoch == 6

    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "map" not in rows[0]  # no test loader: no evaluation
    assert rows[1]["loss"] == pytest.approx(np.mean(losses[3:]), rel=1e-6)
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["batch_size"] == 4 and written["lr"] == 0.05 and written["total_epoch"] == 2 and written["img_size"] == 32


def test_train_step_is_the_reference_step() -> None:
    """BCE-with-logits mean over B x C, one SGD update, gradients cleared, schedule advanced."""
    paddle.seed(0)
    model = SPEC.build()
    model.train()
    optimizer, scheduler = build_optimizer(model, 0.1, 0.0, 0.0, iters_per_epoch=1, warmup_epochs=0, step_epochs=1)
    images = paddle.to_tensor(ArrayDataset(n=4).images)
    targets = paddle.to_tensor(ArrayDataset(n=4).targets)
    head = "classifier.multi_head.0.head.weight"
    before = model.state_dict()[head].numpy().copy()
    logits = model(images)
    expected = paddle.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    loss = train_step(model, optimizer, scheduler, images, targets)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert loss.shape == [] or loss.shape == [1]
    after = model.state_dict()[head].numpy()
    assert not np.array_equal(before, after)
    assert all(p.grad is None or not np.any(p.grad.numpy()) for p in model.parameters())
    assert scheduler.last_epoch == 1 and optimizer.get_lr() == pytest.approx(0.01)  # x0.1 after the first (only) epoch


def test_trainer_refuses_a_class_count_mismatch_and_releases_the_lock(tmp_path: Path) -> None:
    from utils.errors import UserError
    from utils.fileio import lock_run_dir

    model = SPEC.build()
    with pytest.raises(UserError, match="3 classes but 2 class names"):
        Trainer(config(tmp_path / "bad", classes=("a", "b")), model=model, train_loader=loader())
    lock_run_dir(tmp_path / "bad").release()  # the failed Trainer did not keep the run lock
