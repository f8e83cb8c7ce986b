"""The one batch loader of the project: training, train-time evaluation and val.py use it.

:func:`make_loader` returns a :class:`Loader` yielding ``[images float32 [B, 3, S, S],
targets float32 [B, C]]`` as Paddle tensors, from a :class:`datasets.dataset.MultiLabelDataset`
and a batch sampler (:class:`datasets.samplers.SeededBatchSampler` or
:class:`datasets.samplers.ShardedBatchSampler`).

Bad images stop the run. An image that cannot be read (missing, zero bytes, truncated, not
an image) raises the dataset's ``UserError`` naming the file and its entry in the split, and
the iteration re-raises exactly that error in the calling thread; the scripts print it as one
``error: ...`` line and exit with status 2 within seconds. Training and validation do not skip
such files (a skipped image would silently change the split, the metrics and the resume
order); predict.py and infer.py, which read loose files, skip and report them instead (exit
status 1), see ``deploy.prediction.iter_batches``.

Why it cannot hang:

* ``num_workers == 0``: the batches are read in the calling thread (sampler -> ``dataset[i]``
  -> :func:`collate` -> ``paddle.to_tensor``). There is no reader thread and no queue, so an
  error is an ordinary exception. (``paddle.io.DataLoader`` with 0 workers reads in a
  background thread feeding a blocking queue; an error there is printed by the thread and
  the queue is never closed, so the main thread waits forever, even through SIGTERM.)
  The batches are bit-identical to those of ``paddle.io.DataLoader(num_workers=0)``: the same
  samples, stacked with ``np.stack`` in the same order.
* ``num_workers >= 1``: ``paddle.io.DataLoader`` with worker processes. When a worker fails,
  Paddle kills its queue (the main thread then gets ``SystemError: Blocking queue is killed``)
  and re-raises the worker's error in its reader thread. :func:`surface_worker_errors`
  records that error with a ``threading.excepthook`` (nothing is printed) and raises it in
  the calling thread instead of the ``SystemError``; a ``UserError`` keeps its message. A
  worker that died without an error (killed by the system: out of memory, a full
  ``/dev/shm``) becomes a ``UserError`` saying so.

Reproducibility: see :mod:`datasets.dataset` (per-sample augmentation seeds) and
:class:`datasets.samplers.SeededBatchSampler` (per-epoch order). Call
:func:`set_loader_epoch` (or ``loader.batch_sampler.set_epoch`` and
``loader.dataset.set_epoch``) before each epoch.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import paddle

from datasets.samplers import SeededBatchSampler
from utils.errors import UserError
from utils.logger import get_logger

log = get_logger("loader")

_WORKER_PREFIX = "DataLoader worker("  # how Paddle starts the message of a worker's error
_READER_THREAD = "(_thread_loop)"  # how Python names the thread Paddle's loader reads in
_ERROR_WAIT_S = 3.0  # how long to wait for the reader thread's error after the queue died

_loader_errors: list[BaseException] = []
_hook_lock = threading.Lock()
_previous_hook: Any = None


def collate(samples: Sequence[Sequence[Any]]) -> list[np.ndarray]:
    """Stack B samples field by field, as ``paddle.io.DataLoader``'s default collate does.

    Args:
        samples: B tuples of equal length, e.g. ``(image float32 [3, S, S], target float32 [C])``.
    Returns:
        one array per field, e.g. ``[images [B, 3, S, S], targets [B, C]]`` (dtypes kept).
    Raises:
        ValueError: the samples have different numbers of fields or shapes.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    width = len(samples[0])
    if any(len(s) != width for s in samples):
        raise ValueError("the samples of a batch have different numbers of fields")
    return [np.stack([np.asarray(v) for v in field], axis=0) for field in zip(*samples)]


# --------------------------------------------------------------------------- worker errors
def _worker_message(exc: BaseException) -> str:
    """The original message inside Paddle's "DataLoader worker(i) caught ..." text."""
    text = str(exc)
    marker = f"{type(exc).__name__}: "
    pos = text.rfind(marker)
    return text[pos + len(marker):].strip() if pos >= 0 else text


def _is_loader_error(args: Any) -> bool:
    """Whether a thread exception comes from a ``paddle.io.DataLoader`` reader thread."""
    if args.exc_value is None or not isinstance(args.exc_value, Exception):
        return False
    name = getattr(args.thread, "name", "") or ""
    return str(args.exc_value).startswith(_WORKER_PREFIX) or name.endswith(_READER_THREAD)


def _loader_thread_hook(args: Any) -> None:
    """``threading.excepthook``: record (silently) errors raised in a loader's reader thread;
    other threads' errors go to the previous hook."""
    if _is_loader_error(args):
        with _hook_lock:
            _loader_errors.append(args.exc_value)
        log.debug("data loading failed in the reader thread: %s", args.exc_value)
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


def _wait_for_loader_error(start: int, timeout: float, reader: Any = None) -> BaseException | None:
    """The first reader-thread error recorded after index ``start``.

    Waits up to ``timeout`` s, or until ``reader`` (the loader's reader thread, if known) has
    ended: Python runs the thread's excepthook before the thread ends, so nothing comes later.
    """
    deadline = time.monotonic() + timeout
    while True:
        with _hook_lock:
            if len(_loader_errors) > start:
                return _loader_errors[start]
        done = isinstance(reader, threading.Thread) and not reader.is_alive()
        if done or time.monotonic() >= deadline:
            with _hook_lock:
                return _loader_errors[start] if len(_loader_errors) > start else None
        time.sleep(0.01)


