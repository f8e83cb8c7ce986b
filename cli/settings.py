"""Typed settings of the five scripts, resolved once from flags + a training run's ``config.json`` + defaults.

Each script parses its flags (every flag that a run's config.json or a settings class can
supply defaults to None, "not given"), then calls its ``resolve_*`` once; from then on it
uses only the frozen settings, and nothing reads or changes the Namespace again. Library
code (engine/, deploy/, cli/loading.py) takes these settings or explicit arguments.

Where each settings class lives (imports go one way: cli -> engine, deploy -> models, datasets):

| settings | module | built by | used by |
| --- | --- | --- | --- |
| ``ModelSettings`` | ``models.spec`` | every ``resolve_*`` | ``ModelSettings.build()``, all below |
| ``TrainConfig`` | ``engine.config`` | ``resolve_train`` | ``engine.trainer.Trainer.from_config`` / ``train`` |
| ``ExportConfig`` | ``deploy.export`` | ``resolve_export`` | ``deploy.export.export_model`` |
| ``InferConfig`` (+ ``RuntimeOptions``) | ``deploy.predictor`` | ``resolve_infer`` | ``deploy.predictor.run_infer`` |
| ``EvalSettings``, ``PredictSettings`` | here | ``resolve_eval``, ``resolve_predict`` | val.py, predict.py |

Defaults have one home each: model defaults in ``models.spec``, the training recipe in
``TrainConfig``'s fields, ``--dataset`` in ``datasets.config.DEFAULT_DATASET`` and the
per-dataset table ``datasets.config.dataset_defaults``, the others in the settings classes
(help texts read them from there).

Resume (``resolve_train`` with ``--resume``): the run's ``config.json`` restores every
setting of train.py; the save folder is the resumed folder; flags in ``RESUME_OVERRIDABLE``
may be given with another value; any other flag given with a value different from the
run's is refused (``UserError`` naming each flag, the run's value and why).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cli.args import (DEFAULT_TRAIN_SAVE_DIR, drop_rate_float, ema_decay, finite_non_negative_float, finite_positive_float,
                      image_size,
                      model_fields, momentum_float, non_negative_int, positive_int, read_run_config, shift_float, stage_list,
                      unit_interval_float)
from cli.loading import check_weights_path
from datasets.config import DEFAULT_DATASET, dataset_defaults, resolve_classes
from deploy.export import ExportConfig, check_weights_choice
from deploy.prediction import DecisionThresholds, choose_thresholds
from deploy.predictor import InferConfig, RuntimeOptions
from engine.config import TrainConfig
from engine.losses import LOSSES
from models.spec import MODEL_NAMES, ModelSettings, canonical_attention, canonical_model
from utils.errors import UserError
from utils.logger import get_logger

log = get_logger("settings")

__all__ = [
    "DEFAULT_TRAIN_SAVE_DIR", "EvalSettings", "ExportConfig", "InferConfig", "ModelSettings", "PredictSettings",
    "RESUME_OVERRIDABLE", "TrainConfig", "check_num_classes", "model_settings", "resolve_eval", "resolve_export",
    "resolve_infer", "resolve_predict", "resolve_train",
]


# --------------------------------------------------------------------------- shared pieces
def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given on the command line: ``vars(args)`` without the None ("not given") entries."""
    return {k: v for k, v in vars(args).items() if v is not None}


def check_num_classes(num_cls: int | None, names: list[str], source: str) -> int:
    """The number of classes: ``len(names)``, checked against ``--num_cls`` when given.

    Args:
        num_cls: the ``--num_cls`` flag (None: not given).
        names: the class names found; ``source`` says where (for the message).
    Returns:
        the class count C.
    Raises:
        UserError: ``--num_cls`` differs from the number of names.
    """
    if num_cls is None:
        return len(names)
    if num_cls != len(names):
        raise UserError(f"--num_cls {num_cls} but {source} lists {len(names)} classes; drop --num_cls or fix it")
    return num_cls


