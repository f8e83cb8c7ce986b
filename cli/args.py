"""Command-line options shared by every script, defined once.

Each ``add_*_args(parser)`` adds one group of options; scripts compose them, so a flag has
the same name, type, default and help everywhere.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

DEFAULT_MODEL = "resnet101"


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


def momentum_float(text: str) -> float:
    """argparse type: ``text`` -> a float in [0, 1) (SGD momentum; 1 or more never forgets and diverges)."""
    value = _number(text, float, "a number in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), e.g. 0.9, got {text}")
    return value


def stage_list(text: str) -> list[int]:
    """argparse type: comma-separated ResNet stages 1..4, e.g. ``3,4`` -> [3, 4]."""
    try:
        stages = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated stages 1..4 such as 3,4, got {text!r}") from None
    if not stages or any(s not in (1, 2, 3, 4) for s in stages) or len(set(stages)) != len(stages):
        raise argparse.ArgumentTypeError(f"must be distinct stages 1..4 such as 3,4, got {text!r}")
    return sorted(stages)


MODEL_DEFAULTS: dict[str, Any] = {
    "model": DEFAULT_MODEL, "num_heads": 1, "lam": 0.1, "attention": None, "attention_stages": None, "img_size": 448,
}


def add_model_args(parser: argparse.ArgumentParser, num_cls_default: int | None = None) -> argparse._ArgumentGroup:
    """Add ``--model --num_heads --lam --num_cls --attention --attention_stages`` (the model flags).

    Their defaults are None so that ``fill_model_defaults`` can take unset values from a
    training run's ``config.json`` before falling back to the reference defaults.
    """
    from models import MODELS

    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, help=f"backbone + CSRA model: {', '.join(MODELS.names())} (default {DEFAULT_MODEL})")
    group.add_argument("--num_heads", type=positive_int, default=None, choices=[1, 2, 4, 6, 8], help="CSRA heads (default 1)")
    group.add_argument("--lam", type=finite_positive_float, default=None, help="weight of the attention logit, > 0 (default 0.1)")
    group.add_argument("--num_cls", type=positive_int, default=num_cls_default,
                       help="number of classes (default: the number of class names found)" if num_cls_default is None
                       else "number of classes (default %(default)s)")
    group.add_argument("--attention", default=None, help="attention block inside the ResNet blocks (default: none)")
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
    import json
    from pathlib import Path

    from utils.errors import UserError

    if not weights or str(weights).startswith(("http://", "https://")):
        return {}
    path = Path(weights).parent / "config.json"
    if not path.is_file():
        return {}
    fix = ("repair it (train.py writes it: a JSON object of the run's settings), or delete it and pass the model flags "
           "(--model, --num_heads, --lam, --attention, --attention_stages, --img_size, --dataset) explicitly")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path} ({exc}); {fix}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} holds a JSON {type(config).__name__}, not an object of settings; {fix}")
    for key in (*MODEL_DEFAULTS, "dataset"):
        problem = _config_value_problem(key, config.get(key)) if key in config else None
        if problem:
            raise UserError(f"{path}: \"{key}\" {problem}, got {config[key]!r}; {fix}")
    return config


def _same_attention(a: Any, b: Any) -> bool:
    """Whether two attention settings name the same block (aliases and case resolved; None == 'none')."""
    def canonical(name: Any) -> str | None:
        if name is None or str(name).strip().lower() in ("", "none", "null"):
            return None
        try:
            from models.attention import validate_attention

            return validate_attention(str(name))
        except Exception:  # unknown name: build_model reports it later
            return str(name).strip().lower()

    return canonical(a) == canonical(b)


def fill_model_defaults(args: argparse.Namespace, run_config: dict[str, Any] | None = None) -> argparse.Namespace:
    """Fill model flags left unset: from ``run_config`` (a training run's config), else the reference defaults.

    ``attention_stages`` belongs to the run's attention block: it is inherited only when the
    attention ends up being the run's (``--attention`` unset, or naming the same block). With
    ``--attention`` overridden to another block (or ``none``) the stages fall back to that
    block's default unless ``--attention_stages`` is given.
    """
    run_config = run_config or {}
    attention_given = getattr(args, "attention", None) is not None
    for key, default in MODEL_DEFAULTS.items():
        if getattr(args, key, None) is not None:
            continue
        if key == "attention_stages" and attention_given and not _same_attention(args.attention, run_config.get("attention")):
            setattr(args, key, default)
            continue
        setattr(args, key, run_config.get(key, default))
    return args


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``build_model`` keyword arguments named by the model flags (and ``--img_size``,
    which sizes GE's global kernels, when the script has that flag)."""
    has_img_size = hasattr(args, "img_size")
    fill_model_defaults(args)
    kwargs = {
        "name": args.model,
        "num_classes": args.num_cls,
        "num_heads": args.num_heads,
        "lam": args.lam,
        "attention": args.attention,
        "attention_stages": args.attention_stages,
    }
    if has_img_size:
        kwargs["img_size"] = args.img_size
    return kwargs


def add_data_args(parser: argparse.ArgumentParser, train: bool = False) -> argparse._ArgumentGroup:
    """Add ``--dataset --test_json [--train_json] --classes --img_size --batch_size --num_workers``."""
    from datasets.config import DATASETS

    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=None, choices=list(DATASETS),
                       help="dataset: chooses default JSON paths, LR step and label policy (default voc07, or the training run's)")
    if train:
        group.add_argument("--train_json", default=None, help="training split JSON (default: per --dataset)")
    group.add_argument("--test_json", default=None, help="evaluation split JSON (default: per --dataset)")
    group.add_argument("--classes", default=None, help="class names file (default: classes.txt beside the JSON, else built-in)")
    group.add_argument("--img_size", type=image_size, default=None,
                       help=f"input side in pixels, >= {MIN_IMG_SIZE} (default 448, or the training run's)")
    group.add_argument("--batch_size", type=positive_int, default=16, help="images per batch (default 16)")
    group.add_argument("--num_workers", type=non_negative_int, default=0,
                       help="data-loader worker processes (default 0: load in the main process)")
    return group


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--device {auto,cpu,gpu}``."""
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                        help="where to run (default auto: GPU when Paddle has CUDA and sees one)")


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


def set_device(name: str) -> str:
    """Select the Paddle device for ``--device``; returns ``cpu`` or ``gpu``."""
    import paddle

    from utils.errors import UserError

    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise UserError("--device gpu: this Paddle build has no CUDA or no GPU is visible; use --device cpu")
    device = "gpu" if (name == "gpu" or (name == "auto" and has_gpu)) else "cpu"
    paddle.set_device(device)
    return device


def resolve_num_classes(args: argparse.Namespace, names: list[str], source: str) -> int:
    """Check ``--num_cls`` against the class names (None means: take it from them)."""
    from utils.errors import UserError

    if args.num_cls is None:
        return len(names)
    if args.num_cls != len(names):
        raise UserError(f"--num_cls {args.num_cls} but {source} lists {len(names)} classes; drop --num_cls or fix it")
    return args.num_cls
