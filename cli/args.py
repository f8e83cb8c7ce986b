"""Command-line options shared by every script, defined once.

Each ``add_*_args(parser)`` adds one group of options; scripts compose them, so a flag has
the same name, type, default and help everywhere.

This module imports neither Paddle nor a module that does (``--help`` stays fast): the
model and attention names come from ``models.spec``. Flags whose value may come from a
training run's ``config.json`` default to None ("not given"); ``cli.settings`` resolves
flags + config.json + defaults into typed settings once, after parsing.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

from models.spec import (ATTENTION_NAMES, DEFAULT_IMG_SIZE, DEFAULT_LAM, DEFAULT_MODEL, DEFAULT_NUM_HEADS, MODEL_NAMES,
                         canonical_attention)
from models.spec import SUPPORTED_HEADS, parse_stages  # models/ owns the head table and the one stages parser


# Smallest --img_size accepted. ResNet downsamples by 32: a smaller input is smaller than one
# cell of the last feature map, and the deeper stages see mostly padding. (Forward and
# backward still run down to 1 px, so this is a sense bound, not a crash bound.)
MIN_IMG_SIZE = 32


def _number(text: str, kind: type, expected: str) -> Any:
    """Parse ``text`` as ``kind`` (int or float); ArgumentTypeError saying ``expected`` otherwise."""
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: ``text`` -> an integer >= 1 (ArgumentTypeError otherwise)."""
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: ``text`` -> an integer >= 0 (ArgumentTypeError otherwise)."""
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def image_size(text: str) -> int:
    """argparse type: ``text`` -> an input side in pixels, an integer >= ``MIN_IMG_SIZE`` (32)."""
    value = _number(text, int, f"an integer >= {MIN_IMG_SIZE} (pixels)")
    if value < MIN_IMG_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_IMG_SIZE} pixels (the ResNet downsamples by 32), got {text}; e.g. 448 (the reference) or 224")
    return value


def finite_non_negative_float(text: str) -> float:
    """argparse type: ``text`` -> a finite float >= 0 (not inf/nan; ArgumentTypeError otherwise)."""
    value = _number(text, float, "a finite number >= 0")
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


non_negative_float = finite_non_negative_float  # the older name


def finite_positive_float(text: str) -> float:
    """argparse type: ``text`` -> a finite float > 0 (not inf/nan; ArgumentTypeError otherwise)."""
    value = _number(text, float, "a finite number > 0")
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


positive_float = finite_positive_float  # the older name


def unit_interval_float(text: str) -> float:
    """argparse type: ``text`` -> a float in [0, 1], e.g. a score threshold on sigmoid probabilities."""
    value = _number(text, float, "a number between 0 and 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (scores are sigmoid probabilities), got {text}")
    return value


def ema_decay(text: str) -> float:
    """argparse type: ``text`` -> an EMA decay, a float strictly between 0 and 1 (``--ema``).

    0 would only copy the weights and 1 would never leave the initial ones, so both are refused.
    """
    value = _number(text, float, "a number between 0 and 1 (exclusive), e.g. 0.999")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), e.g. 0.999 or 0.9999, got {text}")
    return value


def momentum_float(text: str) -> float:
    """argparse type: ``text`` -> a float in [0, 1) (SGD momentum; 1 or more never forgets and diverges)."""
    value = _number(text, float, "a number in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), e.g. 0.9, got {text}")
    return value


def drop_rate_float(text: str) -> float:
    """argparse type: ``text`` -> a dropout / drop-path probability in [0, 1)."""
    value = _number(text, float, "a probability in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), e.g. 0.1 (0: off, the reference), got {text}")
    return value


def shift_float(text: str) -> float:
    """argparse type: ``text`` -> a float in [0, 1) (the ASL probability shift of negatives, 0 = none)."""
    value = _number(text, float, "a number in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), e.g. 0.05 (0: no shift), got {text}")
    return value


def stage_list(text: str) -> list[int]:
    """argparse type: ``models.spec.parse_stages`` (comma-separated stages 1..4, e.g. ``3,4`` -> [3, 4]);
    its UserError becomes an ArgumentTypeError with the same message (argparse names the flag)."""
    from utils.errors import UserError

    try:
        return parse_stages(text) or []
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--attention_stages ")) from None


# The model flags' defaults (models.spec is their home): the value when neither the flag nor
# the training run's config.json gives one.
MODEL_DEFAULTS: dict[str, Any] = {
    "model": DEFAULT_MODEL, "num_heads": DEFAULT_NUM_HEADS, "lam": DEFAULT_LAM, "attention": None, "attention_stages": None,
    "img_size": DEFAULT_IMG_SIZE,
}

DEFAULT_TRAIN_SAVE_DIR = "output/train"  # train.py --save_dir when neither the flag nor --resume gives the folder

# How help texts name a default that a training run's config.json may replace.
FROM_RUN = "the training run's config.json, else"
FROM_RESUMED_RUN = "the resumed run's config.json with --resume, else"


def default_text(value: Any, source: str | None) -> str:
    """``(default: SOURCE VALUE)`` or ``(default VALUE)`` for help texts."""
    return f"(default: {source} {value})" if source else f"(default {value})"


def add_model_args(parser: argparse.ArgumentParser, num_cls_default: int | None = None,
                   defaults_from: str | None = FROM_RUN) -> argparse._ArgumentGroup:
    """Add ``--model --num_heads --lam --num_cls --attention --attention_stages`` (the model flags).

    Their defaults are None ("not given") so that ``cli.settings`` can take unset values from a
    training run's ``config.json`` before falling back to ``MODEL_DEFAULTS``.

    Args:
        parser: the script's parser.
        num_cls_default: a fixed ``--num_cls`` default (tools), else None: the number of class names.
        defaults_from: how help texts say where unset values come from (``FROM_RUN``,
            ``FROM_RESUMED_RUN``, or None for the plain defaults).
    Returns:
        the argument group.
    """
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None,
                       help=f"backbone + CSRA model: {', '.join(MODEL_NAMES)} {default_text(DEFAULT_MODEL, defaults_from)}")
    group.add_argument("--num_heads", type=positive_int, default=None, choices=list(SUPPORTED_HEADS),
                       help=f"CSRA heads {default_text(DEFAULT_NUM_HEADS, defaults_from)}")
    group.add_argument("--lam", type=finite_positive_float, default=None,
                       help=f"weight of the attention logit, > 0 {default_text(DEFAULT_LAM, defaults_from)}")
    group.add_argument("--num_cls", type=positive_int, default=num_cls_default,
                       help="number of classes (default: the number of class names found)" if num_cls_default is None
                       else f"number of classes (default {num_cls_default})")
    group.add_argument("--attention", default=None,
                       help=f"attention block inside the ResNet blocks: {', '.join(ATTENTION_NAMES)}, or none "
                       f"{default_text('none', defaults_from)}")
    group.add_argument("--attention_stages", type=stage_list, default=None,
                       help="ResNet stages receiving --attention, comma-separated, e.g. 3,4 "
                       "(default: the block's own, recalibrators 1,2,3,4, at 4, emod 3,4)")
    return group


def _config_value_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be the run config's ``key`` (None when it can, or the key is not checked)."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if key in ("model", "dataset") and not (value is None or isinstance(value, str)):
        return "must be a name (a string)"
    if key == "attention" and not (value is None or isinstance(value, str)):
        return "must be a block name or null"
    if key in ("num_heads", "img_size") and not (is_int(value) and value >= 1):
        return "must be a positive integer"
    if key == "lam" and not ((is_int(value) or isinstance(value, float)) and 0 < value < math.inf):
        return "must be a finite number > 0"
    if key == "attention_stages" and not (value is None or (isinstance(value, list) and all(is_int(s) for s in value))):
        return "must be a list of stage numbers such as [3, 4], or null"
    return None


def read_run_config(weights: str | None) -> dict[str, Any]:
    """The ``config.json`` that train.py wrote beside the checkpoint ``weights``.

    Args:
        weights: a checkpoint path (``--load_from``, ``--model_path``, ``--resume`` file), or None.
    Returns:
        the run's settings as a dict; {} when ``weights`` is None or a URL, or no config.json is there.
    Raises:
        UserError: config.json exists but cannot be read, is not a JSON object, or a model
            setting in it has the wrong type; the message names the file and how to fix it.
    """
    from pathlib import Path

    from utils.errors import UserError
    from utils.fileio import read_json

    if not weights or str(weights).startswith(("http://", "https://")):
        return {}
    path = Path(weights).parent / "config.json"
    if not path.is_file():
        return {}
    fix = ("repair it (train.py writes it: a JSON object of the run's settings), or delete it and pass the model flags "
           "(--model, --num_heads, --lam, --attention, --attention_stages, --img_size, --dataset) explicitly")
    config = read_json(path, "run config", fix)
    if not isinstance(config, dict):
        raise UserError(f"{path} holds a JSON {type(config).__name__}, not an object of settings; {fix}")
    for key in (*MODEL_DEFAULTS, "dataset"):
        problem = _config_value_problem(key, config.get(key)) if key in config else None
        if problem:
            raise UserError(f"{path}: \"{key}\" {problem}, got {config[key]!r}; {fix}")
    return config


def _same_attention(a: Any, b: Any) -> bool:
    """Whether two attention settings name the same block (aliases and case resolved; None == 'none')."""
    return canonical_attention(a) == canonical_attention(b)


def model_fields(given: dict[str, Any], run_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model settings (the keys of ``MODEL_DEFAULTS``): given values, else ``run_config``'s, else the defaults.

    ``attention_stages`` belongs to the run's attention block: it is inherited only when the
    attention ends up being the run's (``--attention`` unset, or naming the same block). With
    ``--attention`` overridden to another block (or ``none``) the stages fall back to that
    block's default unless ``--attention_stages`` is given.

    Args:
        given: flag values, None meaning "not given" (e.g. ``vars(args)``).
        run_config: a training run's config.json (``read_run_config``), or None.
    Returns:
        a new dict {model, num_heads, lam, attention, attention_stages, img_size}; nothing is mutated.
    """
    run_config = run_config or {}
    attention_given = given.get("attention") is not None
    out: dict[str, Any] = {}
    for key, default in MODEL_DEFAULTS.items():
        if given.get(key) is not None:
            out[key] = given[key]
        elif key == "attention_stages" and attention_given and not _same_attention(given["attention"], run_config.get("attention")):
            out[key] = default
        else:
            value = run_config.get(key)
            out[key] = default if value is None else value
    return out


