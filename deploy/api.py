"""A multi-label Python API: ``Predictor.predict(images) -> [{label: score}]``.

One class serves both runtimes:

* ``Predictor.from_model(model, ...)``: a dygraph CSRA model already built and loaded
  (``cli.api.Predictor.from_checkpoint`` builds one from a training run's checkpoint);
* ``Predictor.from_export(model_dir)``: an ``export_model.py`` folder run by Paddle Inference
  (or another backend of ``deploy.backends``).

Images may be file paths, PIL images or uint8 arrays [H, W, 3] (RGB). They go through the
scripts' path (``datasets.image_io.load_rgb`` for files, ``datasets.transforms.preprocess``),
so the API's scores equal predict.py's and infer.py's. Every label whose score reaches its
class's threshold is returned (not the arg-max); the thresholds are tuned per class when the
checkpoint or export has them (see ``deploy.prediction.choose_thresholds``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasets.image_io import load_rgb, to_rgb
from datasets.transforms import preprocess
from deploy.prediction import DecisionThresholds, HeatmapWriter, deploy_thresholds, global_thresholds, selected_classes
from utils.errors import UserError

ImageInput = str | Path | Image.Image | np.ndarray
#: runs a preprocessed batch float32 [B, 3, S, S] -> probabilities float32 [B, C]
ScoreRunner = Callable[[np.ndarray], np.ndarray]
#: runs a batch -> (probabilities [B, C], combined class maps [B, C, h, w])
MapRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def as_rgb_image(item: ImageInput, index: int = 0) -> Image.Image:
    """One input image as an RGB PIL image.

    Args:
        item: a file path (read with ``load_rgb``: EXIF orientation applied), a PIL image
            (converted to RGB), or a uint8 array [H, W, 3] (RGB) or [H, W] (grey).
        index: its position in the input, for messages.
    Raises:
        UserError: an unreadable file, or an array/object that is not an image.
    """
    if isinstance(item, (str, Path)):
        return load_rgb(item)
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] == 3)) or 0 in item.shape:
            raise UserError(f"image {index}: an array must be uint8 [H, W, 3] (RGB) or [H, W] (grey), got {item.dtype} "
                            f"{list(item.shape)}; convert it, e.g. with np.asarray(PIL.Image.open(path).convert('RGB'))")
        return to_rgb(Image.fromarray(item))
    raise UserError(f"image {index}: expected a file path, a PIL image or a uint8 array [H, W, 3], got {type(item).__name__}")


class Predictor:
    """Multi-label prediction with a CSRA model.

    ``predict(images) -> [{label: score}]`` (labels at or above their threshold, best first);
    ``scores(images) -> float32 [N, C]``; ``class_maps(images) -> (scores [N, C], maps [N, C, h, w])``;
    ``write_heatmaps(images, out_dir)`` draws predict.py's heatmap PNGs.

    Attributes:
        class_names: the C labels in output order.
        thresholds: ``DecisionThresholds`` used by ``predict`` (``thresholds.source`` says which).
        img_size, mean, std: the preprocessing.
        batch_size: images per model run.
    """

    def __init__(self, run: ScoreRunner, class_names: Sequence[str], img_size: int, mean: Sequence[float], std: Sequence[float],
                 thresholds: DecisionThresholds | float = 0.5, run_maps: MapRunner | None = None, batch_size: int = 8,
                 maps_hint: str = "") -> None:
        self._run = run
        self._run_maps = run_maps
        self._maps_hint = maps_hint
        self.class_names = tuple(str(n) for n in class_names)
        self.img_size = int(img_size)
        self.mean, self.std = tuple(mean), tuple(std)
        if not isinstance(thresholds, DecisionThresholds):
            thresholds = global_thresholds(float(thresholds), "given")
        if thresholds.per_class and len(thresholds.values) != len(self.class_names):
            raise UserError(f"{len(thresholds.values)} thresholds for {len(self.class_names)} classes; give one per class")
        self.thresholds = thresholds
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_model(cls, model: Any, class_names: Sequence[str], img_size: int, mean: Sequence[float], std: Sequence[float],
                   thresholds: DecisionThresholds | float = 0.5, batch_size: int = 8) -> "Predictor":
        """Wrap a dygraph CSRA model (``models.model.build_model`` + weights), put in eval mode.

        ``model(x [B,3,S,S]) -> logits [B, C]``; its ``class_maps`` gives the heatmaps.
        """
        import paddle

        model.eval()

        def run(batch: np.ndarray) -> np.ndarray:
            with paddle.no_grad():
                return paddle.nn.functional.sigmoid(model(paddle.to_tensor(batch))).numpy()

        def run_maps(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with paddle.no_grad():
                maps = model.class_maps(paddle.to_tensor(batch))
                return paddle.nn.functional.sigmoid(maps.logits).numpy(), maps.combined.numpy()

        return cls(run, class_names, img_size, mean, std, thresholds, run_maps=run_maps, batch_size=batch_size)

    @classmethod
    def from_export(cls, model_dir: str | Path, backend: str = "auto", threshold: float | None = None,
                    thresholds_file: str | None = None, batch_size: int = 8, runtime: Any = None) -> "Predictor":
        """Load an ``export_model.py`` folder (inference.json/.pdiparams + inference.yml).

        Args:
            backend: ``auto`` or a ``deploy.backends`` name.
            threshold: one threshold for every class (overrides the export's).
            thresholds_file: a ``thresholds.json`` (per class) to use instead of the export's.
            runtime: ``deploy.predictor.RuntimeOptions`` (default: CPU, oneDNN).
        """
        from deploy.backends import choose_backend, create_backend
        from deploy.inference_config import DeployConfig, find_model_files
        from deploy.predictor import RuntimeOptions

        files = find_model_files(str(model_dir))
        if files.config_file is None:
            raise UserError(f"{model_dir} has no inference.yml; export the model again with export_model.py")
        deploy = DeployConfig.load(files.config_file)
        opts = runtime or RuntimeOptions(max_batch_size=batch_size)
        engine = create_backend(choose_backend(backend, files, deploy, opts), files, deploy, opts)
        chosen = deploy_thresholds(deploy, threshold, thresholds_file)
        hint = "" if deploy.heatmaps else f"{model_dir} was exported without heatmaps; export it again with --with_heatmaps"
        return cls(engine, deploy.class_names, deploy.img_size, deploy.mean, deploy.std, chosen,
                   run_maps=engine.with_maps if deploy.heatmaps else None, batch_size=batch_size, maps_hint=hint)

    # ------------------------------------------------------------------ prediction
    def preprocess(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Images -> float32 [N, 3, S, S], predict.py's preprocessing. UserError on an unreadable image."""
        images = self._as_list(images)
        return np.stack([preprocess(as_rgb_image(item, i), self.img_size, self.mean, self.std) for i, item in enumerate(images)])

    def scores(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Sigmoid probabilities float32 [N, C] of the images (in input order)."""
        images = self._as_list(images)
        out = [np.asarray(self._run(self.preprocess(images[i:i + self.batch_size])), dtype=np.float32)
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out)

    def predict(self, images: ImageInput | Sequence[ImageInput], topk: int | None = None) -> list[dict[str, float]]:
        """One dict per image, ``{label: score}``: every label at or above its threshold, best first.

        ``topk`` keeps at most that many labels. An image with no label gets ``{}``.
        """
        return [self._labels(row, topk) for row in self.scores(images)]

    def class_maps(self, images: ImageInput | Sequence[ImageInput]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [N, C] and the combined class maps [N, C, h, w] (one model run, no gradients).

        ``maps[n, c]`` is the CSRA head's contribution map of class c: its sum over positions
        is the class's logit (``models.csra``); h, w = the feature map (S / stride).
        """
        if self._run_maps is None:
            raise UserError(self._maps_hint or "this predictor cannot compute class maps")
        images = self._as_list(images)
        probs, maps = [], []
        for i in range(0, len(images), self.batch_size):
            p, m = self._run_maps(self.preprocess(images[i:i + self.batch_size]))
            probs.append(np.asarray(p, dtype=np.float32))
            maps.append(np.asarray(m, dtype=np.float32))
        return np.concatenate(probs), np.concatenate(maps)

    def write_heatmaps(self, images: Sequence[str | Path], out_dir: str | Path, topk: int | None = None) -> list[Path]:
        """Draw predict.py's heatmap PNGs of image files into ``out_dir``; returns the written paths."""
        paths = [str(p) for p in self._as_list(images)]
        writer = HeatmapWriter(out_dir)
        written: list[Path] = []
        for i in range(0, len(paths), self.batch_size):
            chunk = paths[i:i + self.batch_size]
            probs, maps = self.class_maps(chunk)
            for path, row, class_maps in zip(chunk, probs, maps):
                chosen = selected_classes(row, self.thresholds, topk)
                written += writer.write(path, class_maps, row, chosen, self.class_names)
        return written

    def _labels(self, row: np.ndarray, topk: int | None) -> dict[str, float]:
        chosen = selected_classes(row, self.thresholds, topk)
        chosen.sort(key=lambda c: (-row[c], c))
        return {self.class_names[c]: float(row[c]) for c in chosen}

    @staticmethod
    def _as_list(images: Any) -> list:
        if isinstance(images, (str, Path, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
            images = [images]
        images = list(images)
        if not images:
            raise UserError("no images given: pass a path, a PIL image, a uint8 array or a list of them")
        return images

