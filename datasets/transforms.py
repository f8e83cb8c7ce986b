"""Image preprocessing: the one path shared by training, evaluation, prediction and export.

Evaluation, prediction, the exported-model config and Paddle-Inference all call
:func:`preprocess` (or :class:`TestTransform`, which is the same function), so the static
and dynamic models see identical inputs. The steps follow the reference's torchvision
pipeline on PIL images:

* test: ``resize((S, S), bilinear)`` -> scale to [0, 1] (``/ 255``) -> ``(x - mean) / std``
  per channel -> HWC to CHW float32.
* train: random horizontal flip (p = 0.5) -> RandomResizedCrop(S, scale, ratio) with
  torchvision's sampling rule -> ``resize((S, S))`` (a no-op after the crop, kept as the
  reference has it) -> the same scaling and normalisation.
* WIDER Attribute: the person box is cropped first (:func:`crop_bbox`, done by the
  dataset); train = flip + resize, no random crop; mean = std = 0.5. Which dataset uses
  which mean, std and crop is decided in one place, the recipe table ``datasets.config``
  (``DatasetDefaults.train_transform`` / ``test_transform``).

PIL's bilinear resize filters over the whole source footprint when it shrinks an image
(antialiasing); that is also what torchvision's ``Resize`` does on PIL input. Resizing a
numpy array with OpenCV instead would give different values: do not.

Randomness comes from a ``numpy.random.Generator``: a transform owns one (seedable with
``seed`` / :meth:`TrainTransform.reseed`), and a caller may pass its own per call, which
the dataset does to make a seeded run independent of the number of loader workers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from datasets.image_io import to_rgb
from utils.errors import UserError

DEFAULT_MEAN: tuple[float, float, float] = (0.0, 0.0, 0.0)
"""Per-channel mean of the VOC / COCO recipe: pixels only scaled to [0, 1]."""
DEFAULT_STD: tuple[float, float, float] = (1.0, 1.0, 1.0)
"""Per-channel std of the VOC / COCO recipe."""
WIDER_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
"""Per-channel mean of the WIDER Attribute recipe (maps [0, 1] to [-1, 1])."""
WIDER_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
"""Per-channel std of the WIDER Attribute recipe."""

DEFAULT_SCALE: tuple[float, float] = (0.7, 1.0)
DEFAULT_RATIO: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)

RESAMPLE = Image.Resampling.BILINEAR
"""The one resampling filter used everywhere (torchvision's default for PIL input)."""


def _check_size(img_size: int) -> int:
    """Validate an image size; return it as int.

    Args:
        img_size: square side in pixels.
    Returns:
        ``int(img_size)``.
    Raises:
        UserError: not a positive integer.
    """
    if isinstance(img_size, bool) or not isinstance(img_size, (int, np.integer)) or img_size < 1:
        raise UserError(f"image size must be a positive integer, got {img_size!r}")
    return int(img_size)


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validate per-channel mean and std.

    Args:
        mean: 3 numbers.
        std: 3 non-zero numbers.
    Returns:
        (mean, std) as float32 arrays of shape [3].
    Raises:
        UserError: wrong length, not finite, or a zero std.
    """
    try:
        m = np.asarray(mean, dtype=np.float32).reshape(-1)
        s = np.asarray(std, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"mean and std must be 3 numbers each, got mean={mean!r} std={std!r}") from None
    if m.shape != (3,) or s.shape != (3,):
        raise UserError(f"mean and std must have 3 values (R, G, B), got mean={mean!r} std={std!r}")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s))) or np.any(s == 0):
        raise UserError(f"mean and std must be finite and std non-zero, got mean={mean!r} std={std!r}")
    return m, s


def to_chw_float(img: Image.Image, mean: Sequence[float] = DEFAULT_MEAN,
                 std: Sequence[float] = DEFAULT_STD) -> np.ndarray:
    """Scale an RGB image to [0, 1], normalise per channel and move channels first.

    Args:
        img: PIL image, mode RGB (other modes are converted with
            :func:`datasets.image_io.to_rgb`), size (W, H).
        mean: per-channel mean subtracted after the scaling.
        std: per-channel std divided by after the mean.
    Returns:
        float32 array [3, H, W]: ``(pixel / 255 - mean) / std``.
    """
    m, s = _check_stats(mean, std)
    arr = np.asarray(to_rgb(img), dtype=np.float32)  # [H, W, 3], a fresh writable array
    arr /= np.float32(255.0)
    arr -= m
    arr /= s
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def preprocess(img: Image.Image, img_size: int, mean: Sequence[float] = DEFAULT_MEAN,
               std: Sequence[float] = DEFAULT_STD) -> np.ndarray:
    """The evaluation / prediction / inference preprocessing of one image.

    Args:
        img: PIL image, mode RGB (as returned by :func:`datasets.image_io.load_rgb`), any size.
        img_size: output side S; the image is resized to S x S (aspect ratio not kept,
            no crop), bilinear.
        mean: per-channel mean, applied after scaling to [0, 1].
        std: per-channel std.
    Returns:
        float32 array [3, S, S].
    """
    size = _check_size(img_size)
    resized = to_rgb(img).resize((size, size), RESAMPLE)
    return to_chw_float(resized, mean, std)


def random_resized_crop_box(width: int, height: int, scale: tuple[float, float],
                            ratio: tuple[float, float],
                            rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Sample a crop box with torchvision's RandomResizedCrop rule.

    Up to 10 attempts: area fraction ~ U(scale), aspect ratio (w / h) log-uniform in
    ``ratio``; ``w = round(sqrt(area * r))``, ``h = round(sqrt(area / r))``; accepted if it
    fits, and then placed uniformly. After 10 failures: a centre crop of the whole image
    with its aspect ratio clamped into ``ratio``.

    Args:
        width: image width W (pixels, >= 1).
        height: image height H (pixels, >= 1).
        scale: (min, max) fraction of the image area.
        ratio: (min, max) aspect ratio w / h.
        rng: random generator.
    Returns:
        (left, top, w, h) in pixels, with 0 <= left, left + w <= W, 0 <= top, top + h <= H.
    """
    area = float(width * height)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class Transform:
    """Base of the project's transforms: ``transform(img, rng=None) -> float32 [3, S, S]``.

    Attributes:
        img_size: output side S.
        mean, std: per-channel normalisation (3 floats each).
        is_random: True when the output depends on ``rng``.
    """

    is_random: bool = False

    def __init__(self, img_size: int, mean: Sequence[float] = DEFAULT_MEAN,
                 std: Sequence[float] = DEFAULT_STD) -> None:
        self.img_size = _check_size(img_size)
        _check_stats(mean, std)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> np.ndarray:
        """Transform one RGB PIL image into a float32 array [3, S, S]."""
        raise NotImplementedError

    def reseed(self, seed: int | None) -> None:
        """Reset the transform's own random generator (no-op for deterministic transforms)."""


class TestTransform(Transform):
    """Deterministic evaluation transform: exactly :func:`preprocess`."""

    __test__ = False  # not a pytest test class despite the name

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> np.ndarray:
        """Args: img RGB PIL image; rng ignored. Returns float32 [3, S, S]."""
        return preprocess(img, self.img_size, self.mean, self.std)

    def __repr__(self) -> str:
        return f"TestTransform(img_size={self.img_size}, mean={self.mean}, std={self.std})"


class TrainTransform(Transform):
    """Training augmentation: flip, RandomResizedCrop, resize, scale and normalise.

    Args:
        img_size: output side S.
        mean: per-channel mean.
        std: per-channel std.
        scale: RandomResizedCrop area range (fractions in (0, 1]).
        ratio: RandomResizedCrop aspect-ratio range (w / h).
        flip_prob: probability of a horizontal flip.
        random_crop: False skips the random crop (the WIDER recipe: flip + resize only).
        seed: seed of the transform's own generator (None: fresh OS entropy).
    """

    is_random = True

    def __init__(self, img_size: int, mean: Sequence[float] = DEFAULT_MEAN,
                 std: Sequence[float] = DEFAULT_STD,
                 scale: tuple[float, float] = DEFAULT_SCALE,
                 ratio: tuple[float, float] = DEFAULT_RATIO,
                 flip_prob: float = 0.5, random_crop: bool = True,
                 seed: int | None = None) -> None:
        super().__init__(img_size, mean, std)
        lo, hi = float(scale[0]), float(scale[1])
        if not (0.0 < lo <= hi <= 1.0):
            raise UserError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale!r}")
        rlo, rhi = float(ratio[0]), float(ratio[1])
        if not (0.0 < rlo <= rhi):
            raise UserError(f"crop ratio must satisfy 0 < min <= max, got {ratio!r}")
        if not 0.0 <= flip_prob <= 1.0:
            raise UserError(f"flip probability must be in [0, 1], got {flip_prob!r}")
        self.scale = (lo, hi)
        self.ratio = (rlo, rhi)
        self.flip_prob = float(flip_prob)
        self.random_crop = bool(random_crop)
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int | None) -> None:
        """Replace the transform's own generator by ``numpy.random.default_rng(seed)``."""
        self.rng = np.random.default_rng(seed)

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> np.ndarray:
        """Augment one image.

        Args:
            img: PIL image (RGB), any size.
            rng: generator to draw from; None uses the transform's own.
        Returns:
            float32 array [3, S, S].
        """
        g = self.rng if rng is None else rng
        img = to_rgb(img)
        if g.random() < self.flip_prob:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        size = self.img_size
        if self.random_crop:
            left, top, w, h = random_resized_crop_box(img.width, img.height, self.scale, self.ratio, g)
            img = img.crop((left, top, left + w, top + h)).resize((size, size), RESAMPLE)
        img = img.resize((size, size), RESAMPLE)  # no-op after the crop, as in the reference
        return to_chw_float(img, self.mean, self.std)

    def __repr__(self) -> str:
        return (f"TrainTransform(img_size={self.img_size}, mean={self.mean}, std={self.std}, "
                f"scale={self.scale}, ratio={self.ratio}, flip_prob={self.flip_prob}, "
                f"random_crop={self.random_crop})")


