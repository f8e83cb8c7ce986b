"""Prediction helpers shared by predict.py (dygraph) and infer.py (Paddle Inference).

Both read images with ``datasets.image_io.load_rgb``, preprocess them with
``datasets.transforms.preprocess`` and print the same lines, so their outputs agree.
"""
from __future__ import annotations

import os
import tempfile
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


def check_output_path(path: str | None, flag: str = "--output") -> None:
    """Refuse an ``--output`` file that could not be written, before any work is done.

    Args:
        path: the JSON file to write at the end (None: no output, nothing to check).
        flag: the option name used in messages.
    Raises:
        UserError: ``path`` is an existing folder (or otherwise not a regular file), its folder
            does not exist or is not a folder, or that folder is not writable (the file is
            written atomically: a temporary file in the same folder, then renamed).
    """
    if not path:
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name for the JSON, e.g. {target / 'predictions.json'}")
    if target.exists() and not target.is_file():
        raise UserError(f"{flag} {path} exists and is not a regular file; give another file name for the JSON")
    folder = target.resolve().parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{flag} {path}: the folder {folder} {what}; create it first or write elsewhere")
    try:  # a real probe (os.access says yes to root even on read-only file systems)
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write in the folder {folder} ({exc.strerror or exc}); "
                        "write elsewhere or fix its permissions") from None
    os.close(fd)
    os.unlink(probe)
