"""``cli.settings``: flags + a run's config.json + defaults -> frozen settings, once; resume restores every setting."""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

import export_model
import infer
import predict
import train
import val
from cli.settings import (RESUME_OVERRIDABLE, RESUMED_KEYS, resolve_eval, resolve_export, resolve_infer, resolve_predict,
                          resolve_train)
from engine.config import TrainConfig
from models.spec import DEFAULT_IMG_SIZE, ModelSettings
from utils.errors import UserError


def parse(script, *argv: str):
    return script.build_parser().parse_args([str(a) for a in argv])


def data_flags(demo: dict) -> list[str]:
    return ["--dataset", "demo", "--train_json", str(demo["train"]), "--test_json", str(demo["test"])]


# --------------------------------------------------------------------------- train.py
def test_fresh_run_takes_the_defaults_and_leaves_the_namespace_alone(tiny_demo, tmp_path: Path) -> None:
    args = parse(train, *data_flags(tiny_demo), "--save_dir", tmp_path / "run")
    before = copy.deepcopy(vars(args))
    config = resolve_train(args)
    assert vars(args) == before  # resolved once, nothing written back
    names = tiny_demo["classes"].read_text().split()
    assert config.model == ModelSettings("resnet101", len(names), img_size=DEFAULT_IMG_SIZE)
    assert config.classes == tuple(names) and config.save_dir == str(tmp_path / "run")
    defaults = TrainConfig(model=config.model, dataset="demo", train_json="", test_json="", classes=(), save_dir="")
    for field in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "warmup_epochs", "seed", "eval_interval",
                  "threshold", "print_freq", "num_workers", "shared_memory", "freeze_bn", "amp", "device"):
        assert getattr(config, field) == getattr(defaults, field), field
    assert config.lr_step == 4  # the demo dataset's decay step, resolved
    assert resolve_train(parse(train, *data_flags(tiny_demo))).save_dir == "output/train"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]


def recorded_run(tiny_demo, folder: Path, **changes) -> TrainConfig:
    """A run folder whose config.json train.py would have written for a non-default recipe."""
    names = tuple(tiny_demo["classes"].read_text().split())
    config = TrainConfig(
        model=ModelSettings("resnet50", len(names), num_heads=2, lam=0.3, attention="se", attention_stages=(3, 4), img_size=64),
        dataset="demo", train_json=str(tiny_demo["train"]), test_json=str(tiny_demo["test"]), classes=names,
        save_dir=str(folder), epochs=1, batch_size=4, lr=0.02, momentum=0.8, weight_decay=5e-4, warmup_epochs=0.5, lr_step=1,
        seed=7, eval_interval=1, threshold=0.4, print_freq=3, num_workers=0, shared_memory=False, freeze_bn=True, amp=False,
        device="cpu", pretrained="imagenet",
    )
    config = dataclasses.replace(config, **changes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**config.to_run_config(), "world_size": 1, "num_classes": len(names)}))
    return config


def test_resume_restores_every_setting(tiny_demo, tmp_path: Path) -> None:
    run = recorded_run(tiny_demo, tmp_path / "run")
    resumed = resolve_train(parse(train, "--resume", tmp_path / "run", "--total_epoch", 3, "--print_freq", 0))
    assert resumed == dataclasses.replace(run, epochs=3, print_freq=0, resume=str(tmp_path / "run"))
    # a checkpoint file names its folder too; the run's own values may be given again
    (tmp_path / "run" / "last.pdparams").write_bytes(b"")
    again = resolve_train(parse(train, "--resume", tmp_path / "run" / "last.pdparams", "--batch_size", 4, "--lr", "0.02",
                                "--model", "ResNet50", "--attention", "SE", "--save_dir", f"{tmp_path / 'run'}/"))
    assert dataclasses.replace(again, resume=None) == dataclasses.replace(run, resume=None)


def test_every_train_flag_is_restored_or_per_invocation() -> None:
    parser = train.build_parser()
    flags = {a.dest for a in parser._actions} - {"help"}
    assert flags - set(RESUMED_KEYS) == {"resume", "save_dir", "max_image_pixels"}
    assert set(RESUME_OVERRIDABLE) <= set(RESUMED_KEYS)
    assert set(RESUMED_KEYS) <= set(TrainConfig(model=ModelSettings("resnet18", 1), dataset="demo", train_json="",
                                                    test_json="", classes=("a",), save_dir="").to_run_config())


