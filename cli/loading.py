"""Load a trained model for evaluation or prediction (class names: ``datasets.config.resolve_classes``).

No function here takes parsed flags: ``cli.settings`` resolves them first. Importing this
module does not import Paddle (``load_trained_model`` does, when called).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from models.spec import ModelSettings
from utils.errors import UserError

if TYPE_CHECKING:
    from paddle import nn


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


def load_trained_model(weights: str, model: ModelSettings) -> "nn.Layer":
    """Build ``model`` and load ``weights`` into it; the checkpoint must contain the classifier.

    Args:
        weights: a .pdparams/.pth path (or URL) of a trained CSRA model.
        model: the model the weights belong to (``cli.settings`` resolves it).
    Returns:
        the model in eval mode: ``forward(x [B, 3, S, S]) -> logits [B, C]``.
    Raises:
        UserError: the weights do not fit the model (names the mismatching keys).
    """
    from models.weights import load_pretrained

    net = model.build()
    load_pretrained(net, weights, allow_missing_classifier=False)
    net.eval()
    return net