def surface_worker_errors(batches: Iterable[Any]) -> Iterator[Any]:
    """Iterate over a multi-worker ``paddle.io.DataLoader``, re-raising a worker's error here.

    Args:
        batches: a ``paddle.io.DataLoader`` with ``num_workers >= 1`` (or its iterator).
    Returns:
        an iterator over the same batches.
    Raises:
        UserError: a worker raised ``UserError`` (same message, e.g. naming the image file),
            or a worker process died without an error (killed by the system).
        Exception: a worker raised another error (its type, with the worker's traceback text
            as message), or the loader failed for another reason (as raised).
    """
    _install_thread_hook()
    with _hook_lock:
        start = len(_loader_errors)
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except Exception as exc:
            err = _wait_for_loader_error(start, _ERROR_WAIT_S, getattr(it, "_thread", None))
            if err is None:
                if "queue is killed" in str(exc).lower():
                    raise UserError(
                        "a data-loader worker process stopped without an error (killed by the system: out of "
                        "memory, or /dev/shm full); retry with fewer --num_workers, --no-shared_memory, or "
                        "--num_workers 0"
                    ) from None
                raise
            if isinstance(err, UserError):
                raise UserError(_worker_message(err)) from None
            raise err from None
        yield batch


# --------------------------------------------------------------------------- the loader
class Loader:
    """Batches of a dataset in the order of a batch sampler; see the module docstring.

    Attributes:
        dataset: the dataset (``dataset[i] -> (image [3, S, S], target [C])``).
        batch_sampler: yields lists of indices; ``len()`` is the batches per epoch.
        num_workers: 0 reads in the calling thread; >= 1 uses that many worker processes.
        use_shared_memory: workers pass batches through ``/dev/shm``.
    """

    def __init__(self, dataset: Any, batch_sampler: Any, num_workers: int = 0,
                 use_shared_memory: bool = True) -> None:
        if isinstance(num_workers, bool) or int(num_workers) < 0:
            raise UserError(f"--num_workers must be >= 0, got {num_workers!r}")
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.num_workers = int(num_workers)
        self.use_shared_memory = bool(use_shared_memory)
        self._workers: paddle.io.DataLoader | None = None
        if self.num_workers > 0:
            self._workers = paddle.io.DataLoader(
                dataset, batch_sampler=batch_sampler, num_workers=self.num_workers,
                use_shared_memory=self.use_shared_memory,
            )

    def __len__(self) -> int:
        """Batches per epoch (``len(batch_sampler)``)."""
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[paddle.Tensor]]:
        """Yield ``[images float32 [B, 3, S, S], targets float32 [B, C]]`` tensors.

        Raises:
            UserError: an image cannot be read (the message names the file and its entry).
        """
        if self._workers is None:
            return self._read_here()
        return surface_worker_errors(self._workers)

    def _read_here(self) -> Iterator[list[paddle.Tensor]]:
        """Read, collate and convert each batch in the calling thread."""
        for indices in self.batch_sampler:
            fields = collate([self.dataset[i] for i in indices])
            yield [paddle.to_tensor(f) for f in fields]

    def __repr__(self) -> str:
        return f"Loader({len(self.dataset)} samples, {len(self)} batches, num_workers={self.num_workers})"


def make_loader(dataset: Any, batch_size: int | None = None, shuffle: bool = False,
                num_workers: int = 0, seed: int | None = None, drop_last: bool = False,
                use_shared_memory: bool = True, *, batch_sampler: Any = None) -> Loader:
    """Build the loader of a dataset: training, evaluation and val.py all use this.

    Give either ``batch_size`` (a :class:`SeededBatchSampler` is made with ``shuffle``,
    ``seed`` and ``drop_last``) or ``batch_sampler`` (used as is, e.g. a
    :class:`datasets.samplers.ShardedBatchSampler`).

    A bad image stops the iteration with the dataset's ``UserError`` (naming the file and the
    entry), with 0, 1 or more workers, and never hangs: see the module docstring. Training
    and validation deliberately do not skip unreadable images.

    Args:
        dataset: a :class:`datasets.dataset.MultiLabelDataset` (its own ``seed`` controls
            augmentation), or any map-style dataset returning tuples of arrays.
        batch_size: images per batch (with ``batch_sampler``: must be None).
        shuffle: shuffle every epoch (``batch_size`` form only).
        num_workers: 0 reads in the calling thread (fastest on few cores, no background
            thread); N >= 1 uses N worker processes.
        seed: shuffling seed; None for a fresh order every epoch (``batch_size`` form only).
        drop_last: drop a last incomplete batch (``batch_size`` form only).
        use_shared_memory: workers pass batches through ``/dev/shm``; pass False where it is
            small (e.g. Docker's 64 MB default).
        batch_sampler: yields lists of indices per batch; ``len()`` = batches per epoch.
    Returns:
        a :class:`Loader`; ``len(loader)`` is the batches per epoch, ``loader.dataset`` and
        ``loader.batch_sampler`` are the given ones.
    Raises:
        ValueError: both or neither of ``batch_size`` and ``batch_sampler`` given.
        UserError: ``batch_size`` < 1 or ``num_workers`` < 0.
    """
    if (batch_size is None) == (batch_sampler is None):
        raise ValueError("make_loader: give exactly one of batch_size and batch_sampler")
    if batch_sampler is None:
        batch_sampler = SeededBatchSampler(len(dataset), int(batch_size), shuffle, seed, drop_last)
    return Loader(dataset, batch_sampler, num_workers, use_shared_memory)


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """Set the epoch on a loader's sampler and dataset (whichever support ``set_epoch``).

    Args:
        loader: a :class:`Loader` (or any object with ``batch_sampler`` / ``dataset``).
        epoch: epoch number (0-based).
    Returns:
        None.
    """
    for obj in (getattr(loader, "batch_sampler", None), getattr(loader, "dataset", None)):
        if obj is not None and callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(epoch)
