"""Load a trained model for evaluation, prediction or export, with its class names."""
from __future__ import annotations

import argparse
from pathlib import Path

from paddle import nn

from datasets.classes import BUILTIN_CLASSES, read_class_file
from cli.args import fill_model_defaults, model_kwargs, read_run_config, resolve_num_classes
from utils.errors import UserError


def find_class_names(args: argparse.Namespace, extra_json: str | None = None) -> tuple[list[str], str]:
    """Class names for a trained model.

    Order: ``--classes``; ``classes.txt`` beside ``--load_from`` (train.py writes one);
    ``classes.txt`` beside ``extra_json`` (a prepared split); the built-in list of ``--dataset``.
    Returns (names, where they came from).
    """
    if getattr(args, "classes", None):
        return read_class_file(args.classes), args.classes
    for anchor in (getattr(args, "load_from", None), extra_json):
        if anchor:
            beside = Path(anchor).parent / "classes.txt"
            if beside.is_file():
                return read_class_file(beside), str(beside)
    dataset = getattr(args, "dataset", None)
    if dataset in BUILTIN_CLASSES:
        return list(BUILTIN_CLASSES[dataset]), f"built-in {dataset} list"
    raise UserError("no class names: pass --classes FILE (one name per line) or --dataset voc07/coco/wider")


def check_weights_path(spec: str | None, flag: str = "--load_from") -> None:
    """Fail fast, before any slow work, when a local weights path is missing or is a folder.

    Args:
        spec: the flag's value; None, http(s) URLs and ``imagenet`` are left to the loader.
        flag: the option name, for the message.
    Raises:
        UserError: naming the flag; for a folder (e.g. a training run's save_dir) the message
            lists the checkpoint files inside it (the folder itself is never accepted).
    """
    if not spec or spec.startswith(("http://", "https://")) or spec.lower() == "imagenet":
        return
    from models.weights import resolve_weights

    try:
        resolve_weights(spec, "")
    except UserError as exc:
        raise UserError(f"{flag}: {exc}") from None


def load_trained_model(args: argparse.Namespace, extra_json: str | None = None) -> tuple[nn.Layer, list[str]]:
    """Build the model named by the flags (unset ones from the run's config.json) and load ``--load_from``.

    The checkpoint must contain the classifier. Returns (model in eval mode, class names).
    """
    from models import build_model
    from models.weights import load_pretrained

    if not args.load_from:
        raise UserError("--load_from is required: the trained weights (.pdparams, or a reference .pth)")
    check_weights_path(args.load_from, "--model_path" if getattr(args, "model_path", None) else "--load_from")
    run_config = read_run_config(args.load_from)
    fill_model_defaults(args, run_config)
    if getattr(args, "dataset", None) is None:
        args.dataset = run_config.get("dataset", "voc07")
    names, source = find_class_names(args, extra_json)
    args.num_cls = resolve_num_classes(args, names, source)
    model = build_model(**model_kwargs(args))
    load_pretrained(model, args.load_from, allow_missing_classifier=False)
    model.eval()
    return model, names
