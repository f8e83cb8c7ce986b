"""datasets.loader: the one batch loader: same batches as Paddle's, and a bad image stops it
with the dataset's UserError (naming the file) at 0 and 2 workers, never a hang."""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import pytest
from PIL import Image

from datasets.dataset import MultiLabelDataset
from datasets.loader import Loader, collate, make_loader
from datasets.samplers import SeededBatchSampler, ShardedBatchSampler
from datasets.transforms import TestTransform, TrainTransform
from utils.errors import UserError

HANG_LIMIT_S = 60  # far above the ~1 s a failing iteration takes; reaching it means a hang


def _write_split(folder: Path, n: int = 10, size: int = 20) -> Path:
    """n small JPEGs and a split JSON with 0/1 targets for 3 classes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = []
    for k in range(n):
        path = folder / f"img{k}.jpg"
        Image.fromarray(rng.integers(0, 256, (size, size + k, 3), dtype=np.uint8)).save(path, quality=90)
        entries.append({"target": [k % 2, (k // 2) % 2, 1], "img_path": str(path)})
    split = folder / "split.json"
    split.write_text(json.dumps(entries))
    return split


@pytest.fixture()
def split(tmp_path: Path) -> Path:
    return _write_split(tmp_path / "data")


def _batches(loader: Any) -> list[list[np.ndarray]]:
    return [[t.numpy() for t in batch] for batch in loader]


def _run_with_deadline(fn: Callable[[], Any], seconds: float) -> BaseException | None:
    """Run ``fn`` in a daemon thread; fail the test if it is still running after ``seconds``.
    Returns the exception ``fn`` raised (None if it returned)."""
    outcome: list[BaseException | None] = [None]
    # A loader with workers installs Paddle's SIGCHLD handler the first time it starts, which
    # only the main thread may do; install it here so that the order of tests does not matter.
    from paddle.io.dataloader.dataloader_iter import _set_SIGCHLD_handler

    _set_SIGCHLD_handler()

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome[0] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the loader hung for {seconds} s instead of raising"
    return outcome[0]


# --------------------------------------------------------------------------- same batches
def test_batches_bit_identical_to_paddle_dataloader(split: Path) -> None:
    """Resume-equality tests compare weights: the loader must give exactly Paddle's batches."""
    ds = MultiLabelDataset(split, TrainTransform(16), seed=3)

    def sampler(epoch: int) -> ShardedBatchSampler:
        s = ShardedBatchSampler(SeededBatchSampler(len(ds), 4, shuffle=True, seed=9))
        s.set_epoch(epoch)
        return s

    for epoch in (0, 1):
        ds.set_epoch(epoch)
        reference = _batches(paddle.io.DataLoader(ds, batch_sampler=sampler(epoch), num_workers=0))
        for workers in (0, 2):
            loader = make_loader(ds, batch_sampler=sampler(epoch), num_workers=workers)
            assert len(loader) == len(reference) == 3
            got = _batches(loader)
            assert len(got) == len(reference)
            for ours, theirs in zip(got, reference):
                for a, b in zip(ours, theirs):
                    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
                    assert a.tobytes() == b.tobytes()
    test_ds = MultiLabelDataset(split, TestTransform(16))
    reference = _batches(paddle.io.DataLoader(test_ds, batch_size=4, shuffle=False))
    got = _batches(make_loader(test_ds, 4, shuffle=False))
    assert [g[0].shape[0] for g in got] == [4, 4, 2]
    assert all(a.tobytes() == b.tobytes() for ours, theirs in zip(got, reference) for a, b in zip(ours, theirs))


def test_zero_workers_read_in_the_calling_thread(split: Path) -> None:
    """No reader thread: an error there would be printed and the caller would wait forever."""
    ds = MultiLabelDataset(split, TestTransform(8))
    loader = make_loader(ds, 4)
    before = threading.active_count()
    it = iter(loader)
    first = next(it)
    assert threading.active_count() == before
    assert isinstance(first, list) and [tuple(t.shape) for t in first] == [(4, 3, 8, 8), (4, 3)]
    assert loader.dataset is ds and isinstance(loader.batch_sampler, SeededBatchSampler)


def test_make_loader_arguments(split: Path) -> None:
    ds = MultiLabelDataset(split, TestTransform(8))
    with pytest.raises(ValueError):
        make_loader(ds)
    with pytest.raises(ValueError):
        make_loader(ds, 2, batch_sampler=SeededBatchSampler(len(ds), 2, False))
    with pytest.raises(UserError, match="num_workers"):
        make_loader(ds, 2, num_workers=-1)
    assert len(make_loader(ds, 3, drop_last=True)) == 3
    assert isinstance(make_loader(ds, 3), Loader)
    x, y = collate([(np.zeros((2, 2), np.float32), np.ones(3, np.float32))] * 2)
    assert x.shape == (2, 2, 2) and y.shape == (2, 3) and y.dtype == np.float32


# --------------------------------------------------------------------------- bad images
def _make_bad(path: Path, kind: str) -> None:
    if kind == "truncated":
        Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(path, quality=95)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # a text file with an image name
        path.write_text("this is not an image\n")


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", ["truncated", "empty", "text"])
def test_bad_image_stops_with_one_error_naming_it(split: Path, kind: str, workers: int) -> None:
    entries = json.loads(split.read_text())
    bad = split.parent / f"bad_{kind}.jpg"
    _make_bad(bad, kind)
    entries[5]["img_path"] = str(bad)  # the second batch: the first one trains
    bad_split = split.parent / "bad.json"
    bad_split.write_text(json.dumps(entries))
    ds = MultiLabelDataset(bad_split, TrainTransform(16), seed=0)
    loader = make_loader(ds, 4, shuffle=False, num_workers=workers)
    seen: list[int] = []

    def consume() -> None:
        for images, _ in loader:
            seen.append(int(images.shape[0]))

    err = _run_with_deadline(consume, HANG_LIMIT_S)
    assert isinstance(err, UserError), repr(err)
    message = str(err)
    assert f"bad_{kind}.jpg" in message and "entry 5" in message and "\n" not in message
    assert "DataLoader worker" not in message and "Traceback" not in message
    # in the main process the batch before the bad one is delivered and none after; with
    # workers, the failing batch may be read before the good one is handed over
    assert seen == [4] if workers == 0 else seen in ([], [4])
    if kind == "empty":
        assert "empty (0 bytes)" in message


def test_other_worker_errors_keep_their_type(split: Path) -> None:
    class Boom(TestTransform):
        def __call__(self, img: Image.Image, rng: Any = None) -> np.ndarray:
            raise RuntimeError("transform bug")

    loader = make_loader(MultiLabelDataset(split, Boom(8)), 2, num_workers=1)
    err = _run_with_deadline(lambda: _batches(loader), HANG_LIMIT_S)
    assert isinstance(err, RuntimeError) and "transform bug" in str(err)


class _DiesInWorker(MultiLabelDataset):
    """Kills the worker process on one index (as the OOM killer would)."""

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if int(index) == 3 and paddle.io.get_worker_info() is not None:
            os._exit(1)
        return super().__getitem__(index)


def test_a_killed_worker_is_reported_not_hung(split: Path) -> None:
    loader = make_loader(_DiesInWorker(split, TestTransform(8)), 2, num_workers=1)
    err = _run_with_deadline(lambda: _batches(loader), HANG_LIMIT_S)
    assert isinstance(err, UserError), repr(err)
    assert "stopped without an error" in str(err) and "--num_workers" in str(err)