def add_data_args(parser: argparse.ArgumentParser, train: bool = False, batch_size: int = 16, num_workers: int = 0,
                  defaults_from: str | None = FROM_RUN) -> argparse._ArgumentGroup:
    """Add ``--dataset --test_json [--train_json] --classes --img_size --batch_size --num_workers``.

    Args:
        parser: the script's parser.
        train: also add ``--train_json``.
        batch_size, num_workers: the defaults named in the help (the script's settings class holds them).
        defaults_from: how help texts say where unset ``--dataset``/``--img_size`` come from.
    Returns:
        the argument group. Every default is None ("not given"); ``cli.settings`` fills them.
    """
    from datasets.config import DATASETS, DEFAULT_DATASET

    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=None, choices=list(DATASETS),
                       help=f"dataset: chooses default JSON paths, LR step and label policy {default_text(DEFAULT_DATASET, defaults_from)}")
    if train:
        group.add_argument("--train_json", default=None, help="training split JSON (default: per --dataset)")
    group.add_argument("--test_json", default=None, help="evaluation split JSON (default: per --dataset)")
    group.add_argument("--classes", default=None, help="class names file (default: classes.txt beside the JSON, else built-in)")
    group.add_argument("--img_size", type=image_size, default=None,
                       help=f"input side in pixels, >= {MIN_IMG_SIZE} {default_text(DEFAULT_IMG_SIZE, defaults_from)}")
    group.add_argument("--batch_size", type=positive_int, default=None, help=f"images per batch (default {batch_size})")
    group.add_argument("--num_workers", type=non_negative_int, default=None,
                       help=f"data-loader worker processes (default {num_workers}: load in the main process)" if num_workers == 0
                       else f"data-loader worker processes (default {num_workers})")
    return group


