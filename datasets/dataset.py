"""The multi-label dataset of one prepared split (read with :func:`datasets.splits.read_split`).

Targets are returned as stored: VOC test keeps 1 / -1 / 0 (0 = difficult), WIDER test keeps
99 (unspecified); the loss and the metrics decide what those values mean. Batches come from
:func:`datasets.loader.make_loader`.

Reproducibility: with ``seed`` set, the random augmentation of sample ``i`` in epoch ``e``
draws from ``numpy.random.default_rng([seed, e, i])``, so it does not depend on the number
of loader workers or on the order in which they fetch samples. Call
:meth:`MultiLabelDataset.set_epoch` before iterating each epoch (workers receive a copy of
the dataset when an epoch's iterator starts). Without a seed, each loader worker process
reseeds the transform's own generator from the loader's per-epoch seed and its worker id on
its first sample, so two workers never repeat each other's augmentations.

Errors: a missing or unreadable image raises ``UserError`` naming the file and its entry in
the split; :mod:`datasets.loader` carries it to the caller unchanged.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from PIL import Image

from datasets.classes import read_class_file
from datasets.image_io import load_rgb
from datasets.splits import read_split
from datasets.transforms import Transform, crop_bbox
from utils.errors import UserError

ClassesArg = str | os.PathLike | Sequence[str] | None


def _class_names(classes: ClassesArg) -> tuple[list[str] | None, str]:
    """Turn the ``classes`` argument into a list (or None) and a description for messages.

    Args:
        classes: None, a class file (read with :func:`datasets.classes.read_class_file`),
            or a sequence of names.
    Returns:
        (names or None, where they came from).
    Raises:
        UserError: a bad class file, or duplicate or empty names in a given list.
    """
    if classes is None:
        return None, ""
    if isinstance(classes, (str, os.PathLike)):
        return read_class_file(classes), f"class list {Path(classes)}"
    names = [str(c) for c in classes]
    if not names or any(not n.strip() for n in names):
        raise UserError(f"class names must be non-empty strings, got {list(classes)!r}")
    if len(set(names)) != len(names):
        raise UserError(f"class names must be unique, got {names!r}")
    return names, f"the {len(names)} given class names"


class MultiLabelDataset(paddle.io.Dataset):
    """Images and multi-label targets of one prepared split.

    Args:
        json_path: prepared split JSON (see :func:`datasets.splits.read_split`).
        transform: :class:`datasets.transforms.Transform` (train or test), or any callable
            ``PIL RGB image -> array [3, S, S]``.
        classes: class-list file, list of names, or None (names ``class_0`` ...). When given,
            every target must have one value per class.
        root: folder against which relative ``img_path`` values are resolved when they do
            not exist relative to the current working directory.
        seed: None, or the base seed of per-sample augmentation randomness (see the module
            docstring).
        use_bbox: crop entries that carry a ``bbox`` (WIDER) to that box before the transform.
    """

    def __init__(self, json_path: str | os.PathLike,
                 transform: Transform | Callable[[Image.Image], np.ndarray],
                 classes: ClassesArg = None, root: str | os.PathLike | None = None,
                 seed: int | None = None, use_bbox: bool = True) -> None:
        super().__init__()
        names, source = _class_names(classes)
        self.json_path = Path(json_path)
        self._entries, self._targets = read_split(
            self.json_path, len(names) if names is not None else None, source)
        self._targets.setflags(write=False)
        num_classes = self._targets.shape[1]
        self._classes = names if names is not None else [f"class_{k}" for k in range(num_classes)]
        self.transform = transform
        self.root = Path(root) if root is not None else None
        if seed is not None and (isinstance(seed, bool) or int(seed) < 0):
            raise UserError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.use_bbox = bool(use_bbox)
        self.epoch = 0
        self._rng_pid = os.getpid()

    # ----------------------------------------------------------------- accessors
    def __len__(self) -> int:
        """Number of entries N."""
        return len(self._entries)

    @property
    def img_paths(self) -> list[str]:
        """The ``img_path`` strings exactly as written in the JSON, in order (length N)."""
        return [e["img_path"] for e in self._entries]

    @property
    def targets(self) -> np.ndarray:
        """Raw targets, float32 array [N, C] (read-only view)."""
        return self._targets

    @property
    def classes(self) -> list[str]:
        """Class names, length C (``class_k`` when none were given)."""
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        """C, the number of target columns."""
        return int(self._targets.shape[1])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation stream ``__getitem__`` draws from (seeded runs)."""
        self.epoch = int(epoch)

    def resolve_path(self, index: int) -> Path:
        """Locate the image file of one entry.

        Args:
            index: entry index in [0, N).
        Returns:
            the path as written if absolute or existing relative to the working directory,
            else ``root / path`` if that exists.
        Raises:
            UserError: found in neither place (the message names the JSON, the entry and
                the places tried).
        """
        raw = self._entries[index]["img_path"]
        p = Path(raw)
        if p.exists():
            return p
        tried = [str(p) if p.is_absolute() else str(Path.cwd() / p)]
        if self.root is not None and not p.is_absolute():
            q = self.root / p
            if q.exists():
                return q
            tried.append(str(q))
        fix = ("pass the folder the paths are relative to as root" if self.root is None and
               not p.is_absolute() else "check that the dataset is where the JSON says")
        raise UserError(
            f"image not found: {raw!r} (entry {index} of {self.json_path}); tried "
            f"{' and '.join(tried)}; {fix}"
        )

    # ----------------------------------------------------------------- loading
    def _sample_rng(self, index: int) -> np.random.Generator | None:
        """Generator for the augmentation of one sample, or None for the transform's own."""
        if self.seed is not None:
            return np.random.default_rng([self.seed, self.epoch, index])
        if os.getpid() != self._rng_pid:  # first sample in a new worker process
            self._rng_pid = os.getpid()
            info = paddle.io.get_worker_info()
            if info is not None:
                _reseed_transform(self.transform, info.seed, info.id)
        return None

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Load, crop (if a bbox is given) and transform one image.

        Args:
            index: entry index in [-N, N).
        Returns:
            (image float32 [3, S, S], target float32 [C] with the raw label values).
        Raises:
            UserError: the image is missing or unreadable (names the file and the entry).
            IndexError: index out of range.
        """
        i = int(index)
        n = len(self._entries)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        path = self.resolve_path(i)
        try:
            img = load_rgb(path)
        except UserError as exc:
            raise UserError(f"{exc} [entry {i} of {self.json_path}]") from None
        bbox = self._entries[i].get("bbox")
        if bbox is not None and self.use_bbox:
            img = crop_bbox(img, bbox, source=f"{path} (entry {i} of {self.json_path})")
        rng = self._sample_rng(i)
        if isinstance(self.transform, Transform):
            x = self.transform(img, rng=rng)
        else:
            x = self.transform(img)
        x = np.asarray(x, dtype=np.float32)
        return x, self._targets[i].copy()


def _reseed_transform(transform: Any, base_seed: int, worker_id: int) -> None:
    """Reseed a transform's own generator from a loader seed and a worker id."""
    reseed = getattr(transform, "reseed", None)
    if callable(reseed):
        seq = np.random.SeedSequence([int(base_seed) % (2 ** 63), int(worker_id)])
        reseed(int(seq.generate_state(1, np.uint64)[0]))