def model_settings(fields: dict[str, Any], num_classes: int) -> ModelSettings:
    """``ModelSettings`` from resolved model fields (``cli.args.model_fields``) and the class count.

    Raises:
        UserError: an unknown ``--model`` (checked here, before any slow work).
    """
    name = canonical_model(str(fields["model"]))  # the reference's names (vit_B16_224) are aliases
    if name not in MODEL_NAMES:
        raise UserError(f"unknown model '{fields['model']}'; choose one of: {', '.join(MODEL_NAMES)}")
    stages = fields.get("attention_stages")
    return ModelSettings(
        name=name, num_classes=int(num_classes), num_heads=int(fields["num_heads"]), lam=float(fields["lam"]),
        attention=canonical_attention(fields.get("attention")),
        attention_stages=tuple(int(s) for s in stages) if stages else None, img_size=int(fields["img_size"]),
    )


# --------------------------------------------------------------------------- train.py
# Checks of config.json values, by flag: the same type functions as train.py's flags.
_VALUE_TYPES: dict[str, Callable[[str], Any]] = {
    "num_heads": positive_int, "lam": finite_positive_float, "num_cls": positive_int, "img_size": image_size,
    "batch_size": positive_int, "num_workers": non_negative_int, "lr": finite_positive_float, "momentum": momentum_float,
    "w_d": finite_non_negative_float, "warmup_epoch": finite_non_negative_float, "lr_step": positive_int,
    "total_epoch": positive_int, "seed": non_negative_int, "eval_interval": positive_int, "threshold": unit_interval_float,
    "print_freq": non_negative_int, "ema": ema_decay, "drop_rate": drop_rate_float, "drop_path_rate": drop_rate_float,
    "asl_gamma_neg": finite_non_negative_float, "asl_gamma_pos": finite_non_negative_float, "asl_clip": shift_float,
    "gemm_conv_side": non_negative_int,
}
_BOOL_KEYS = ("freeze_bn", "amp", "shared_memory", "ignore_unknown", "tune_thresholds", "visualdl")
_TEXT_KEYS = ("model", "attention", "dataset", "train_json", "test_json", "classes", "pretrained", "device", "loss", "val_json")
_PATH_KEYS = ("train_json", "test_json", "classes", "pretrained", "val_json")

#: train.py settings a resumed run takes from its config.json (every flag but --resume,
#: --save_dir and --max_image_pixels, which is a per-invocation safety limit).
RESUMED_KEYS: tuple[str, ...] = (
    "ema", "drop_rate", "drop_path_rate",
    "model", "num_heads", "lam", "num_cls", "attention", "attention_stages", "img_size", "dataset", "train_json", "test_json",
    "classes", "batch_size", "lr", "momentum", "w_d", "warmup_epoch", "lr_step", "total_epoch", "seed", "freeze_bn", "amp",
    "pretrained", "eval_interval", "threshold", "print_freq", "num_workers", "shared_memory", "device",
    "loss", "asl_gamma_neg", "asl_gamma_pos", "asl_clip", "ignore_unknown", "val_json", "tune_thresholds", "visualdl",
    "gemm_conv_side",
)
#: the loss flags' defaults: what a run whose config.json predates these flags trained with.
_LOSS_DEFAULTS: dict[str, Any] = {
    key: getattr(TrainConfig, key) for key in ("loss", "asl_gamma_neg", "asl_gamma_pos", "asl_clip", "ignore_unknown")
}
#: flags whose unset value (None) in the run's config.json is a setting of its own, kept on resume.
_NONE_IS_A_SETTING: tuple[str, ...] = ("ema",)
#: flags a resumed run may change: they do not alter what the checkpoint's training computes.
RESUME_OVERRIDABLE: tuple[str, ...] = (
    "total_epoch", "eval_interval", "print_freq", "num_workers", "shared_memory", "device", "threshold",
    "val_json", "tune_thresholds", "visualdl",
)
_WHY_FIXED = {
    **dict.fromkeys(("model", "num_heads", "lam", "num_cls", "attention", "attention_stages", "img_size", "drop_rate",
                     "drop_path_rate"),
                    "the checkpoint's weights belong to that model"),
    **dict.fromkeys(("dataset", "train_json", "test_json", "classes"), "the checkpoint was trained on that data and label order"),
    **dict.fromkeys(("batch_size", "lr", "momentum", "w_d", "warmup_epoch", "lr_step", "seed", "freeze_bn", "amp"),
                    "the checkpoint's optimizer state, LR schedule and data order continue that recipe exactly"),
    "pretrained": "a resumed run takes every weight from its checkpoint; --pretrained only initialises a new run",
    "ema": "the checkpoint's weight average continues over the whole run; it cannot be started, stopped or changed midway",
    **dict.fromkeys(("loss", "asl_gamma_neg", "asl_gamma_pos", "asl_clip", "ignore_unknown"),
                    "the checkpoint was trained with that loss; another loss is another recipe"),
    "gemm_conv_side": "the convolutions' float rounding is part of the run: a resumed run equals the uninterrupted one bit for bit",
}