@pytest.mark.parametrize("flags, needles", [
    (["--batch_size", "16"], ["--batch_size 16 was given but the run has --batch_size 4"]),
    (["--lr", "0.01", "--warmup_epoch", "2"], ["--lr 0.01 was given but the run has --lr 0.02",
                                                 "--warmup_epoch 2.0 was given but the run has --warmup_epoch 0.5"]),
    (["--img_size", "128"], ["--img_size 128 was given but the run has --img_size 64", "weights belong to that model"]),
    (["--attention", "eca"], ["--attention eca was given but the run has --attention se"]),
    (["--seed", "0"], ["--seed 0 was given but the run has --seed 7"]),
    (["--no-shared_memory", "--pretrained", "other.pdparams"], ["--pretrained other.pdparams was given"]),
    (["--freeze_bn", "--amp"], ["--amp was given but the run has no --amp"]),
])
def test_resume_refuses_other_values_with_the_reason(tiny_demo, tmp_path: Path, flags: list[str], needles: list[str]) -> None:
    recorded_run(tiny_demo, tmp_path / "run")
    with pytest.raises(UserError) as exc:
        resolve_train(parse(train, "--resume", tmp_path / "run", *flags))
    for needle in needles:
        assert needle in str(exc.value), str(exc.value)
    assert "only --total_epoch, --eval_interval" in str(exc.value) and "another --save_dir" in str(exc.value)


def test_resume_into_another_save_dir_is_refused(tiny_demo, tmp_path: Path) -> None:
    recorded_run(tiny_demo, tmp_path / "run")
    with pytest.raises(UserError, match="a resumed run continues in its own folder"):
        resolve_train(parse(train, "--resume", tmp_path / "run", "--save_dir", tmp_path / "other"))
    with pytest.raises(UserError, match="no such folder or checkpoint file"):
        resolve_train(parse(train, "--resume", tmp_path / "nothing"))


