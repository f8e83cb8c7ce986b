"""train.py's loss flags: parsing and range checks, resolution into ``TrainConfig``, and resume
(restored from config.json, refused when changed, defaults for runs that predate them)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import train
from cli.settings import resolve_train
from engine.config import TrainConfig
from engine.losses import LOSSES
from models.spec import ModelSettings
from utils.errors import UserError

LOSS_KEYS = ("loss", "asl_gamma_neg", "asl_gamma_pos", "asl_clip", "ignore_unknown")


def parse(*argv: object):
    return train.build_parser().parse_args([str(a) for a in argv])


def data_flags(demo: dict) -> list[str]:
    return ["--dataset", "demo", "--train_json", str(demo["train"]), "--test_json", str(demo["test"])]


def test_the_loss_flags_resolve_into_the_config(tiny_demo, tmp_path: Path) -> None:
    default = resolve_train(parse(*data_flags(tiny_demo), "--save_dir", tmp_path / "a"))
    assert [getattr(default, k) for k in LOSS_KEYS] == ["bce", 4.0, 0.0, 0.05, False]
    config = resolve_train(parse(*data_flags(tiny_demo), "--save_dir", tmp_path / "b", "--loss", "asl", "--asl_gamma_neg", "2",
                                 "--asl_gamma_pos", "1", "--asl_clip", "0", "--ignore_unknown"))
    assert [getattr(config, k) for k in LOSS_KEYS] == ["asl", 2.0, 1.0, 0.0, True]
    assert {k: config.to_run_config()[k] for k in LOSS_KEYS} == dict(zip(LOSS_KEYS, ["asl", 2.0, 1.0, 0.0, True]))
    assert train.build_parser()._option_string_actions["--loss"].choices == LOSSES.names()


@pytest.mark.parametrize("flags, needle", [
    (["--asl_clip", "1"], "argument --asl_clip: must be in [0, 1)"),
    (["--asl_clip", "-0.1"], "argument --asl_clip: must be in [0, 1)"),
    (["--asl_gamma_neg", "-1"], "argument --asl_gamma_neg: must be a finite number >= 0"),
    (["--asl_gamma_pos", "nan"], "argument --asl_gamma_pos: must be a finite number >= 0"),
    (["--loss", "focal"], "argument --loss: invalid choice: 'focal'"),
])
def test_bad_loss_flags_are_refused_by_the_parser(flags: list[str], needle: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*flags)
    assert exc.value.code == 2 and needle in capsys.readouterr().err


def test_asl_flags_without_the_asl_loss_are_refused(tiny_demo, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--asl_clip only apply to --loss asl but the loss is bce"):
        resolve_train(parse(*data_flags(tiny_demo), "--save_dir", tmp_path / "a", "--asl_clip", "0.1"))


def recorded_run(tiny_demo, folder: Path, **changes) -> TrainConfig:
    """A run folder with the config.json train.py writes (ASL with masking unless changed)."""
    names = tuple(tiny_demo["classes"].read_text().split())
    config = TrainConfig(model=ModelSettings("resnet18", len(names), img_size=64), dataset="demo",
                         train_json=str(tiny_demo["train"]), test_json=str(tiny_demo["test"]), classes=names,
                         save_dir=str(folder), epochs=1, lr_step=4, loss="asl",
                         asl_gamma_neg=3.0, asl_gamma_pos=1.0, asl_clip=0.1, ignore_unknown=True)
    config = dataclasses.replace(config, **changes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config.to_run_config()))
    return config


def test_resume_restores_the_loss_and_refuses_changing_it(tiny_demo, tmp_path: Path) -> None:
    run = recorded_run(tiny_demo, tmp_path / "run")
    resumed = resolve_train(parse("--resume", tmp_path / "run", "--total_epoch", 2, "--loss", "asl", "--asl_clip", "0.1"))
    assert resumed == dataclasses.replace(run, epochs=2, resume=str(tmp_path / "run"))
    for flags, needle in [
        (["--loss", "bce"], "--loss bce was given but the run has --loss asl"),
        (["--asl_gamma_neg", "4"], "--asl_gamma_neg 4.0 was given but the run has --asl_gamma_neg 3.0"),
        (["--asl_clip", "0.05"], "--asl_clip 0.05 was given but the run has --asl_clip 0.1"),
    ]:
        with pytest.raises(UserError) as exc:
            resolve_train(parse("--resume", tmp_path / "run", *flags))
        assert needle in str(exc.value) and "trained with that loss" in str(exc.value), str(exc.value)
    recorded_run(tiny_demo, tmp_path / "plain", loss="bce", ignore_unknown=False)
    with pytest.raises(UserError, match="--ignore_unknown was given but the run has no --ignore_unknown"):
        resolve_train(parse("--resume", tmp_path / "plain", "--ignore_unknown"))


def test_a_run_from_before_the_loss_flags_resumes_with_the_reference_loss(tiny_demo, tmp_path: Path) -> None:
    recorded_run(tiny_demo, tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k not in LOSS_KEYS}))
    config = resolve_train(parse("--resume", tmp_path / "old"))
    assert [getattr(config, k) for k in LOSS_KEYS] == ["bce", 4.0, 0.0, 0.05, False]
    with pytest.raises(UserError, match="--loss asl was given but the run has --loss bce"):
        resolve_train(parse("--resume", tmp_path / "old", "--loss", "asl"))


@pytest.mark.parametrize("key, value, needle", [
    ("loss", "focal", '"loss" not one of bce, asl'),
    ("asl_clip", 1.5, '"asl_clip" must be in [0, 1)'),
    ("asl_gamma_neg", "4", '"asl_gamma_neg" not a number'),
    ("ignore_unknown", 1, '"ignore_unknown" not true/false'),
])
def test_a_bad_recorded_loss_setting_is_named(tiny_demo, tmp_path: Path, key: str, value, needle: str) -> None:
    recorded_run(tiny_demo, tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(UserError) as exc:
        resolve_train(parse("--resume", tmp_path / "run"))
    assert needle in str(exc.value) and str(path) in str(exc.value)