def resume_folder(resume: str) -> Path:
    """The run folder of ``--resume``: the folder itself, or the folder of a checkpoint file/stem.

    Raises:
        UserError: nothing of that name exists.
    """
    path = Path(resume)
    if path.is_dir():
        return path
    if path.is_file() or (path.parent.is_dir() and any(path.parent.glob(f"{path.name}.*"))):
        return path.parent
    raise UserError(f"--resume {resume}: no such folder or checkpoint file; pass the --save_dir of the run to continue "
                    "(or one of its last.*/interrupted.* files)")


def _check_run_value(key: str, value: Any, path: Path) -> Any:
    """``value`` of ``key`` from ``path`` (a run's config.json), checked like the flag; UserError naming the file."""
    fix = f"repair {path} (train.py writes it) or delete it and pass the run's flags again"
    if value is None:
        return None
    try:
        if key in _VALUE_TYPES:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError("not a number")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("not finite")
            checked = _VALUE_TYPES[key](str(value))
            if isinstance(checked, int) and checked != value:
                raise ValueError("not an integer")
            return checked
        if key == "attention_stages":
            if not isinstance(value, list):
                raise ValueError("not a list")
            return stage_list(",".join(str(v) for v in value))
        if key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise ValueError("not true/false")
            return value
        if key in _TEXT_KEYS:
            if not isinstance(value, str):
                raise ValueError("not a string")
            if key == "device" and value not in ("auto", "cpu", "gpu"):
                raise ValueError("not auto, cpu or gpu")
            if key == "loss" and value not in LOSSES.names():
                raise ValueError(f"not one of {', '.join(LOSSES.names())}")
            return value
    except (ValueError, argparse.ArgumentTypeError) as exc:
        problem = str(exc).split(", got ")[0]
        raise UserError(f"{path}: \"{key}\" {problem}, got {value!r}; {fix}") from None
    return value


