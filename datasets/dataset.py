"""The multi-label dataset read from a prepared JSON split, and a reproducible loader.

A prepared split is a JSON list of ``{"target": [C numbers], "img_path": "...",
optional "bbox": [x, y, w, h]}`` (see the spec, section 3). Targets are returned as stored:
VOC test keeps 1 / -1 / 0 (0 = difficult), WIDER test keeps 99 (unspecified); the loss and
the metrics decide what those values mean.

Reproducibility: with ``seed`` set, the random augmentation of sample ``i`` in epoch ``e``
draws from ``numpy.random.default_rng([seed, e, i])``, so it does not depend on the number
of loader workers or on the order in which they fetch samples. Call
:meth:`MultiLabelDataset.set_epoch` before iterating each epoch (workers receive a copy of
the dataset when an epoch's iterator starts; with ``persistent_workers=True`` they would
keep the old epoch). :func:`make_loader` shuffles with ``default_rng([seed, epoch])`` the
same way. Without a seed each worker process reseeds the transform's own generator from the
loader's per-epoch seed (:func:`seed_worker`), so two workers never repeat each other's
augmentations.

Errors in loader workers: Paddle re-raises a worker's exception in a background thread and
the main thread only sees ``SystemError: Blocking queue is killed``. The loader returned by
:func:`make_loader` (or any loader wrapped with :func:`surface_worker_errors`) catches that
and raises the worker's own error instead, so a ``UserError`` naming the broken image file
reaches the command line intact.
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from PIL import Image

from datasets.image_io import load_rgb
from datasets.transforms import Transform, crop_bbox
from utils.errors import UserError
from utils.logger import get_logger

log = get_logger("dataset")

ClassesArg = str | os.PathLike | Sequence[str] | None


def load_classes(path: str | os.PathLike) -> list[str]:
    """Read a class list file: one class name per line.

    Leading / trailing spaces are stripped; blank lines and lines starting with ``#`` are
    skipped. Order is kept (it defines the target columns).

    Args:
        path: text file, UTF-8.
    Returns:
        class names, in file order.
    Raises:
        UserError: the file is missing, empty, or repeats a name.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"class list not found: {p} (one class name per line)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read class list {p}: {exc}") from None
    names = [ln.strip() for ln in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise UserError(f"class list {p} is empty: write one class name per line")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise UserError(f"class list {p} names {n!r} twice: each class must appear once")
        seen.add(n)
    return names


def _resolve_classes(classes: ClassesArg) -> tuple[list[str] | None, str]:
    """Turn the ``classes`` argument into a list (or None) and a description for messages.

    Args:
        classes: None, a class-list file path, or a sequence of names.
    Returns:
        (names or None, where they came from).
    Raises:
        UserError: duplicate or empty names in a given list.
    """
    if classes is None:
        return None, ""
    if isinstance(classes, (str, os.PathLike)):
        return load_classes(classes), f"class list {Path(classes)}"
    names = [str(c) for c in classes]
    if not names or any(not n.strip() for n in names):
        raise UserError(f"class names must be non-empty strings, got {list(classes)!r}")
    if len(set(names)) != len(names):
        raise UserError(f"class names must be unique, got {names!r}")
    return names, f"the {len(names)} given class names"


_NUMBER_TYPES = (int, float)  # compared with type(): bool is rejected


def _is_number(v: Any) -> bool:
    """True for a finite int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_annotations(json_path: str | os.PathLike,
                     num_classes: int | None = None,
                     classes_source: str = "") -> tuple[list[dict[str, Any]], np.ndarray]:
    """Read and validate a prepared split JSON.

    Args:
        json_path: the JSON file (a list of entries).
        num_classes: expected target length C; None takes the first entry's length and
            requires all entries to agree.
        classes_source: where C came from, for the error message.
    Returns:
        (entries, targets): ``entries`` are dicts with ``img_path`` (str) and, when
        present, ``bbox`` (list of 4 floats); ``targets`` is a float32 array [N, C] of the
        raw label values.
    Raises:
        UserError: unreadable or invalid JSON, not a non-empty list, an entry that is not
            an object, a missing / wrongly typed ``img_path`` or ``target``, a target of the
            wrong length, a non-numeric or non-finite target value, a bad ``bbox``. The
            message names the file and the entry index.
    """
    p = Path(json_path)
    try:
        with open(p, "r", encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise UserError(
            f"annotation file not found: {p} (create it with the datasets.prepare_* scripts)"
        ) from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"regenerate it with the datasets.prepare_* scripts"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read annotation file {p}: {exc}") from None

    hint = "regenerate it with the datasets.prepare_* scripts or fix that entry"
    if not isinstance(data, list):
        raise UserError(
            f"{p} must hold a JSON list of {{\"target\": [...], \"img_path\": \"...\"}} "
            f"entries, found a {type(data).__name__}; {hint}"
        )
    if not data:
        raise UserError(f"{p} holds an empty list: the split has no images")

    expected = num_classes
    source = classes_source or "the first entry"
    entries: list[dict[str, Any]] = []
    rows: list[list[float]] = []
    for i, item in enumerate(data):
        where = f"{p}: entry {i}"
        if not isinstance(item, dict):
            raise UserError(f"{where} is a {type(item).__name__}, expected an object; {hint}")
        for key in ("target", "img_path"):
            if key not in item:
                raise UserError(f"{where} has no {key!r} key (keys: {sorted(item)}); {hint}")
        img_path = item["img_path"]
        if not isinstance(img_path, str) or not img_path.strip():
            raise UserError(f"{where}: 'img_path' must be a non-empty string, got {img_path!r}")
        target = item["target"]
        if not isinstance(target, list):
            raise UserError(f"{where}: 'target' must be a list of numbers, got {target!r}")
        if expected is None:
            expected = len(target)
            if expected == 0:
                raise UserError(f"{where}: 'target' is empty; {hint}")
        if len(target) != expected:
            raise UserError(
                f"{where}: 'target' has {len(target)} values but {source} gives "
                f"{expected} classes; use the class list the JSON was prepared with, or {hint}"
            )
        if not all(type(v) in _NUMBER_TYPES for v in target):  # fast path for big splits
            j, v = next((j, v) for j, v in enumerate(target) if type(v) not in _NUMBER_TYPES)
            raise UserError(
                f"{where}: target value {j} is {v!r}, expected a number "
                f"(e.g. 1, 0, -1 or 99); {hint}"
            )
        entry: dict[str, Any] = {"img_path": img_path}
        if "bbox" in item:
            bbox = item["bbox"]
            if (not isinstance(bbox, list) or len(bbox) != 4
                    or not all(_is_number(v) for v in bbox)):
                raise UserError(f"{where}: 'bbox' must be [x, y, w, h] (4 numbers), got {bbox!r}")
            entry["bbox"] = [float(v) for v in bbox]
        entries.append(entry)
        rows.append(target)
    targets = np.asarray(rows, dtype=np.float32).reshape(len(rows), expected)
    bad = ~np.isfinite(targets)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise UserError(
            f"{p}: entry {i}: target value {j} is {rows[i][j]!r}, expected a finite number; {hint}"
        )
    return entries, targets


class MultiLabelDataset(paddle.io.Dataset):
    """Images and multi-label targets of one prepared split.

    Args:
        json_path: prepared split JSON (see :func:`load_annotations`).
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
        names, source = _resolve_classes(classes)
        self.json_path = Path(json_path)
        self._entries, self._targets = load_annotations(
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


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for ``paddle.io.DataLoader``: give each worker its own stream.

    Paddle already seeds ``random``, ``numpy.random`` and ``paddle`` per worker; this also
    reseeds the dataset transform's own generator from the loader's per-epoch seed and the
    worker id. (:class:`MultiLabelDataset` does the same by itself on its first sample in
    a worker; the function is for other datasets and for being explicit.)

    Args:
        worker_id: the worker's index, passed by the loader.
    Returns:
        None.
    """
    info = paddle.io.get_worker_info()
    if info is None:
        return
    _reseed_transform(getattr(info.dataset, "transform", None), info.seed, worker_id)


class SeededBatchSampler(paddle.io.BatchSampler):
    """Batches of indices, shuffled per epoch with ``numpy.random.default_rng([seed, epoch])``.

    Args:
        num_samples: dataset length N.
        batch_size: indices per batch.
        shuffle: shuffle each epoch (False: 0..N-1 in order).
        seed: shuffling seed (None: fresh entropy each epoch).
        drop_last: drop a last incomplete batch.
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool,
                 seed: int | None = None, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation ``__iter__`` yields."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        """Yield lists of ``batch_size`` indices (the last may be shorter unless drop_last)."""
        if self.shuffle:
            rng = np.random.default_rng(None if self.seed is None else [int(self.seed), self.epoch])
            order = rng.permutation(self.num_samples).tolist()
        else:
            order = list(range(self.num_samples))
        for start in range(0, self.num_samples, self.batch_size):
            batch = order[start:start + self.batch_size]
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield batch

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return (self.num_samples + self.batch_size - 1) // self.batch_size


# --------------------------------------------------------------------------- worker errors
_worker_errors: list[BaseException] = []
_hook_lock = threading.Lock()
_previous_hook: Callable[[Any], Any] | None = None
_WORKER_PREFIX = "DataLoader worker("


def _worker_message(exc: BaseException) -> str:
    """The original message inside Paddle's "DataLoader worker(i) caught ..." text."""
    text = str(exc)
    marker = f"{type(exc).__name__}: "
    pos = text.rfind(marker)
    return text[pos + len(marker):].strip() if pos >= 0 else text


def _loader_thread_hook(args: Any) -> None:
    """``threading.excepthook``: record errors Paddle re-raises in its loader thread."""
    exc = args.exc_value
    if exc is not None and str(exc).startswith(_WORKER_PREFIX):
        with _hook_lock:
            _worker_errors.append(exc)
        if isinstance(exc, UserError):
            log.error("data loading failed in a worker: %s", _worker_message(exc))
            return
    if _previous_hook is not None:
        _previous_hook(args)


def _install_thread_hook() -> None:
    """Install :func:`_loader_thread_hook` once (it chains to the previous hook)."""
    global _previous_hook
    with _hook_lock:
        if threading.excepthook is not _loader_thread_hook:
            _previous_hook = threading.excepthook
            threading.excepthook = _loader_thread_hook


def _wait_for_worker_error(start: int, timeout: float) -> BaseException | None:
    """The first worker error recorded after index ``start``, waiting up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        with _hook_lock:
            if len(_worker_errors) > start:
                return _worker_errors[start]
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def surface_worker_errors(batches: Iterable[Any]) -> Iterator[Any]:
    """Iterate over a multi-worker loader, re-raising a worker's error in this thread.

    Args:
        batches: a ``paddle.io.DataLoader`` (or its iterator).
    Returns:
        an iterator over the same batches.
    Raises:
        UserError: a worker raised ``UserError`` (same message, e.g. naming the image file).
        Exception: a worker raised another error (its type, with the worker's traceback
            text as message), or the loader failed for another reason (as raised).
    """
    _install_thread_hook()
    with _hook_lock:
        start = len(_worker_errors)
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except Exception as exc:
            err = _wait_for_worker_error(start, timeout=2.0)
            if err is None:
                raise
            if isinstance(err, UserError):
                raise UserError(_worker_message(err)) from None
            raise err from exc
        yield batch


class DataLoader(paddle.io.DataLoader):
    """``paddle.io.DataLoader`` whose worker errors reach the caller (see
    :func:`surface_worker_errors`); identical otherwise."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        """Iterate over batches; with workers, through :func:`surface_worker_errors`."""
        it = super().__iter__()
        if self.num_workers == 0:
            return it
        return surface_worker_errors(it)


def make_loader(dataset: MultiLabelDataset, batch_size: int, shuffle: bool,
                num_workers: int = 0, seed: int | None = None, drop_last: bool = False,
                use_shared_memory: bool = True) -> DataLoader:
    """Build a DataLoader whose order and augmentation are reproducible for a given seed.

    Call ``loader.batch_sampler.set_epoch(e)`` and ``dataset.set_epoch(e)`` before each
    epoch (or use :func:`set_loader_epoch`). A ``UserError`` raised in a worker (e.g. an
    unreadable image) is re-raised by the iteration with its message.

    Args:
        dataset: the dataset (its own ``seed`` controls augmentation).
        batch_size: images per batch.
        shuffle: shuffle every epoch.
        num_workers: loader worker processes (0: load in the main process).
        seed: shuffling seed; None for a fresh order every run.
        drop_last: drop a last incomplete batch.
        use_shared_memory: pass False where /dev/shm is small (e.g. Docker's 64 MB default).
    Returns:
        a :class:`DataLoader` yielding ``[images float32 [B, 3, S, S], targets float32 [B, C]]``.
    """
    sampler = SeededBatchSampler(len(dataset), batch_size, shuffle, seed, drop_last)
    return DataLoader(
        dataset, batch_sampler=sampler, num_workers=int(num_workers),
        use_shared_memory=use_shared_memory,
        worker_init_fn=seed_worker if num_workers > 0 else None,
    )


def set_loader_epoch(loader: paddle.io.DataLoader, epoch: int) -> None:
    """Set the epoch on a loader's sampler and dataset (whichever support ``set_epoch``).

    Args:
        loader: a DataLoader, typically from :func:`make_loader`.
        epoch: epoch number (0-based).
    Returns:
        None.
    """
    for obj in (getattr(loader, "batch_sampler", None), getattr(loader, "dataset", None)):
        if obj is not None and callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(epoch)
