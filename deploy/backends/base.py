"""What every inference backend shares: the batch checks and the call contract.

A backend turns a preprocessed batch, float32 [B, 3, S, S] (``datasets.transforms.preprocess``
with the size and mean/std of ``inference.yml``), into sigmoid probabilities float32 [B, C].
Preprocessing and printing stay outside the backends (``deploy.predictor.run_infer``), so
every backend sees exactly the arrays predict.py's model sees.

This module imports neither paddle nor any runtime: the registry uses it before a backend
is chosen.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from deploy.inference_config import EXPORT_HINT, DeployConfig
from utils.errors import UserError


def as_batch(images: np.ndarray | Sequence[np.ndarray], img_size: int) -> np.ndarray:
    """Stack/validate one batch for a model exported at ``img_size``.

    Args:
        images: an array [B, 3, S, S] or a list of B arrays [3, S, S].
        img_size: S from inference.yml.
    Returns:
        a C-contiguous float32 array [B, 3, S, S].
    Raises:
        UserError: an empty batch, images of different sizes, or a shape other than [N, 3, S, S].
    """
    size = img_size
    if isinstance(images, (list, tuple)):
        shapes = list(dict.fromkeys(tuple(np.shape(a)) for a in images))
        if not shapes:
            raise UserError("empty batch: give at least one image")
        if len(shapes) > 1:
            raise UserError(f"the images of one batch have different sizes ({', '.join(map(str, map(list, shapes)))}); "
                            f"preprocess every image to [3, {size}, {size}] (img_size {size} from inference.yml, "
                            f"datasets.transforms.preprocess) before batching")
        images = np.stack(images)
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[0] == 0:
        raise UserError("empty batch: give at least one image")
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
        raise UserError(f"input batch has shape {list(images.shape)}, but the exported model expects [N, 3, {size}, {size}] "
                        f"(img_size {size} from inference.yml); all images must be preprocessed to that size")
    return np.ascontiguousarray(images, dtype=np.float32)


class InferenceBackend:
    """Base of the backends: ``backend(images) -> probabilities float32 [B, C]``.

    Subclasses set ``name`` and implement :meth:`run`; ``model_path`` names the file they
    execute (for messages and reports).
    """

    name: str = ""

    def __init__(self, deploy: DeployConfig, model_path: Any) -> None:
        self.deploy = deploy
        self.model_path = model_path

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Execute the model on a checked batch float32 [B, 3, S, S]; returns float32 [B, C]."""
        raise NotImplementedError

    def __call__(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Run one batch: an array [B, 3, S, S] or a list of B arrays [3, S, S] -> float32 [B, C].

        UserError on an empty batch, images of different sizes, a shape other than the
        exported one, or an output that does not match inference.yml's classes.
        """
        batch = as_batch(images, self.deploy.img_size)
        probs = np.asarray(self.run(batch), dtype=np.float32)
        if probs.shape != (batch.shape[0], self.deploy.num_classes):
            raise UserError(f"{self.model_path} outputs shape {list(probs.shape)} but inference.yml lists "
                            f"{self.deploy.num_classes} classes: the files come from different exports; re-export ({EXPORT_HINT})")
        return probs

    def run_with_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Execute an export with heatmaps on a checked batch -> (float32 [B, C], maps float32 [B, C, h, w])."""
        raise UserError(f"the {self.name} backend cannot read the class maps of {self.model_path}; use --backend paddle")

    def with_maps(self, images: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Run one batch of an ``export_model.py --with_heatmaps`` export.

        Returns:
            (probabilities float32 [B, C], combined class maps float32 [B, C, h, w]).
        Raises:
            UserError: the export has no map output (re-export with ``--with_heatmaps``), or
                the input/outputs do not fit inference.yml.
        """
        if not self.deploy.heatmaps:
            raise UserError(f"{self.model_path} was exported without class maps; export it again with "
                            f"`{EXPORT_HINT} --with_heatmaps` to draw heatmaps")
        batch = as_batch(images, self.deploy.img_size)
        probs, maps = (np.asarray(a, dtype=np.float32) for a in self.run_with_maps(batch))
        c = self.deploy.num_classes
        if probs.shape != (batch.shape[0], c) or maps.ndim != 4 or maps.shape[:2] != (batch.shape[0], c):
            raise UserError(f"{self.model_path} outputs shapes {list(probs.shape)} and {list(maps.shape)}, but inference.yml "
                            f"lists {c} classes with heatmaps: the files come from different exports; re-export ({EXPORT_HINT})")
        return probs, maps

    def warmup(self, batch_size: int, runs: int = 1) -> None:
        """Run ``runs`` zero batches [batch_size, 3, S, S] (first-run set-up costs stay out of the timings)."""
        zeros = np.zeros((batch_size, 3, self.deploy.img_size, self.deploy.img_size), np.float32)
        for _ in range(runs):
            self(zeros)
