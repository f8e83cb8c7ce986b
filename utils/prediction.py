"""Prediction helpers shared by predict.py (dygraph) and infer.py (Paddle Inference).

Both read images with ``datasets.image_io.load_rgb``, preprocess them with
``datasets.transforms.preprocess`` and print the same lines, so their outputs agree.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.image_io import list_images, load_rgb
from datasets.transforms import preprocess
from utils.errors import UserError


def collect_inputs(img_dir: str | None, paths: Sequence[str] = ()) -> list[str]:
    """Images to predict: those in ``img_dir`` (sorted by name) plus explicit ``paths`` (sorted).

    Returns path strings as ``<img_dir>/<file>`` (the reference's form) or as given.
    UserError when nothing is given or the folder holds no image.
    """
    found: list[str] = []
    if img_dir:
        found += [os.path.join(img_dir, p.name) for p in list_images(img_dir)]
    found += sorted(paths)
    if not found:
        raise UserError("nothing to predict: give --img_dir DIR or image paths")
    return found


@dataclass
class Batch:
    """Images that loaded: their paths and the preprocessed array [B, 3, S, S]."""

    paths: list[str]
    images: np.ndarray


def iter_batches(
    paths: Sequence[str], img_size: int, mean: Sequence[float], std: Sequence[float], batch_size: int, failures: list[tuple[str, str]]
) -> Iterator[Batch]:
    """Load and preprocess ``paths`` in batches; unreadable files are appended to ``failures``
    as (path, reason) and skipped. Yields ``Batch`` objects with 1..batch_size images."""
    chunk: list[str] = []
    arrays: list[np.ndarray] = []
    for path in paths:
        try:
            arrays.append(preprocess(load_rgb(path), img_size, mean, std))
            chunk.append(path)
        except UserError as exc:
            failures.append((path, str(exc)))
        if len(chunk) == batch_size:
            yield Batch(chunk, np.stack(arrays))
            chunk, arrays = [], []
    if chunk:
        yield Batch(chunk, np.stack(arrays))


def selected_classes(scores: np.ndarray, threshold: float, topk: int | None) -> list[int]:
    """Class indices to report for one image: score >= threshold, best first, at most ``topk``."""
    order = np.argsort(-scores, kind="stable")
    chosen = [int(c) for c in order if scores[c] >= threshold]
    return chosen[:topk] if topk else sorted(chosen)


def prediction_line(path: str, scores: np.ndarray, names: Sequence[str], threshold: float, topk: int | None) -> str:
    """The reference's output line: ``<path> prediction: dog,person,`` (trailing comma)."""
    chosen = selected_classes(scores, threshold, topk)
    return f"{path} prediction: " + "".join(f"{names[c]}," for c in chosen)


def prediction_record(path: str, scores: np.ndarray, names: Sequence[str], threshold: float, topk: int | None) -> dict:
    """Machine-readable prediction: ``{"img_path", "scores", "labels": [{"class", "score"}]}``."""
    chosen = selected_classes(scores, threshold, topk)
    return {
        "img_path": path,
        "scores": [float(s) for s in scores],
        "labels": [{"class": names[c], "score": float(scores[c])} for c in chosen],
    }


def report_failures(failures: Sequence[tuple[str, str]]) -> None:
    """Print one line per unreadable file on stderr."""
    import sys

    for path, reason in failures:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} file(s) could not be read", file=sys.stderr)


def check_output_path(path: str | None) -> None:
    """Refuse an --output in a folder that does not exist (before any work is done)."""
    if path and not Path(path).resolve().parent.is_dir():
        raise UserError(f"--output folder does not exist: {Path(path).parent}")