def crop_bbox(img: Image.Image, bbox: Sequence[float], source: str = "image") -> Image.Image:
    """Crop a person box ``[x, y, w, h]`` (WIDER Attribute), clamped to the image.

    Coordinates may be fractional; like PIL's ``crop`` (which the reference calls with the
    unclamped box) the corners are rounded to whole pixels.

    Args:
        img: PIL image, size (W, H).
        bbox: [x, y, w, h], top-left corner and size in pixels.
        source: name of the image (its path) for the error message.
    Returns:
        PIL image of the box intersected with the image, same mode as ``img``.
    Raises:
        UserError: the box is not 4 finite numbers, or nothing of it (at least one whole
            pixel) lies inside the image.
    """
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise UserError(f"bad bbox {bbox!r} for {source}: expected [x, y, w, h] (4 numbers)") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise UserError(f"bad bbox {bbox!r} for {source}: values must be finite numbers")
    x0 = int(round(max(0.0, x)))
    y0 = int(round(max(0.0, y)))
    x1 = int(round(min(float(img.width), x + w)))
    y1 = int(round(min(float(img.height), y + h)))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise UserError(
            f"bbox {list(bbox)!r} for {source} is empty inside the {img.width}x{img.height} "
            f"image (w and h must be > 0 and the box must overlap the image); fix or drop "
            f"this entry in the JSON"
        )
    return img.crop((x0, y0, x1, y1))