def add_loss_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add train.py's loss flags: ``--loss --asl_gamma_neg --asl_gamma_pos --asl_clip --ignore_unknown``.

    The choices of ``--loss`` are the names of the ``engine.losses.LOSSES`` registry (Paddle-free
    at import); the defaults named in the help are ``engine.config.TrainConfig``'s.

    Args:
        parser: train.py's parser.
    Returns:
        the argument group. Every default is None ("not given"); ``cli.settings.resolve_train``
        fills them from the resumed run's config.json or ``TrainConfig``.
    """
    from engine.config import TrainConfig as T
    from engine.losses import LOSSES

    group = parser.add_argument_group("loss (default: the reference's BCE)")
    summaries = "; ".join(f"{name}: {LOSSES.get(name).summary}" for name in LOSSES.names())
    group.add_argument("--loss", default=None, choices=LOSSES.names(), help=f"training loss. {summaries} (default {T.loss})")
    group.add_argument("--asl_gamma_neg", type=finite_non_negative_float, default=None,
                       help=f"--loss asl: focusing exponent of negatives, >= 0 (default {T.asl_gamma_neg:g})")
    group.add_argument("--asl_gamma_pos", type=finite_non_negative_float, default=None,
                       help=f"--loss asl: focusing exponent of positives, >= 0 (default {T.asl_gamma_pos:g})")
    group.add_argument("--asl_clip", type=shift_float, default=None,
                       help=f"--loss asl: probability shift of negatives, in [0, 1), 0 for none (default {T.asl_clip:g})")
    group.add_argument("--ignore_unknown", action="store_true", default=None,
                       help="training targets -1 or 99 are unknown labels: they add no loss (without it such a split is "
                       "refused); with bce the mean is over the known entries")
    return group


def add_device_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup, defaults_from: str | None = None) -> None:
    """Add ``--device {auto,cpu,gpu}`` (default None = not given; resolved to ``auto`` or the resumed run's)."""
    from engine.config import DEVICES

    source = f": {defaults_from}" if defaults_from else ""
    parser.add_argument("--device", default=None, choices=list(DEVICES),
                        help=f"where to run (default{source} auto: GPU when Paddle has CUDA and sees one)")


def add_image_limit_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--max_image_pixels N`` (the image reader's decompression-bomb limit) to ``parser``.

    Args:
        parser: the parser or argument group to extend.
    Returns:
        None. The value (an int >= 0, or None when not given) is applied with
        :func:`apply_image_limit` right after parsing.
    """
    parser.add_argument("--max_image_pixels", type=non_negative_int, default=None, metavar="N",
                        help="refuse images with more than N pixels (width x height) before decoding them, "
                        "0 for no limit (default: $CSRA_MAX_IMAGE_PIXELS, else 89478485, PIL's own threshold)")


def apply_image_limit(value: int | None) -> None:
    """Make ``--max_image_pixels`` effective for every image this run reads.

    Args:
        value: the parsed flag: pixels (0 = no limit), or None to keep
            ``$CSRA_MAX_IMAGE_PIXELS`` / the default.
    Returns:
        None. A value is set in this process (``datasets.image_io.set_max_image_pixels``,
        inherited by forked data-loader workers) and exported as ``CSRA_MAX_IMAGE_PIXELS``
        for spawned ones.
    Raises:
        UserError: ``value`` is None and ``$CSRA_MAX_IMAGE_PIXELS`` is not an integer >= 0
            (checked now rather than at the first image).
    """
    import os

    from datasets.image_io import MAX_IMAGE_PIXELS_ENV, max_image_pixels, set_max_image_pixels

    if value is None:
        max_image_pixels()
        return
    set_max_image_pixels(value)
    os.environ[MAX_IMAGE_PIXELS_ENV] = str(value)


def add_backend_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add infer.py's ``--backend auto|paddle|openvino|onnxruntime`` (``deploy.backends``'s registry).

    Args:
        parser: the parser or argument group to extend.
    Returns:
        None. The value is a registry name or ``auto`` (default): the first installed backend
        of ``deploy.backends.auto_order`` (the precision's, or the model family's on CPU fp32)
        that accepts the export.
    """
    from deploy.backends import AUTO, BACKEND_CHOICES, REGISTRY

    parser.add_argument("--backend", default=AUTO, choices=list(BACKEND_CHOICES),
                        help="inference engine: " + "; ".join(f"{e.name}: {e.summary}" for e in REGISTRY.values())
                        + "; auto (default): the fastest installed one that can run the export at --precision "
                        "(fp32: paddle, for ViT exports with model.onnx onnxruntime; int8: onnxruntime)")


def add_quantize_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add export_model.py's ``--quantize int8 --calib_dir DIR --calib_images N``.

    Args:
        parser: the parser or argument group to extend.
    Returns:
        None. Unset flags are None; ``cli.settings.resolve_export`` checks them together
        (``deploy.quantize.check_quantize_request``) and fills the defaults.
    """
    from deploy.quantize import DEFAULT_CALIB_IMAGES, QUANTIZE_CHOICES

    parser.add_argument("--quantize", default=None, choices=list(QUANTIZE_CHOICES),
                        help="also write an int8 model (model_int8.onnx, static post-training quantisation with ONNX "
                        "Runtime, implies --onnx) for infer.py --precision int8; needs requirements-onnx.txt")
    parser.add_argument("--calib_dir", default=None, metavar="DIR",
                        help="with --quantize: folder of calibration images (representative, e.g. training images; not recursive)")
    parser.add_argument("--calib_images", type=positive_int, default=None, metavar="N",
                        help=f"with --quantize: calibrate on N images spread over --calib_dir (default {DEFAULT_CALIB_IMAGES})")


def add_thresholds_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "report") -> None:
    """``--thresholds FILE``: per-class thresholds (a thresholds.json of ``val.py --tune_thresholds``).

    Without it (and without ``--threshold``) the thresholds.json beside the weights is used when present.
    """
    parser.add_argument("--thresholds", default=None, metavar="FILE",
                        help=f"per-class thresholds to {what} with: a thresholds.json written by val.py --tune_thresholds "
                        "(default: thresholds.json beside the weights when present, else the global --threshold); "
                        "--threshold X overrides it with X for every class")


def add_heatmap_dir_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--heatmap_dir DIR``: write the class-attention heatmaps of every image there."""
    parser.add_argument("--heatmap_dir", default=None, metavar="DIR",
                        help="write class-attention heatmaps: per image a PNG for each reported class (the class map "
                        "blended over the image, with its name and score) and a contact sheet <image>__sheet.png; "
                        "--topk limits the classes drawn")