@pytest.mark.parametrize("key, value, needle", [
    ("batch_size", 0, '"batch_size" must be a positive integer, got 0'),
    ("lr", "fast", '"lr" not a number'),
    ("freeze_bn", "yes", '"freeze_bn" not true/false'),
    ("num_heads", "4", '"num_heads" must be a positive integer'),
    ("attention_stages", [5], '"attention_stages"'),
])
def test_a_bad_config_value_is_named(tiny_demo, tmp_path: Path, key: str, value, needle: str) -> None:
    recorded_run(tiny_demo, tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(UserError) as exc:
        resolve_train(parse(train, "--resume", tmp_path / "run"))
    assert needle in str(exc.value) and str(path) in str(exc.value)


def test_an_older_config_without_some_keys_falls_back_to_the_defaults(tiny_demo, tmp_path: Path, caplog) -> None:
    recorded_run(tiny_demo, tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("momentum", "device")}
    path.write_text(json.dumps({**old, "lr_step": None}))  # older runs recorded an unset --lr_step as null
    config = resolve_train(parse(train, "--resume", tmp_path / "run"))
    assert config.momentum == TrainConfig.momentum and config.device == "auto" and config.lr_step == 4
    assert config.batch_size == 4 and config.lr == 0.02
    path.unlink()  # no config.json at all: the flags and defaults, with a warning
    bare = resolve_train(parse(train, "--resume", tmp_path / "run", *data_flags(tiny_demo)))
    assert bare.batch_size == TrainConfig.batch_size and bare.save_dir == str(tmp_path / "run")


# --------------------------------------------------------------------------- val.py, predict.py, export_model.py
@pytest.fixture()
def weights_run(tmp_path: Path) -> Path:
    """A training-run folder: empty weights file (never read here), config.json and classes.txt."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pdparams").write_bytes(b"")
    (run / "classes.txt").write_text("a\nb\nc\n")
    (run / "config.json").write_text(json.dumps({"model": "resnet50", "num_heads": 2, "lam": 0.2, "img_size": 64,
                                                 "attention": "ge", "attention_stages": [3, 4], "dataset": "wider"}))
    return run / "best.pdparams"


def test_eval_predict_export_take_unset_flags_from_the_run(weights_run: Path, tiny_demo) -> None:
    want = ModelSettings("resnet50", 3, num_heads=2, lam=0.2, attention="ge", attention_stages=(3, 4), img_size=64)
    ev = resolve_eval(parse(val, "--load_from", weights_run, "--test_json", tiny_demo["test"]))
    assert ev.model == want and ev.class_names == ("a", "b", "c") and ev.dataset == "wider" and ev.mean == (0.5, 0.5, 0.5)
    assert (ev.batch_size, ev.threshold, ev.num_workers, ev.device) == (16, 0.5, 0, "auto")
    pr = resolve_predict(parse(predict, "--load_from", weights_run, "--img_size", 96, "--attention", "se"))
    assert pr.model == dataclasses.replace(want, img_size=96, attention="se", attention_stages=None)  # another block: its own stages
    assert (pr.batch_size, pr.threshold) == (8, 0.5)
    ex = resolve_export(parse(export_model, "--model_path", weights_run, "--threshold", "0.3"))
    assert ex.model == want and ex.weights == str(weights_run) and ex.threshold == 0.3 and ex.save_dir == "./inference"
    assert ex.mean == (0.5, 0.5, 0.5) and ex.opset == 13 and not ex.onnx


def test_settings_errors_are_user_errors(weights_run: Path, tiny_demo) -> None:
    with pytest.raises(UserError, match="--num_cls 5 but .*classes.txt lists 3 classes"):
        resolve_predict(parse(predict, "--load_from", weights_run, "--num_cls", "5"))
    with pytest.raises(UserError, match="unknown model 'resnet7'; choose one of: resnet18, resnet34"):
        resolve_predict(parse(predict, "--load_from", weights_run, "--model", "resnet7"))
    with pytest.raises(UserError, match="--test_json .*nope.json not found"):
        resolve_eval(parse(val, "--load_from", weights_run, "--test_json", tiny_demo["root"] / "nope.json"))
    with pytest.raises(UserError, match="--model_path and --random_init exclude each other"):
        resolve_export(parse(export_model, "--model_path", weights_run, "--random_init"))


def test_random_init_export_uses_the_defaults() -> None:
    config = resolve_export(parse(export_model, "--random_init", "--num_cls", "20"))
    assert config.model == ModelSettings("resnet101", 20, img_size=DEFAULT_IMG_SIZE)
    assert config.dataset == "voc07" and config.weights is None and len(config.class_names) == 20


def test_infer_settings_come_from_the_flags() -> None:
    from deploy.predictor import InferConfig, RuntimeOptions

    config = resolve_infer(parse(infer, "--input_file", "x.jpg", "--batch_size", "3", "--cpu_threads", "2"))
    assert config == InferConfig(input_file="x.jpg", batch_size=3, runtime=RuntimeOptions(cpu_threads=2, max_batch_size=3))


# --------------------------------------------------------------------------- one home per default
def test_img_size_has_one_default() -> None:
    from cli.args import MODEL_DEFAULTS
    from models import build_model
    from models import model as model_module

    assert MODEL_DEFAULTS["img_size"] == DEFAULT_IMG_SIZE == model_module.DEFAULT_IMG_SIZE == 448
    shapes = {k: v.shape for k, v in build_model("resnet18", 3, attention="ge").state_dict().items()}
    at_448 = {k: v.shape for k, v in build_model("resnet18", 3, attention="ge", img_size=448).state_dict().items()}
    at_224 = {k: v.shape for k, v in build_model("resnet18", 3, attention="ge", img_size=224).state_dict().items()}
    assert shapes == at_448 != at_224  # GE's kernels follow the one default


def test_dataset_default_is_one_constant() -> None:
    import re

    from datasets.config import DEFAULT_DATASET
    from tests.conftest import REPO_ROOT

    assert DEFAULT_DATASET == "voc07"
    files = [*REPO_ROOT.glob("cli/*.py"), *REPO_ROOT.glob("engine/*.py"), *REPO_ROOT.glob("deploy/*.py"),
             *(REPO_ROOT / f"{s}.py" for s in ("train", "val", "predict", "infer", "export_model"))]
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            assert not re.search(r"""["']voc07["']""", code), f"{path.name}:{number}: use datasets.config.DEFAULT_DATASET"


def test_an_unrecorded_lr_step_is_the_datasets_and_cannot_change(tiny_demo, tmp_path: Path) -> None:
    recorded_run(tiny_demo, tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "lr_step": None}))
    assert resolve_train(parse(train, "--resume", tmp_path / "run", "--lr_step", "4")).lr_step == 4  # demo's own step
    with pytest.raises(UserError, match="--lr_step 5 was given but the run has --lr_step 4"):
        resolve_train(parse(train, "--resume", tmp_path / "run", "--lr_step", "5"))
