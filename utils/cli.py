"""Command-line options shared by every script, defined once.

Each ``add_*_args(parser)`` adds one group of options; scripts compose them, so a flag has
the same name, type, default and help everywhere.
"""
from __future__ import annotations

import argparse
from typing import Any

DEFAULT_MODEL = "resnet101"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a float > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_model_args(parser: argparse.ArgumentParser, num_cls_default: int | None = 20) -> argparse._ArgumentGroup:
    """Add ``--model --num_heads --lam --num_cls --attention`` (the reference's model flags)."""
    from models import MODELS

    group = parser.add_argument_group("model")
    group.add_argument("--model", default=DEFAULT_MODEL, help=f"backbone + CSRA model: {', '.join(MODELS.names())} (default {DEFAULT_MODEL})")
    group.add_argument("--num_heads", type=positive_int, default=1, choices=[1, 2, 4, 6, 8], help="CSRA heads (default 1)")
    group.add_argument("--lam", type=positive_float, default=0.1, help="weight of the attention logit, > 0 (default 0.1)")
    group.add_argument("--num_cls", type=positive_int, default=num_cls_default, help="number of classes (default %(default)s)")
    group.add_argument("--attention", default=None, help="attention block inside the ResNet blocks (default: none)")
    return group


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``build_model`` keyword arguments named by the model flags."""
    return {
        "name": args.model,
        "num_classes": args.num_cls,
        "num_heads": args.num_heads,
        "lam": args.lam,
        "attention": args.attention,
    }
