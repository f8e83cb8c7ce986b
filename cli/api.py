"""The Python API for multi-label inference, from a checkpoint or an export.

    from cli.api import Predictor

    predictor = Predictor.from_checkpoint("output/voc07/best.pdparams")     # dygraph
    predictor = Predictor.from_export("inference/voc07")                   # Paddle Inference
    predictor.predict(["dog.jpg", "street.png"])    # -> [{"dog": 0.97}, {"car": 0.91, "person": 0.88}]
    scores, maps = predictor.class_maps(["dog.jpg"])  # [N, C], [N, C, h, w]

``from_checkpoint`` resolves the model exactly as predict.py does (the flags' names as keyword
arguments; unset ones come from the training run's config.json beside the weights, then the
defaults) and uses the tuned thresholds.json beside the weights when present.
"""
from __future__ import annotations

import argparse
from typing import Any

from deploy.api import Predictor as _Predictor

__all__ = ["Predictor"]

_PREDICT_FLAGS = ("model", "num_heads", "lam", "num_cls", "attention", "attention_stages", "dataset", "classes", "img_size",
                  "batch_size", "threshold", "thresholds", "device")


class Predictor(_Predictor):
    """``deploy.api.Predictor`` plus ``from_checkpoint`` (which needs the run-config resolution of ``cli.settings``)."""

    @classmethod
    def from_checkpoint(cls, weights: str, **options: Any) -> "Predictor":
        """Build the model of trained ``weights`` and load them.

        Args:
            weights: a .pdparams (or reference .pth) of a trained CSRA model, e.g. ``RUN/best.pdparams``.
            options: any of predict.py's flags by name: model, num_heads, lam, num_cls, attention,
                attention_stages, dataset, classes, img_size, batch_size, threshold, thresholds, device.
        Returns:
            a Predictor running the dygraph model.
        Raises:
            UserError: an unknown option, or what predict.py refuses (missing weights, weights of
                another model, an invalid thresholds file).
        """
        from cli.loading import load_trained_model
        from cli.settings import resolve_predict
        from engine.device import select_device
        from utils.errors import UserError

        unknown = sorted(set(options) - set(_PREDICT_FLAGS))
        if unknown:
            raise UserError(f"unknown option(s) {', '.join(unknown)}; choose from {', '.join(_PREDICT_FLAGS)}")
        args = argparse.Namespace(**{flag: None for flag in _PREDICT_FLAGS}, load_from=str(weights), images=[], img_dir=None,
                                  topk=None, output=None, heatmap_dir=None)
        for key, value in options.items():
            setattr(args, key, value)
        settings = resolve_predict(args)
        select_device(settings.device)
        model = load_trained_model(settings.weights, settings.model)
        predictor = cls.from_model(model, settings.class_names, settings.model.img_size, settings.mean, settings.std,
                                   thresholds=settings.thresholds, batch_size=settings.batch_size)
        return predictor
