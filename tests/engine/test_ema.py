"""``engine.ema.ModelEMA`` and ``--ema`` in the Trainer, the checkpoints and the settings.

The update is checked against a NumPy statement of the formula; evaluation with the EMA must
leave the trained weights bit for bit as they were; a run interrupted mid-epoch and resumed
must end with the same model and EMA weights as an uninterrupted one; best.pdparams holds
the EMA weights. The Trainer is given its parts (a ResNet-18 at 32 px on fixed arrays).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import numpy as np
import paddle
import pytest

from engine import checkpoint as ckpt
from engine.config import TrainConfig
from engine.ema import ModelEMA, ema_decay_at
from engine.trainer import Trainer, TrainingInterrupted, build_optimizer, train_step
from models.spec import ModelSettings
from utils.errors import UserError

CLASSES = ("a", "b", "c")
SPEC = ModelSettings("resnet18", len(CLASSES), img_size=32)


class ArrayDataset(paddle.io.Dataset):
    """``n`` fixed random images [3, 32, 32] with 0/1 targets [3] (every class positive somewhere)."""

    def __init__(self, n: int = 12, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.images = rng.standard_normal((n, 3, 32, 32)).astype("float32")
        self.targets = (rng.random((n, len(CLASSES))) < 0.4).astype("float32")
        self.targets[np.arange(len(CLASSES)) % n, np.arange(len(CLASSES))] = 1.0

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[i], self.targets[i]

    def __len__(self) -> int:
        return len(self.images)


def loader(seed: int = 0) -> paddle.io.DataLoader:
    return paddle.io.DataLoader(ArrayDataset(seed=seed), batch_size=4, shuffle=False)


def config(save_dir: Path, **kw) -> TrainConfig:
    settings = dict(model=SPEC, dataset="custom", train_json="unused.json", test_json="unused.json", classes=CLASSES,
                    save_dir=str(save_dir), epochs=2, batch_size=4, lr=0.05, warmup_epochs=0.5, lr_step=1, print_freq=0)
    return TrainConfig(**{**settings, **kw})


def numpy_state(state: dict) -> dict[str, np.ndarray]:
    return {k: np.array(v.numpy() if hasattr(v, "numpy") else v) for k, v in state.items()}


def saved(path: Path) -> dict[str, np.ndarray]:
    return numpy_state(paddle.load(str(path), return_numpy=True))


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def trained_model(steps: int, seed: int = 3) -> tuple[paddle.nn.Layer, paddle.optimizer.Optimizer, list]:
    """A model in train mode, its optimizer and the batches of ``steps`` steps (not yet taken)."""
    paddle.seed(seed)
    model = SPEC.build()
    model.train()
    optimizer, scheduler = build_optimizer(model, 0.05, 0.9, 1e-4, iters_per_epoch=3, warmup_epochs=0, step_epochs=10)
    batches = list(loader())[:steps]
    return model, (optimizer, scheduler), batches


# --------------------------------------------------------------------------- the update
def test_decay_warm_up() -> None:
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 8) == pytest.approx(0.5)
    assert ema_decay_at(0.999, 80) == pytest.approx(0.9)
    assert ema_decay_at(0.999, 10**6) == 0.999
    assert ema_decay_at(0.2, 2) == 0.2  # (1 + 2) / 12 = 0.25 > 0.2: the configured decay caps it


@pytest.mark.parametrize("decay", [0.2, 0.9])
def test_update_follows_the_formula_for_parameters_and_bn_buffers(decay: float) -> None:
    """shadow = d_t * shadow + (1 - d_t) * value after every step, d_t = min(decay, (1 + t) / (10 + t)):
    with decay 0.2 the cap applies from the third update on, with 0.9 only the warm-up does."""
    model, (optimizer, scheduler), batches = trained_model(steps=3)
    ema = ModelEMA(model, decay)
    expected = {k: v.astype(np.float64) for k, v in numpy_state(model.state_dict()).items()}
    bn_keys = [k for k in expected if k.endswith(("._mean", "._variance"))]
    assert bn_keys and all(ema.shadow[k].dtype == paddle.float32 for k in expected)
    for t, (images, targets) in enumerate(batches * 2):  # 6 updates
        train_step(model, optimizer, scheduler, images, targets)
        ema.update(model)
        d = min(decay, (1 + t) / (10 + t))
        values = numpy_state(model.state_dict())
        for key, value in values.items():
            expected[key] = d * expected[key] + (1 - d) * value.astype(np.float64)
        assert ema.updates == t + 1
        got = numpy_state(ema.shadow)
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=2e-6, atol=1e-7, err_msg=f"update {t + 1}: {key}")
    start = numpy_state(SPEC.build().state_dict())
    assert any(not np.allclose(values[k], start[k]) for k in bn_keys)  # the BN statistics did move
    assert any(not np.allclose(got[k], values[k]) for k in expected)  # and the average lags behind


def test_unchanged_entries_keep_their_exact_value() -> None:
    """A weight that does not move (frozen) stays bit-identical in the average."""
    model, _, _ = trained_model(steps=0)
    ema = ModelEMA(model, 0.999)
    for _ in range(5):
        ema.update(model)
    assert_same(numpy_state(ema.shadow), numpy_state(model.state_dict()))


def test_bad_decay_and_another_model_are_refused() -> None:
    model, _, _ = trained_model(steps=0)
    for bad in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError, match="decay"):
            ModelEMA(model, bad)
    ema = ModelEMA(model, 0.9)
    with pytest.raises(ValueError, match="does not match"):
        ema.update(paddle.nn.Linear(2, 2))


# --------------------------------------------------------------------------- evaluation with the EMA
def test_applied_to_swaps_the_weights_and_restores_them_exactly() -> None:
    model, (optimizer, scheduler), batches = trained_model(steps=3)
    ema = ModelEMA(model, 0.9)
    for images, targets in batches:
        train_step(model, optimizer, scheduler, images, targets)
        ema.update(model)
    before = numpy_state(model.state_dict())
    tensors = {k: id(v) for k, v in model.state_dict().items()}
    shadow = numpy_state(ema.shadow)
    assert any(not np.array_equal(before[k], shadow[k]) for k in before)
    x = paddle.to_tensor(ArrayDataset(n=2).images)
    model.eval()
    with ema.applied_to(model) as swapped:
        assert swapped is model
        assert_same(numpy_state(model.state_dict()), shadow)
        ema_logits = model(x).numpy()
    assert_same(numpy_state(model.state_dict()), before)
    assert {k: id(v) for k, v in model.state_dict().items()} == tensors  # the optimizer's tensors, not new ones
    with pytest.raises(RuntimeError, match="inside"):
        with ema.applied_to(model):
            raise RuntimeError("inside")
    assert_same(numpy_state(model.state_dict()), before)
    reference = SPEC.build()  # the EMA weights loaded the ordinary way give the same outputs
    reference.set_state_dict(ema.state_dict()["shadow"])
    reference.eval()
    np.testing.assert_array_equal(reference(x).numpy(), ema_logits)
    model.train()  # training goes on from the restored weights with the same optimizer
    train_step(model, optimizer, scheduler, *batches[0])


def test_state_dict_round_trip_is_exact_and_checked() -> None:
    model, (optimizer, scheduler), batches = trained_model(steps=2)
    ema = ModelEMA(model, 0.9)
    for images, targets in batches:
        train_step(model, optimizer, scheduler, images, targets)
        ema.update(model)
    state = ema.state_dict()
    assert state["decay"] == 0.9 and state["updates"] == 2
    other = ModelEMA(SPEC.build(), 0.9)
    other.set_state_dict({"updates": state["updates"], "shadow": numpy_state(state["shadow"])})  # as arrays, too
    assert other.updates == 2
    assert_same(numpy_state(other.shadow), numpy_state(ema.shadow))
    kept = numpy_state(other.shadow)
    broken = dict(state["shadow"])
    broken.pop(next(iter(broken)))
    with pytest.raises(ValueError, match="missing"):
        other.set_state_dict({"updates": 5, "shadow": broken})
    wrong = {k: (paddle.zeros([7]) if i == 3 else v) for i, (k, v) in enumerate(state["shadow"].items())}
    with pytest.raises(ValueError, match="shape"):
        other.set_state_dict({"updates": 5, "shadow": wrong})
    with pytest.raises(ValueError, match="integer"):
        other.set_state_dict({"updates": 1.5, "shadow": state["shadow"]})
    assert other.updates == 2
    assert_same(numpy_state(other.shadow), kept)  # a refused state changes nothing


# --------------------------------------------------------------------------- checkpoints
class Killed(BaseException):
    """Stands for SIGKILL: raised by every file-system change from the N-th one on."""


def _kill_from(monkeypatch, at: int | None) -> list[int]:
    """Make os.replace/link/unlink 'die' from call number ``at`` on; returns the call counter."""
    calls = [0]
    for name in ("replace", "link", "unlink"):
        real = getattr(os, name)

        def call(*args, _real=real, **kwargs):
            if at is not None and calls[0] >= at:
                raise Killed
            calls[0] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, call)
    return calls


def test_a_kill_at_any_step_of_a_save_keeps_the_ema_file_with_its_set(tmp_path: Path, monkeypatch) -> None:
    """The EMA file is part of the set: after a kill at any step, the set resumed from has the
    weights and the EMA weights of one and the same save."""
    def save(folder: Path, seed: int) -> None:
        paddle.seed(seed)
        model = paddle.nn.Linear(4, 3)
        ema = {k: v * 2 for k, v in model.state_dict().items()}
        ckpt.save_checkpoint(folder, "last", model, paddle.optimizer.Momentum(parameters=model.parameters()),
                             {"epoch": seed}, extra_files={ckpt.EMA_SUFFIX: ema})

    with monkeypatch.context() as m:
        save(tmp_path / "dry", 1)
        counter = _kill_from(m, None)
        save(tmp_path / "dry", 2)
        steps = counter[0]
    chosen = []
    for at in range(steps + 1):
        folder = tmp_path / f"kill{at}"
        save(folder, 1)
        with monkeypatch.context() as m:
            _kill_from(m, at)
            try:
                save(folder, 2)
            except Killed:
                pass
        stem = ckpt.find_resume_checkpoint(folder)
        params, _, states = ckpt.load_checkpoint(stem)
        ema = ckpt.load_checkpoint_file(stem, ckpt.EMA_SUFFIX)
        assert_same({k: v * 2 for k, v in numpy_state(params).items()}, numpy_state(ema))
        chosen.append(int(states["epoch"]))
        save(folder, 3)
        assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".tmp")) == [
            "last.ema.pdparams", "last.manifest.json", "last.pdopt", "last.pdparams", "last.pdstates"]
    assert chosen[0] == 1 and chosen[-1] == 2 and 1 in chosen[1:-1]


def test_a_changed_ema_file_is_detected_and_a_set_without_it_reads_none(tmp_path: Path) -> None:
    model = paddle.nn.Linear(4, 3)
    optimizer = paddle.optimizer.Momentum(parameters=model.parameters())
    ckpt.save_checkpoint(tmp_path, "last", model, optimizer, {"epoch": 1}, extra_files={ckpt.EMA_SUFFIX: model.state_dict()})
    manifest = json.loads((tmp_path / "last.manifest.json").read_text())
    assert set(manifest["files"]) == {".pdparams", ".pdopt", ".pdstates", ".ema.pdparams"}
    assert ckpt.find_resume_checkpoint(tmp_path / "last.ema.pdparams") == tmp_path / "last"  # its file names the set
    ckpt.save_checkpoint(tmp_path, "last", model, optimizer, {"epoch": 2})  # a save without it drops the old file
    assert not (tmp_path / "last.ema.pdparams").exists()
    assert ckpt.load_checkpoint_file(tmp_path / "last", ckpt.EMA_SUFFIX) is None
    ckpt.save_checkpoint(tmp_path, "last", model, optimizer, {"epoch": 3}, extra_files={ckpt.EMA_SUFFIX: model.state_dict()})
    path = tmp_path / "last.ema.pdparams"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its SHA-256"):
        ckpt.find_resume_checkpoint(tmp_path)
    with pytest.raises(UserError, match="does not match its size and SHA-256"):
        ckpt.load_checkpoint_file(tmp_path / "last", ckpt.EMA_SUFFIX)
    with pytest.raises(ValueError, match="unknown checkpoint files"):
        ckpt.save_checkpoint(tmp_path, "last", model, optimizer, {}, extra_files={".other": {}})


# --------------------------------------------------------------------------- the Trainer
def run_trainer(cfg: TrainConfig, interrupt_at: int | None = None, seed: int = 3) -> Trainer:
    """Build and run a Trainer (a fresh model from ``seed``); with ``interrupt_at`` a SIGINT arrives
    during step number ``interrupt_at`` of this process and TrainingInterrupted is expected.

    Parameters and optimizer accumulators get the names of a new process (the optimizer state
    of a checkpoint refers to them), as train.py would give them.
    """
    paddle.seed(seed)
    with paddle.utils.unique_name.guard():
        trainer = Trainer(cfg, model=SPEC.build(), train_loader=loader(), test_loader=loader(seed=1))
        if interrupt_at is not None:
            real_step, calls = trainer._step, []

            def step(images, targets):
                calls.append(1)
                if len(calls) == interrupt_at:
                    os.kill(os.getpid(), signal.SIGINT)  # handled as Ctrl-C: save interrupted.* after this step
                return real_step(images, targets)

            trainer._step = step
        try:
            if interrupt_at is None:
                trainer.run()
            else:
                with pytest.raises(TrainingInterrupted):
                    trainer.run()
        finally:
            trainer.close()
    return trainer


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Trainer]:
    """A 2-epoch run with --ema 0.9, evaluated after each epoch (3 steps per epoch)."""
    save = tmp_path_factory.mktemp("ema") / "whole"
    return save, run_trainer(config(save, ema=0.9))


def test_ema_leaves_training_unchanged_and_off_writes_nothing_of_it(uninterrupted, tmp_path: Path) -> None:
    """With --ema the trained weights are those of the reference run without it, bit for bit (the
    evaluations with the EMA weights restore them exactly); without it no EMA file or key appears."""
    save, trainer = uninterrupted
    plain = tmp_path / "plain"
    run_trainer(config(plain))
    assert_same(saved(save / "last.pdparams"), saved(plain / "last.pdparams"))
    assert_same(numpy_state(trainer.model.state_dict()), saved(plain / "last.pdparams"))
    assert not list(plain.glob("*.ema.*"))
    assert "ema" not in json.loads((plain / "best.json").read_text())
    assert "ema" not in paddle.load(str(plain / "last.pdstates"), return_numpy=True)
    assert json.loads((plain / "config.json").read_text())["ema"] is None
    assert json.loads((save / "config.json").read_text())["ema"] == 0.9


def test_checkpoints_hold_the_ema_and_best_holds_its_weights(uninterrupted) -> None:
    from engine.scoring import predict_scores
    from evaluation.metrics import evaluate

    save, trainer = uninterrupted
    ema_weights = saved(save / "last.ema.pdparams")
    assert_same(ema_weights, numpy_state(trainer.ema.shadow))
    assert trainer.ema.updates == 6
    states = paddle.load(str(save / "last.pdstates"), return_numpy=True)
    assert states["ema"] == {"decay": 0.9, "updates": 6}
    manifest = json.loads((save / "last.manifest.json").read_text())
    assert ".ema.pdparams" in manifest["files"]
    assert any(not np.array_equal(ema_weights[k], v) for k, v in saved(save / "last.pdparams").items())
    best = json.loads((save / "best.json").read_text())
    assert best["ema"] == 0.9
    rows = [json.loads(line) for line in (save / "metrics.jsonl").read_text().splitlines()]
    assert best["map"] == max(r["map"] for r in rows)
    model = SPEC.build()  # best.pdparams loads like any weights and gives the mAP recorded for it
    model.set_state_dict(paddle.load(str(save / "best.pdparams")))
    scores = predict_scores(model, loader(seed=1))
    assert trainer.policy == "binary"  # custom data with 0/1 test labels: every 0 is a negative
    assert evaluate(scores, ArrayDataset(seed=1).targets, policy=trainer.policy).map == pytest.approx(best["map"], abs=1e-9)
    assert 0 < best["map"] < 1
    if best["epoch"] == 2:
        assert_same(saved(save / "best.pdparams"), ema_weights)


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(uninterrupted, tmp_path: Path) -> None:
    """SIGINT at step 5 (the second of epoch 2), resume: the same model and EMA weights and
    update count as the uninterrupted run, bit for bit; best.pdparams was the EMA of epoch 1."""
    save = tmp_path / "resumed"
    first = run_trainer(config(save, ema=0.9), interrupt_at=5)
    assert first.ema.updates == 5
    assert_same(saved(save / "best.pdparams"), saved(save / "last.ema.pdparams"))  # epoch 1: best = the EMA then
    assert json.loads((save / "best.json").read_text())["ema"] == 0.9
    assert_same(saved(save / "interrupted.ema.pdparams"), numpy_state(first.ema.shadow))
    assert paddle.load(str(save / "interrupted.pdstates"), return_numpy=True)["ema"]["updates"] == 5

    second = run_trainer(config(save, ema=0.9, resume=str(save)), seed=99)  # other initial weights: all come from the checkpoint
    whole, reference = uninterrupted
    assert second.ema.updates == reference.ema.updates == 6
    for name in ("last.pdparams", "last.ema.pdparams", "best.pdparams"):
        assert_same(saved(save / name), saved(whole / name))
    assert_same(numpy_state(second.ema.shadow), numpy_state(reference.ema.shadow))
    assert not list(save.glob("interrupted*"))
    rows = [json.loads(line) for line in (save / "metrics.jsonl").read_text().splitlines()]
    whole_rows = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["map"] for r in rows] == [r["map"] for r in whole_rows]


def test_resume_refuses_a_checkpoint_without_the_ema_or_with_another_decay(tmp_path: Path) -> None:
    from utils.fileio import lock_run_dir

    plain = tmp_path / "plain"
    run_trainer(config(plain, epochs=1))
    with pytest.raises(UserError, match=r"--ema 0\.9\) but checkpoint .*last\.\* has no EMA weights \(last\.ema\.pdparams\)"):
        Trainer(config(plain, ema=0.9, resume=str(plain)), model=SPEC.build(), train_loader=loader())
    lock_run_dir(plain).release()  # the refused Trainer released the run lock
    averaged = tmp_path / "averaged"
    run_trainer(config(averaged, epochs=1, ema=0.9))
    with pytest.raises(UserError, match="--ema 0.9, not --ema 0.5"):
        Trainer(config(averaged, ema=0.5, resume=str(averaged)), model=SPEC.build(), train_loader=loader())
    trainer = Trainer(config(averaged, resume=str(averaged)), model=SPEC.build(), train_loader=loader())  # API: no EMA
    trainer.close()
    assert trainer.ema is None


# --------------------------------------------------------------------------- settings
def _parse(*argv: str) -> argparse.Namespace:
    import train

    return train.build_parser().parse_args(list(argv))


def _split_files(tmp_path: Path) -> list[str]:
    """Flags of a run on two (never read) split files with their classes.txt."""
    for name in ("train.json", "test.json"):
        (tmp_path / name).write_text("[]")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return ["--dataset", "custom", "--train_json", str(tmp_path / "train.json"), "--test_json", str(tmp_path / "test.json"),
            "--model", "resnet18"]


def _run_folder(tmp_path: Path, flags: list[str], name: str, drop_ema_key: bool = False) -> Path:
    """A run folder with the config.json that train.py would write for ``flags``."""
    from cli.settings import resolve_train

    folder = tmp_path / name
    folder.mkdir()
    cfg = resolve_train(_parse(*flags, "--save_dir", str(folder)))
    run_config = cfg.to_run_config()
    if drop_ema_key:
        run_config.pop("ema")
    (folder / "config.json").write_text(json.dumps(run_config))
    return folder


def test_settings_resolve_record_and_restore_ema(tmp_path: Path) -> None:
    from cli.settings import resolve_train

    flags = _split_files(tmp_path)
    assert resolve_train(_parse(*flags)).ema is None  # off by default
    assert resolve_train(_parse(*flags, "--ema", "0.999")).ema == 0.999
    averaged = _run_folder(tmp_path, [*flags, "--ema", "0.99"], "averaged")
    assert json.loads((averaged / "config.json").read_text())["ema"] == 0.99
    assert resolve_train(_parse("--resume", str(averaged))).ema == 0.99  # restored
    assert resolve_train(_parse("--resume", str(averaged), "--ema", "0.99")).ema == 0.99  # the same value is fine
    with pytest.raises(UserError, match=r"--ema 0.9 was given but the run has --ema 0.99 \(the checkpoint's weight average"):
        resolve_train(_parse("--resume", str(averaged), "--ema", "0.9"))
    plain = _run_folder(tmp_path, flags, "plain")
    assert resolve_train(_parse("--resume", str(plain))).ema is None
    with pytest.raises(UserError, match=r"--ema 0.9 was given but the run has no --ema"):
        resolve_train(_parse("--resume", str(plain), "--ema", "0.9"))
    older = _run_folder(tmp_path, flags, "older", drop_ema_key=True)  # a config.json from before --ema
    assert resolve_train(_parse("--resume", str(older))).ema is None
    with pytest.raises(UserError, match=r"the run has no --ema"):
        resolve_train(_parse("--resume", str(older), "--ema", "0.9"))
    broken = _run_folder(tmp_path, [*flags, "--ema", "0.99"], "broken")
    run_config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**run_config, "ema": 1.5}))
    with pytest.raises(UserError, match=r'"ema" must be between 0 and 1'):
        resolve_train(_parse("--resume", str(broken)))


@pytest.mark.parametrize("value", ["0", "1", "-0.5", "1.5", "nan", "inf", "abc"])
def test_bad_ema_values_are_refused_by_the_parser(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse("--ema", value)
    assert exit_info.value.code == 2
    assert "argument --ema: must be" in capsys.readouterr().err