def _same_value(key: str, a: Any, b: Any) -> bool:
    """Whether flag value ``a`` and run value ``b`` of ``key`` mean the same setting."""
    if key == "attention":
        return canonical_attention(a) == canonical_attention(b)
    if key == "model":
        return str(a).lower() == str(b).lower()
    if key == "attention_stages":
        return list(a or []) == list(b or [])
    if key in _PATH_KEYS and a is not None and b is not None and not str(a).startswith(("http://", "https://")):
        return os.path.realpath(str(a)) == os.path.realpath(str(b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


def _flag_text(key: str, value: Any) -> str:
    """``--key value`` as a user would type it (``no --key`` for an unset option such as ``--ema``)."""
    if value is None:
        return f"no --{key}"
    if isinstance(value, bool):
        if key == "shared_memory":
            return "--shared_memory" if value else "--no-shared_memory"
        return f"--{key}" if value else f"no --{key}"
    if isinstance(value, (list, tuple)):
        return f"--{key} {','.join(map(str, value))}"
    return f"--{key} {value}"


def _restore_run(given: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Merge a resumed run's config.json under the given flags; refuse changes that are not safe.

    Returns:
        flag values: the run's for every key of ``RESUMED_KEYS`` it records, the given ones
        where allowed; logs what was restored and what was overridden.
    Raises:
        UserError: a flag outside ``RESUME_OVERRIDABLE`` given with another value than the
            run's (all such flags named at once), or a bad config.json.
    """
    path = folder / "config.json"
    if not path.is_file():
        log.warning("%s has no config.json: the run's settings cannot be restored; resuming with the flags given and the "
                    "defaults (give every flag of the original run)", folder)
        return dict(given)
    raw = read_run_config(str(folder / "last.pdparams"))  # JSON and model-field checks, errors name the file
    run = {key: _check_run_value(key, raw[key], path) for key in RESUMED_KEYS if key in raw}
    for key, default in _LOSS_DEFAULTS.items():  # runs from before the loss flags trained with the defaults
        run.setdefault(key, default)
    run.setdefault("ema", None)  # runs from before --ema had none
    if "lr_step" in run and run["lr_step"] is None:  # older runs recorded an unset --lr_step: the dataset's was used
        run["lr_step"] = dataset_defaults(run.get("dataset") or DEFAULT_DATASET).step_epochs
    values = dict(given)
    restored, overridden, conflicts = [], [], []
    for key, run_value in run.items():
        if key not in given:
            values[key] = run_value
            if run_value is not None:
                restored.append(f"{key} {','.join(map(str, run_value)) if isinstance(run_value, list) else run_value}")
            continue
        if (run_value is None and key not in _NONE_IS_A_SETTING) or _same_value(key, given[key], run_value):
            continue
        if key in RESUME_OVERRIDABLE:
            overridden.append(f"{key} {run_value} -> {given[key]}")
        else:
            conflicts.append(f"{_flag_text(key, given[key])} was given but the run has {_flag_text(key, run_value)} "
                             f"({_WHY_FIXED.get(key, 'the checkpoint continues that setting')})")
    if conflicts:
        raise UserError(
            f"--resume {folder} continues the run recorded in {path}; " + "; ".join(conflicts)
            + f". Drop those flags (a resumed run restores every setting; only --{', --'.join(RESUME_OVERRIDABLE)} "
            "may change), or start a new run in another --save_dir without --resume")
    log.info("resuming %s with the settings of %s: %s", folder, path.name, ", ".join(restored) or "(none recorded)")
    if overridden:
        log.info("changed on resume: %s", ", ".join(overridden))
    return values


def resolve_train(args: argparse.Namespace) -> TrainConfig:
    """train.py's settings: the flags given, the resumed run's config.json, then the defaults.

    Args:
        args: train.py's parsed flags (None = not given).
    Returns:
        the frozen ``TrainConfig`` (class names read, ``lr_step`` and the split paths resolved).
    Raises:
        UserError: a refused change on resume, ``--save_dir`` other than the resumed folder, a
            missing split file, no class names, ``--num_cls`` not matching them, an unknown model,
            ``--asl_*`` flags without ``--loss asl``.
    """
    given = given_flags(args)
    for key in ("max_image_pixels", "resume", "save_dir"):
        given.pop(key, None)
    resume = getattr(args, "resume", None)
    save_dir = getattr(args, "save_dir", None)
    if resume:
        folder = resume_folder(resume)
        if save_dir is not None and os.path.realpath(save_dir) != os.path.realpath(folder):
            raise UserError(f"--save_dir {save_dir} with --resume {resume}: a resumed run continues in its own folder "
                            f"{folder}; drop --save_dir (or copy {folder} to {save_dir} and resume that copy)")
        values = _restore_run(given, folder)
        save_dir = str(folder)
    else:
        values = given
        save_dir = save_dir or DEFAULT_TRAIN_SAVE_DIR

    def pick(key: str, default: Any) -> Any:
        value = values.get(key)
        return default if value is None else value

    dataset = pick("dataset", DEFAULT_DATASET)
    defaults = dataset_defaults(dataset)
    train_json, test_json = pick("train_json", defaults.train_json), pick("test_json", defaults.test_json)
    for flag, path in (("--train_json", train_json), ("--test_json", test_json)):
        if not Path(path).is_file():
            raise UserError(f"{flag} {path} not found; prepare the dataset first (see README: Preparing datasets) or pass {flag}")
    classes, source = resolve_classes(dataset, values.get("classes"), train_json)
    num_classes = check_num_classes(values.get("num_cls"), classes, source)
    tune = bool(pick("tune_thresholds", False))
    val_json = values.get("val_json")
    if tune:
        val_json = resolve_val_json(val_json, dataset, test_json, allow_test=False,
                                    test_fix="or tune afterwards with val.py --tune_thresholds --tune_on_test")
    elif val_json and not Path(val_json).is_file():
        raise UserError(f"--val_json {val_json} not found; prepare it or drop --val_json")
    visualdl = bool(pick("visualdl", False))
    if visualdl:
        from engine.visual_log import check_visualdl_available

        check_visualdl_available()  # before any training work
    loss = pick("loss", TrainConfig.loss)
    stray = [f"--{key}" for key in ("asl_gamma_neg", "asl_gamma_pos", "asl_clip") if key in given]
    if stray and loss != "asl":
        raise UserError(f"{', '.join(stray)} only apply to --loss asl but the loss is {loss}; add --loss asl or drop them")
    return TrainConfig(
        model=dataclasses.replace(model_settings(model_fields(values), num_classes), drop_rate=float(pick("drop_rate", 0.0)),
                                  drop_path_rate=float(pick("drop_path_rate", 0.0))),
        dataset=dataset, train_json=str(train_json),
        test_json=str(test_json), classes=tuple(classes), save_dir=str(save_dir),
        epochs=pick("total_epoch", TrainConfig.epochs), batch_size=pick("batch_size", TrainConfig.batch_size),
        lr=float(pick("lr", TrainConfig.lr)), momentum=float(pick("momentum", TrainConfig.momentum)),
        weight_decay=float(pick("w_d", TrainConfig.weight_decay)),
        warmup_epochs=float(pick("warmup_epoch", TrainConfig.warmup_epochs)),
        lr_step=pick("lr_step", defaults.step_epochs), seed=pick("seed", TrainConfig.seed),
        loss=loss, asl_gamma_neg=float(pick("asl_gamma_neg", TrainConfig.asl_gamma_neg)),
        asl_gamma_pos=float(pick("asl_gamma_pos", TrainConfig.asl_gamma_pos)),
        asl_clip=float(pick("asl_clip", TrainConfig.asl_clip)),
        ignore_unknown=pick("ignore_unknown", TrainConfig.ignore_unknown),
        eval_interval=pick("eval_interval", TrainConfig.eval_interval), threshold=float(pick("threshold", TrainConfig.threshold)),
        print_freq=pick("print_freq", TrainConfig.print_freq), num_workers=pick("num_workers", TrainConfig.num_workers),
        shared_memory=pick("shared_memory", TrainConfig.shared_memory), freeze_bn=pick("freeze_bn", TrainConfig.freeze_bn),
        amp=pick("amp", TrainConfig.amp), ema=pick("ema", TrainConfig.ema), device=pick("device", TrainConfig.device),
        pretrained=values.get("pretrained"), resume=resume, classes_file=values.get("classes"),
        val_json=str(val_json) if val_json else None, tune_thresholds=tune, visualdl=visualdl,
        gemm_conv_side=pick("gemm_conv_side", TrainConfig.gemm_conv_side),
    )


# --------------------------------------------------------------------------- val.py
@dataclass(frozen=True)
class EvalSettings:
    """val.py's settings.

    Attributes:
        weights: the trained weights (``--load_from``), classifier included.
        model: the model the weights belong to.
        class_names: names in label order (``len == model.num_classes``).
        dataset: label policy and normalisation.
        test_json: the split evaluated.
        mean, std: per-channel normalisation of the dataset.
        batch_size, num_workers: loader settings.
        threshold: score threshold of CP/CR/CF1/OP/OR/OF1.
        save_scores, json_out: optional output files.
        device: ``auto``, ``cpu`` or ``gpu``.
        tune_thresholds: tune per-class thresholds on ``val_json`` and write ``thresholds_out``.
        val_json: the validation split of the tuning (None without tuning).
        thresholds_out: where the tuned thresholds go (thresholds.json beside the weights).
        thresholds: per-class thresholds to compare with the global one (``--thresholds`` or
            the thresholds.json beside the weights), or None.
        plots_dir: folder for the PR-curve and AP plots, or None.
    """

    weights: str
    model: ModelSettings
    class_names: tuple[str, ...]
    dataset: str
    test_json: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batch_size: int = 16
    num_workers: int = 0
    threshold: float = 0.5
    save_scores: str | None = None
    json_out: str | None = None
    device: str = "auto"
    tune_thresholds: bool = False
    val_json: str | None = None
    thresholds_out: str | None = None
    thresholds: DecisionThresholds | None = None
    plots_dir: str | None = None


@dataclass(frozen=True)
class _TrainedRun:
    """What the scripts that load trained weights derive from them: the run's config.json,
    the dataset and its recipe, the class names and the model settings."""

    run: dict[str, Any]
    dataset: str
    recipe: Any  # datasets.config.DatasetDefaults
    class_names: tuple[str, ...]
    model: ModelSettings


def _trained_run(args: argparse.Namespace, weights: str | None, split_json: str | None = None) -> _TrainedRun:
    """Resolve the dataset, class names and model of trained ``weights`` (None: an untrained model).

    Flags win; unset ones come from the config.json beside the weights, else the defaults.
    """
    run = read_run_config(weights)
    dataset = args.dataset or run.get("dataset") or DEFAULT_DATASET
    recipe = dataset_defaults(dataset)
    names, source = resolve_classes(dataset, args.classes, split_json, weights=weights)
    num_classes = check_num_classes(args.num_cls, names, source)
    model = model_settings(model_fields(vars(args), run), num_classes)
    return _TrainedRun(run, dataset, recipe, tuple(names), model)


def resolve_eval(args: argparse.Namespace) -> EvalSettings:
    """val.py's settings: flags, else the training run's config.json beside ``--load_from``, else the defaults.

    Raises:
        UserError: missing weights (a folder lists its checkpoints), a bad config.json, a missing
            ``--test_json``, no class names, ``--num_cls`` not matching them, an unknown model.
    """
    check_weights_path(args.load_from, "--load_from")
    dataset = args.dataset or read_run_config(args.load_from).get("dataset") or DEFAULT_DATASET
    test_json = args.test_json or dataset_defaults(dataset).test_json
    if not Path(test_json).is_file():
        raise UserError(f"--test_json {test_json} not found; prepare the dataset first or pass --test_json")
    trained = _trained_run(args, args.load_from, test_json)
    tune = bool(getattr(args, "tune_thresholds", None))
    val_json = resolve_val_json(getattr(args, "val_json", None), dataset, test_json, bool(getattr(args, "tune_on_test", None))) if tune else None
    thresholds_out = None
    if tune:
        if str(args.load_from).startswith(("http://", "https://")):
            raise UserError("--tune_thresholds writes thresholds.json beside the weights: download them first and pass the local file")
        from evaluation.thresholds import thresholds_beside

        thresholds_out = str(thresholds_beside(args.load_from))
    compare = None
    if not tune:
        chosen = choose_thresholds(trained.class_names, thresholds_file=getattr(args, "thresholds", None), weights=args.load_from)
        compare = chosen if chosen.per_class else None
    elif getattr(args, "thresholds", None):
        raise UserError("--thresholds FILE and --tune_thresholds exclude each other: tuning writes new thresholds beside the weights")
    plots_dir = getattr(args, "plots", None)
    if plots_dir:
        from utils.fileio import prepare_output_dir

        prepare_output_dir(plots_dir, "--plots")
    return EvalSettings(
        weights=args.load_from, model=trained.model, class_names=trained.class_names,
        dataset=trained.dataset, test_json=str(test_json), mean=tuple(trained.recipe.mean), std=tuple(trained.recipe.std),
        batch_size=args.batch_size or EvalSettings.batch_size,
        num_workers=EvalSettings.num_workers if args.num_workers is None else args.num_workers,
        threshold=EvalSettings.threshold if args.threshold is None else args.threshold,
        save_scores=args.save_scores, json_out=args.json_out, device=args.device or EvalSettings.device,
        tune_thresholds=tune, val_json=val_json, thresholds_out=thresholds_out, thresholds=compare, plots_dir=plots_dir,
    )


def resolve_val_json(val_json: str | None, dataset: str, test_json: str | None, allow_test: bool, flag: str = "--val_json",
                     test_fix: str = "or add --tune_on_test to do it anyway") -> str:
    """The validation split of threshold tuning: ``val_json``, else the dataset's default.

    Raises:
        UserError: no split given and the dataset has none (or it was not prepared), the file is
            missing, or it is the test split without ``--tune_on_test`` (tuning on the test split
            makes the tuned test metrics optimistic).
    """
    path = val_json or dataset_defaults(dataset).val_json
    if not path:
        raise UserError(f"--tune_thresholds needs a validation split: pass {flag} FILE (a prepared split JSON the model "
                        f"did not train on); --dataset {dataset} has no default one")
    if not Path(path).is_file():
        how = "" if val_json else " (the dataset's default; datasets/prepare_voc.py writes it when train.txt and val.txt exist)"
        raise UserError(f"{flag} {path} not found{how}; prepare it or pass {flag} FILE")
    if test_json and os.path.realpath(path) == os.path.realpath(test_json) and not allow_test:
        raise UserError(f"{flag} {path} is the test split: thresholds tuned on it make its metrics optimistic; tune on a "
                        f"validation split (e.g. val_voc07.json of datasets/prepare_voc.py), {test_fix}")
    return str(path)


# --------------------------------------------------------------------------- predict.py
@dataclass(frozen=True)
class PredictSettings:
    """predict.py's settings.

    Attributes:
        weights, model, class_names, dataset: as ``EvalSettings``.
        mean, std: the dataset's normalisation.
        images: image files given as arguments; img_dir: a folder of images, or None.
        batch_size: images per forward pass.
        threshold: the default global threshold (``--threshold``'s default).
        thresholds: the thresholds used (``--threshold``, ``--thresholds FILE``, the
            thresholds.json beside the weights, else ``threshold``); says where they came from.
        topk: at most this many classes per line.
        output: optional JSON file of all scores.
        heatmap_dir: folder for the class-attention heatmaps, or None.
        device: ``auto``, ``cpu`` or ``gpu``.
    """

    weights: str
    model: ModelSettings
    class_names: tuple[str, ...]
    dataset: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    images: tuple[str, ...] = ()
    img_dir: str | None = None
    batch_size: int = 8
    threshold: float = 0.5
    thresholds: DecisionThresholds | None = None
    topk: int | None = None
    output: str | None = None
    heatmap_dir: str | None = None
    device: str = "auto"


def resolve_thresholds(args: argparse.Namespace, class_names: tuple[str, ...], weights: str | None,
                       default: float) -> DecisionThresholds:
    """The thresholds of predict.py / val.py / export_model.py: ``--threshold`` (every class), else
    ``--thresholds FILE``, else the thresholds.json beside the weights, else ``default``."""
    return choose_thresholds(class_names, override=args.threshold, thresholds_file=getattr(args, "thresholds", None),
                             weights=weights, default=default)


def resolve_predict(args: argparse.Namespace) -> PredictSettings:
    """predict.py's settings: flags, else the training run's config.json beside ``--load_from``, else the defaults.

    Raises:
        UserError: as :func:`resolve_eval` (without the split check).
    """
    check_weights_path(args.load_from, "--load_from")
    trained = _trained_run(args, args.load_from)
    return PredictSettings(
        weights=args.load_from, model=trained.model, class_names=trained.class_names,
        dataset=trained.dataset, mean=tuple(trained.recipe.mean), std=tuple(trained.recipe.std),
        images=tuple(args.images or ()), img_dir=args.img_dir,
        batch_size=args.batch_size or PredictSettings.batch_size,
        threshold=PredictSettings.threshold if args.threshold is None else args.threshold,
        thresholds=resolve_thresholds(args, trained.class_names, args.load_from, PredictSettings.threshold), topk=args.topk,
        output=args.output, heatmap_dir=getattr(args, "heatmap_dir", None), device=args.device or PredictSettings.device,
    )


# --------------------------------------------------------------------------- export_model.py
def resolve_export(args: argparse.Namespace) -> ExportConfig:
    """export_model.py's settings: flags, else the config.json beside ``--model_path``, else the defaults.

    Raises:
        UserError: weights and ``--random_init`` both or neither, missing weights, a bad
            config.json, no class names, ``--num_cls`` not matching them, an unknown model.
    """
    from deploy.quantize import DEFAULT_CALIB_IMAGES, check_quantize_request

    check_weights_choice(args.model_path, args.random_init)
    if args.model_path:
        check_weights_path(args.model_path, "--model_path")
    quantize, calib_dir, calib_images = (getattr(args, k, None) for k in ("quantize", "calib_dir", "calib_images"))
    check_quantize_request(quantize, calib_dir, calib_images)  # before the model is built
    trained = _trained_run(args, args.model_path)
    chosen = resolve_thresholds(args, trained.class_names, args.model_path, ExportConfig.threshold)
    return ExportConfig(
        model=trained.model, class_names=trained.class_names, dataset=trained.dataset,
        mean=tuple(trained.recipe.mean), std=tuple(trained.recipe.std),
        save_dir=args.save_dir or ExportConfig.save_dir, weights=args.model_path,
        threshold=ExportConfig.threshold if args.threshold is None else args.threshold,
        thresholds=chosen.values if chosen.per_class else None, thresholds_source=chosen.source if chosen.per_class else "",
        with_heatmaps=bool(getattr(args, "with_heatmaps", False)), onnx=bool(args.onnx),
        opset=args.opset or ExportConfig.opset, quantize=quantize, calib_dir=calib_dir,
        calib_images=calib_images or DEFAULT_CALIB_IMAGES,
    )


# --------------------------------------------------------------------------- infer.py
def resolve_infer(args: argparse.Namespace) -> InferConfig:
    """infer.py's settings (the flags; unset ones take ``InferConfig``/``RuntimeOptions`` defaults).

    ``threshold`` None means inference.yml's.
    """
    runtime = RuntimeOptions(
        use_gpu=args.use_gpu, gpu_id=args.gpu_id, gpu_mem=args.gpu_mem, use_tensorrt=args.use_tensorrt, precision=args.precision,
        enable_mkldnn=args.enable_mkldnn, cpu_threads=args.cpu_threads, ir_optim=args.ir_optim, memory_optim=args.memory_optim,
        max_batch_size=args.batch_size,
    )
    return InferConfig(
        input_file=args.input_file, model_dir=args.model_dir, model_file=args.model_file, params_file=args.params_file,
        batch_size=args.batch_size, num_workers=args.num_workers, threshold=args.threshold,
        thresholds_file=getattr(args, "thresholds", None), heatmap_dir=getattr(args, "heatmap_dir", None),
        topk=args.topk, output=args.output,
        runtime=runtime, enable_benchmark=args.enable_benchmark, warmup=args.warmup, backend=getattr(args, "backend", None) or "auto",
    )
